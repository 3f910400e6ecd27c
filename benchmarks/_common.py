"""Helpers shared by the benchmark scripts (not part of the product)."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


def cleaning_code_hash() -> str:
    """A short hash of the code and rules that decide clean text: the product's cleaning
    fingerprint (settings, word lists, package versions and the cleaning code itself), so
    caches of clean text go stale with any of them, even between releases."""
    from themes.settings import load_settings
    from themes.steps import cleaning_fingerprint

    settings = load_settings()
    return cleaning_fingerprint(settings.clean, settings.deidentify)[:12]


MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
"""CPU flags that decide how fast the embedding runs (`embed.precision` `auto` picks
bfloat16 only with avx512_bf16 or amx_tile), so results from different hosts compare."""


def cpu() -> dict[str, Any]:
    """The CPU's model name and which of MATRIX_FLAGS it has (Linux; empty elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in info.splitlines():  # the first processor's block is enough
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name", "")
    return {"cpu_model": model, "cpu_flags": [f for f in MATRIX_FLAGS if f in flags]}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        **cpu(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


class PeakMemory:
    """Samples the memory of this process and its children while the block runs.

    `peak_gb` is the peak of the summed RSS, which counts copy-on-write pages shared by
    forked workers once per process and so overstates the tree's use; `peak_pss_gb` is
    the peak of the summed PSS (proportional set size: each shared page divided among
    the processes that map it), the physical memory the tree really holds.
    `peak_anon_gb` is the peak of the summed anonymous memory (RSS less file-backed and
    shared pages): memory-mapped files that are only read (a saved index) count in RSS
    but are page cache the kernel can drop and re-read.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.peak_pss = 0
        self.peak_anon = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        tick = 0
        while not self._stop.is_set():
            # PSS walks every page table (costly for a big process): every 5th sample only
            full = tick % 5 == 0
            tick += 1
            rss = pss = anon = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info() if full else proc.memory_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                anon += info.rss - getattr(info, "shared", 0)
            self.peak = max(self.peak, rss)
            self.peak_anon = max(self.peak_anon, anon)
            if full:
                self.peak_pss = max(self.peak_pss, pss)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return round(self.peak / 2**30, 2)

    @property
    def peak_anon_gb(self) -> float:
        return round(self.peak_anon / 2**30, 2)

    @property
    def peak_pss_gb(self) -> float:
        return round(self.peak_pss / 2**30, 2)


def long_query_share(index: Any, queries: list[str], settings: Any) -> float:
    """Share of `queries` whose BM25 terms the product weights (`is_long_query`), to 3
    places. `settings` is the search section."""
    from themes.search import is_long_query

    long = [is_long_query(len(index.query_terms(q)[0]), settings) for q in queries]
    return round(float(sum(long) / len(long)), 3) if long else 0.0


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
