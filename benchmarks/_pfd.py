"""The coroners' PFD reports, cleaned and de-identified once and cached (benchmarks only).

The public data lives at ../shared/data/ and is never committed; the cache lives under
var/bench_cache/ (git-ignored). Both the linking (issue 4) and search (issue 5)
benchmarks use `load_pfd_deidentified()` so the slow de-identification runs once.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd

from _common import ROOT, SHARED_DATA, cleaning_code_hash

PFD_CSV = SHARED_DATA / "pfd_reports_2013_2023.csv"
CACHE_DIR = ROOT / "var" / "bench_cache"
TEXT_COLUMNS = ("circumstances", "concerns", "investigation")


def require_pfd() -> Path:
    """The PFD file, or exit with a message saying it is absent (benchmarks skip)."""
    if not PFD_CSV.is_file():
        print(f"SKIP: {PFD_CSV} is absent (see ../shared/data/README.md)")
        sys.exit(0)
    return PFD_CSV


def load_pfd_raw() -> pd.DataFrame:
    """The PFD reports as published (names included: never store or show these)."""
    df = pd.read_csv(require_pfd(), dtype=str).fillna("")
    df = df[df["id"].str.strip() != ""].drop_duplicates("id").reset_index(drop=True)
    return df


def load_pfd_deidentified(progress: bool = True) -> pd.DataFrame:
    """PFD reports with `circumstances`, `concerns` and `investigation` cleaned and
    de-identified by the product's own pipeline (`steps.clean_texts_for_evaluation`).

    Other columns (id, url, date, coroner, area, receiver, judiciary_category) are kept
    as published; `coroner` and `receiver` name people and must not be indexed.
    Cached in var/bench_cache/ keyed by the source file's hash, the de-id settings and
    the cleaning code and word lists.
    """
    from themes.settings import load_settings
    from themes.steps import clean_texts_for_evaluation

    settings = load_settings()
    src = require_pfd()
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    key += "-" + settings.section_hash("clean", "deidentify") + "-" + cleaning_code_hash()
    cache = CACHE_DIR / f"pfd_deid_{key}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache)
    df = load_pfd_raw()
    for col in TEXT_COLUMNS:
        texts = df[col].tolist()
        idx = [i for i, t in enumerate(texts) if t.strip()]

        def show(stage: str, done: int, total: int, col: str = col) -> None:
            if progress:
                print(f"\rde-identifying PFD {col}: {done}/{total}", end="", file=sys.stderr)

        cleaned = clean_texts_for_evaluation(settings, [texts[i] for i in idx], progress=show)
        if progress:
            print(file=sys.stderr)
        out = [""] * len(texts)
        for i, t in zip(idx, cleaned, strict=True):
            out[i] = t
        df[col] = out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    df.to_parquet(cache, index=False)
    return df


if __name__ == "__main__":
    d = load_pfd_deidentified()
    print(d.shape, CACHE_DIR)
