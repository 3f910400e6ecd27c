"""Ordered work over forked worker processes, for the CPU-bound spaCy steps.

Both cores of a small server are used by forking workers that inherit the loaded models
(spaCy, Presidio) instead of loading them again, and by sending back plain results (lists
of strings or small records) rather than spaCy Docs, whose transfer cost as much as the
tagging itself.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_TASK: dict[str, Callable[[Any], Any]] = {}
"""The function the forked workers run (inherited at fork; closures cannot be pickled)."""


def can_fork() -> bool:
    """Whether this platform starts worker processes by forking."""
    return "fork" in multiprocessing.get_all_start_methods()


def fork_imap(fn: Callable[[T], R], items: Sequence[T], *, n_process: int) -> Iterator[R]:
    """`fn` over `items` in up to `n_process` forked workers, yielding results in order.

    Serial (in this process) with one process, one item, or no fork. The workers finish
    and exit on their own when the items run out; a caller that stops early (closes the
    generator) or an error ends them at once.
    """
    n_process = min(n_process, len(items))
    if n_process <= 1 or not can_fork():
        yield from map(fn, items)
        return
    _TASK["fn"] = fn
    try:
        pool = multiprocessing.get_context("fork").Pool(n_process, initializer=_quiet_worker)
        try:
            yield from pool.imap(_run, items)
            pool.close()  # let the workers finish and exit on their own
        except BaseException:  # includes the caller closing the generator early
            pool.terminate()
            raise
        finally:
            pool.join()
    finally:
        _TASK.clear()


def _run(item: Any) -> Any:
    """Worker-process entry point: the inherited task on one item."""
    return _TASK["fn"](item)


def _quiet_worker() -> None:
    """Worker-process start: take back the default SIGTERM action.

    A forked worker inherits its parent's signal handlers; under Prefect that is a
    handler that raises, so a worker stopped by `Pool.terminate` printed a traceback into
    the run's log. With the default action it just ends.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
