"""One run at a time per data directory: an OS file lock that dies with its process."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

from themes.errors import RunLockedError
from themes.store import utcnow

_HELD: set[Path] = set()
"""Lock files this process holds (POSIX locks are per process, so check here first)."""


class RunLock:
    """Exclusive lock on `<data_dir>/run.lock`; released automatically if the process dies.

    A POSIX record lock (`lockf`) is used, not `flock`: it is not inherited by forked
    workers (spaCy's `nlp.pipe` processes), so an orphaned worker of a killed run never
    keeps the lock. A second run waits up to `wait_s` seconds, then raises RunLockedError
    naming the holder.
    """

    def __init__(self, data_dir: Path, *, wait_s: float = 0.0) -> None:
        self.path = Path(data_dir) / "run.lock"
        self.wait_s = wait_s
        self._fh = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        deadline = time.monotonic() + self.wait_s
        fh = None
        while True:
            if key not in _HELD:
                fh = fh or self.path.open("a+")
                try:
                    fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                holder = self.path.read_text().strip() or "unknown"
                if fh is not None:
                    fh.close()
                raise RunLockedError(
                    f"Another run is in progress on {self.path.parent} (lock {self.path}, "
                    f"held by {holder}). Wait for it to finish, or set flow.lock_wait_s "
                    "to wait longer."
                )
            time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": utcnow().isoformat()}))
        fh.flush()
        self._fh = fh
        _HELD.add(key)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
            fcntl.lockf(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            _HELD.discard(self.path.resolve())
