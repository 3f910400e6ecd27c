"""What the near-duplicate check costs at scale: `update_duplicates` over 1,000,000 records.

A nightly run checks only new and changed records for near-duplicates, but the first run
over an existing collection (or a rebuilt index) checks every record. This benchmark
times that whole check on the synthetic 1,000,000-record index of
`bench_search_speed.py` (built by it, or here when absent: texts of demo-generator
sentences, vectors from their real embeddings, random filter fields over six years).

In the same run, on one random sample of records:

- the product's check as configured (blocking on the event-date window and the
  configured match fields, then cosine + IDF-weighted word overlap + the sex check);
- the baseline: the same blocking scored by cosine alone (no word overlap, no sex check),
  which shows what the word overlap costs;
- both again with blocking on site and location only: the synthetic filter fields are
  random and independent, so the configured blocking leaves almost no candidates; this
  denser case is nearer a real trust, where a ward's specialty and severity cluster.

Then the whole configured check, through `update_duplicates` into a fresh SQLite store
(every record counted as changed, as on a first run), with its peak memory.

    python benchmarks/bench_duplicates_scale.py [--sample 20000] [--skip-full]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from _common import PeakMemory, md_table, write_result  # noqa: E402

DENSE_FIELDS = ["site", "location"]


def load_index() -> tuple[Any, dict[str, Any]]:
    """The search speed benchmark's saved 1,000,000-record index (built if absent)."""
    import bench_search_speed as speed
    from themes.search_index import SearchIndex

    built = speed.ensure_built()
    t0 = time.perf_counter()
    index = SearchIndex.load(speed.WORK / "index")
    print(f"loaded {index.size} records in {time.perf_counter() - t0:.0f} s")
    return index, built


def check_kwargs(settings: Any, fields: list[str] | None, lexical: bool) -> dict[str, Any]:
    """`find_pairs` arguments: as configured, or cosine alone (`lexical` False)."""
    from themes.duplicates import check_args

    s = settings.search
    configured = check_args(s)
    blocking = {
        "max_days": configured["max_days"],
        "match_fields": configured["match_fields"] if fields is None else fields,
    }
    if not lexical:  # cosine alone: its threshold is not calibrated, only its cost is compared
        return {**blocking, "threshold": 0.9}
    return {**configured, **blocking, "threshold": s.duplicate_threshold,
            "cross_kind_threshold": s.duplicate_cross_kind_threshold}  # fmt: skip


def timed_sample(index: Any, positions: np.ndarray, kw: dict[str, Any]) -> dict[str, Any]:
    """Time `find_pairs` over the sample; count candidates per record after blocking."""
    from themes.duplicates import candidates, find_pairs

    find_pairs(index, positions[:200], **kw)  # warm the cached per-index arrays
    t0 = time.perf_counter()
    pairs = find_pairs(index, positions, **kw)
    secs = time.perf_counter() - t0
    counts = np.array(
        [
            len(candidates(index, int(p), max_days=kw["max_days"],
                           match_fields=kw["match_fields"])[0])
            for p in positions[:5000]
        ]
    )  # fmt: skip
    per_record_ms = secs / len(positions) * 1000
    return {
        "records": len(positions),
        "seconds": round(secs, 1),
        "per_record_ms": round(per_record_ms, 3),
        "projected_full_min": round(per_record_ms * index.size / 60_000, 1),
        "candidates_mean": round(float(counts.mean()), 1),
        "candidates_p95": int(np.percentile(counts, 95)),
        "candidates_max": int(counts.max()),
        "pairs_found": len(pairs),
    }


def full_check(index: Any, settings: Any) -> dict[str, Any]:
    """The first run's check: every record, through the product's `update_duplicates`."""
    from themes.duplicates import update_duplicates
    from themes.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'dups.db'}")
        runs = []
        for _ in range(2):  # the first run; then again with its pairs stored (a rebuild)
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                out = update_duplicates(
                    store, index, settings.search, changed_ids=index.ids_.tolist()
                )
                secs = time.perf_counter() - t0
            runs.append({"seconds": round(secs, 1), "minutes": round(secs / 60, 1),
                         "peak_gb": mem.peak_gb, **out})  # fmt: skip
            print(runs[-1], flush=True)
        store.close()
    return {**runs[0], "again": runs[1]}


def markdown(res: dict[str, Any]) -> str:
    rows = [
        [r["blocking"], r["scoring"], r["candidates_mean"], r["candidates_p95"],
         r["per_record_ms"], r["projected_full_min"], r["pairs_found"]]
        for r in res["sample"]
    ]  # fmt: skip
    lines = [
        "# Near-duplicate check at scale (1,000,000 synthetic records)",
        "",
        f"Sample of {res['sample'][0]['records']:,} random records of the index, the same "
        "sample for every row. Candidates: records left after blocking (date window and "
        "match fields), per checked record, over the first 5,000 of the sample.",
        "",
        md_table(
            [
                "blocking",
                "scoring",
                "candidates mean",
                "candidates p95",
                "ms per record",
                "projected whole check (min)",
                "pairs found",
            ],
            rows,
        ),  # fmt: skip
    ]
    if "full" in res:
        f = res["full"]
        lines += [
            "",
            f"**Whole check as configured** (`update_duplicates`, every one of the "
            f"{f['checked']:,} records changed, as on a first run, into a fresh SQLite "
            f"store): {f['minutes']} min ({f['seconds']} s), {f['pairs_found']:,} pairs "
            f"stored, peak memory {f['peak_gb']} GB (index loaded). Run again with those "
            f"pairs stored (every record changed, as after a rebuilt index): "
            f"{f['again']['minutes']} min ({f['again']['seconds']} s), "
            f"{f['again']['pairs_total']:,} pairs in all.",
        ]
    lines += [
        "",
        f"Index loaded in {res['load_s']} s. Configured: threshold "
        f"{res['configured']['threshold']} (two kinds: "
        f"{res['configured'].get('cross_kind_threshold', '—')}), "
        f"window {res['configured']['max_days']} day(s), "
        f"match fields {', '.join(res['configured']['match_fields'])}. Cosine alone is "
        "timed at threshold 0.9 (its cost, not its quality, is compared).",
        "",
        "Command: `python benchmarks/bench_duplicates_scale.py`",
    ]
    return "\n".join(lines)


def main() -> None:
    from themes.settings import load_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=20_000, help="records timed per row")
    ap.add_argument("--skip-full", action="store_true", help="no whole check")
    args = ap.parse_args()
    settings = load_settings()
    t0 = time.perf_counter()
    index, built = load_index()
    load_s = round(time.perf_counter() - t0, 1)
    rng = np.random.default_rng(3)
    positions = np.sort(rng.choice(index.size, min(args.sample, index.size), replace=False))
    sample = []
    for blocking, fields in (("configured", None), ("site + location", DENSE_FIELDS)):
        for scoring, lexical in (("configured", True), ("cosine alone (baseline)", False)):
            row = timed_sample(index, positions, check_kwargs(settings, fields, lexical))
            sample.append({"blocking": blocking, "scoring": scoring, **row})
            print(sample[-1], flush=True)
    s = settings.search
    res: dict[str, Any] = {
        "index": {"records": index.size, "built": built},
        "load_s": load_s,
        "configured": {
            "threshold": s.duplicate_threshold,
            "cross_kind_threshold": s.duplicate_cross_kind_threshold,
            "max_days": s.duplicate_max_days,
            "match_fields": list(s.duplicate_match_fields),
        },  # fmt: skip
        "sample": sample,
    }
    if not args.skip_full:
        res["full"] = full_check(index, settings)
        print(res["full"], flush=True)
    write_result("duplicates_scale", res, markdown(res))


if __name__ == "__main__":
    main()
