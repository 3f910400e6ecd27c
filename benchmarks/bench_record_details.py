"""What a page of search results costs in the store: `record_details` at scale.

Every search, "more like this" and duplicate listing ends by reading its page of records
from the store (`themes.search.record_details`): the de-identified text and filter fields,
the current theme's label, and the factors step's harm level. The search speed benchmark
(`bench_search_speed.py`) reads bare texts straight from SQLite instead, so this one
measures the product's own read on a product store of the same size.

Synthetic store: N records written straight into the product's tables (raw records, clean
texts, one active theme model with 40 themes and an assignment per record, and a harm
level per record), in the configured embedded database (SQLite, WAL). Then random pages of
10 and of 50 ids are read, timed three ways in the same run:

- `record_details` as the product calls it (one call per page);
- its parts: finding the active model, checking that the factors table exists, the join;
- the baseline: selecting the same ids' texts alone from `clean_texts` (what
  `bench_search_speed.py` times).

    python benchmarks/bench_record_details.py [--records 1000000] [--pages 300]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from _common import md_table, write_result  # noqa: E402

SENTENCES = [
    "The patient was found on the floor beside the bed at night.",
    "Insulin was not given before the evening meal and the blood glucose rose.",
    "A grade 3 pressure ulcer was found on the sacrum at handover.",
    "The family were not told that the patient had deteriorated overnight.",
    "Discharge was delayed because the medication was not ready.",
    "Only one registered nurse was on duty for the bay.",
    "The infusion pump alarmed and was found to be faulty.",
    "Observations were not recorded for six hours.",
]


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 3)


def build(store: Any, n: int, rng: random.Random, chunk: int = 50_000) -> float:
    """Fill the product's tables with `n` synthetic records; returns seconds taken."""
    from themes.factors import case_impacts
    from themes.store import assignments, clean_texts, raw_records, theme_models, themes_table

    t0 = time.perf_counter()
    now = datetime(2026, 1, 1)
    model_id = "bench-model"
    case_impacts.create(store.engine, checkfirst=True)  # the factors step's table
    with store.begin() as conn:
        model = {"model_id": model_id, "path": "-", "fitted_at": now, "n_records": n,
                 "config_hash": "-", "active": True}  # fmt: skip
        conn.execute(theme_models.insert(), [model])
        conn.execute(themes_table.insert(), [
            {"model_id": model_id, "theme_id": t, "label": f"theme {t}", "keywords": "[]",
             "size": n // 40, "representative_ids": "[]"} for t in range(40)])  # fmt: skip
    start = date(2022, 1, 1)
    for lo in range(0, n, chunk):
        raw, clean, assigned, harm = [], [], [], []
        for i in range(lo, min(n, lo + chunk)):
            rid = f"R{i:08d}"
            text = " ".join(rng.choices(SENTENCES, k=rng.randint(3, 8)))
            h = hashlib.sha256(text.encode()).hexdigest()
            raw.append({"record_id": rid, "kind": rng.choice(["incident", "complaint", "claim"]),
                        "source": "bench", "file": "bench.csv", "row_number": i + 2,
                        "event_date": start + timedelta(days=rng.randrange(1460)),
                        "site": f"Site {rng.randrange(3)}", "location": f"Ward {rng.randrange(40)}",
                        "specialty": f"Specialty {rng.randrange(12)}", "severity": "Low harm",
                        "status": "Open", "narrative": text, "raw_hash": h, "first_seen": now,
                        "updated_at": now})  # fmt: skip
            clean.append({"record_id": rid, "raw_hash": h, "clean_text": text, "clean_hash": h,
                          "entity_counts": "{}", "cleaned_at": now})  # fmt: skip
            assigned.append({"record_id": rid, "model_id": model_id, "theme_id": rng.randrange(40),
                             "score": 0.5, "method": "bench", "clean_hash": h,
                             "assigned_at": now})  # fmt: skip
            harm.append({"record_id": rid, "clean_hash": h, "config_hash": "-",
                         "harm_level": "low", "harm_source": "field", "harm_confidence": 1.0,
                         "harm_evidence": "", "outcomes": "[]", "n_factors": 0,
                         "tagged_at": now})  # fmt: skip
        with store.begin() as conn:
            for table, rows in ((raw_records, raw), (clean_texts, clean),
                                (assignments, assigned), (case_impacts, harm)):  # fmt: skip
                conn.execute(table.insert(), rows)
        print(f"  {min(n, lo + chunk):,} / {n:,} records written", flush=True)
    return time.perf_counter() - t0


def time_pages(store: Any, n: int, pages: int, size: int, rng: random.Random) -> dict[str, Any]:
    from themes.factors import case_impacts
    from themes.search import record_details
    from themes.store import clean_texts

    batches = [[f"R{rng.randrange(n):08d}" for _ in range(size)] for _ in range(pages)]
    record_details(store, batches[0])  # warm the connection pool and the page cache once
    names = ("record_details", "active model", "factors table check", "texts alone (baseline)")
    timings: dict[str, list[float]] = {name: [] for name in names}
    for ids in batches:
        t0 = time.perf_counter()
        got = record_details(store, ids)
        timings["record_details"].append(time.perf_counter() - t0)
        assert len(got) == len(set(ids)) and all(d["harm"] == "low" for d in got.values())
        t0 = time.perf_counter()
        store.active_model()
        timings["active model"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sa.inspect(store.engine).has_table(case_impacts.name)
        timings["factors table check"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with store.connect() as conn:
            conn.execute(
                sa.select(clean_texts.c.record_id, clean_texts.c.clean_text).where(
                    clean_texts.c.record_id.in_(ids)
                )
            ).all()
        timings["texts alone (baseline)"].append(time.perf_counter() - t0)
    return {
        name: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)}
        for name, v in timings.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=300, help="random pages timed per page size")
    args = ap.parse_args()
    if args.records < 1 or args.pages < 1:
        ap.error("--records and --pages must be at least 1")

    from themes.store import Store

    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        store = Store(f"sqlite:///{db}")
        print(f"writing {args.records:,} synthetic records to {db}")
        build_s = build(store, args.records, rng)
        size_gb = round(sum(p.stat().st_size for p in Path(tmp).glob("bench.db*")) / 1e9, 2)
        by_size = {size: time_pages(store, args.records, args.pages, size, rng)
                   for size in (10, 50)}  # fmt: skip
        store.close()
    res = {"records": args.records, "pages": args.pages, "build_s": round(build_s, 1),
           "db_gb": size_gb, "page_sizes": by_size}  # fmt: skip
    rows = [[size, name, t["p50_ms"], t["p95_ms"]]
            for size, parts in by_size.items() for name, t in parts.items()]  # fmt: skip
    md = "\n".join([
        "# Reading a page of results from the store (record_details)",
        "",
        f"{args.records:,} synthetic records in the embedded store (SQLite, WAL; "
        f"{size_gb} GB, written in {round(build_s)} s), {args.pages} random pages per page "
        "size. `record_details` is the product's read of a page (text, filter fields, "
        "theme label, harm level); below it, its parts timed on their own, and the "
        "baseline: the same ids' texts alone.",
        "",
        md_table(["page size", "read", "p50 ms", "p95 ms"], rows),
        "",
        f"Command: `python benchmarks/bench_record_details.py --records {args.records} "
        f"--pages {args.pages}`",
    ])  # fmt: skip
    write_result("record_details", res, md)


if __name__ == "__main__":
    main()
