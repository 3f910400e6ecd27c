"""What a nightly update of a large search index costs: 500 new records on 1,000,000.

The nightly flow brings the saved search index up to date with the store: it loads the
index for writing, checks which kept records' filter fields changed (`meta_changed`),
appends the new and changed records (`SearchIndex.update`: their tokens and vectors are
added, the ANN graph gains only them, but BM25's matrix and the word-pair table are
rebuilt over every record), and saves it. This benchmark times those steps, with peak
memory, on the synthetic 1,000,000-record index of `bench_search_speed.py` (built there,
or here when absent), for N new records (default 500: the nightly target's size) drawn
the way that index's records were.

Baseline, in the same run: fitting a new index over the same 1,000,000 + N records from
scratch (`--skip-rebuild` to leave it out), which is what a nightly run would pay if it
rebuilt instead of updating.

    python benchmarks/bench_index_update.py [--new 500] [--skip-rebuild]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import PeakMemory, md_table, write_result  # noqa: E402


def existing_meta(index: Any) -> pd.DataFrame:
    """The indexed records' filter fields and event dates, as `set_meta` takes them."""
    from themes.search_index import EPOCH, META_COLUMNS

    meta = pd.DataFrame({c: index.meta_[c].astype(str).to_numpy() for c in META_COLUMNS})
    meta.insert(0, "record_id", index.ids_)
    meta["event_date"] = pd.to_datetime(EPOCH + index.days_.astype("timedelta64[D]"))
    meta["theme_id"] = index.themes_
    return meta


def new_records(
    n: int, meta: pd.DataFrame
) -> tuple[list[str], list[str], np.ndarray, pd.DataFrame]:
    """N new records drawn as `bench_search_speed.build` draws its records (seeded apart)."""
    import bench_search_speed as speed

    pool = speed.sentence_pool()
    pool_vecs = np.load(speed.WORK / f"pool_{len(pool)}.npy")
    ids = [f"N{i:07d}" for i in range(n)]
    texts, vectors = speed.draw_records(np.random.default_rng(99), n, pool, pool_vecs)
    rows = meta.sample(n, random_state=7).reset_index(drop=True).copy()
    rows["record_id"] = ids
    return ids, texts, vectors, rows


def timed_update(n_new: int) -> dict[str, Any]:
    """Load writable, check changed fields, update, save: each step timed, peak memory."""
    import bench_search_speed as speed
    from themes.search_index import SearchIndex

    out: dict[str, Any] = {}
    with PeakMemory() as mem, tempfile.TemporaryDirectory(dir=speed.WORK) as tmp:
        t0 = time.perf_counter()
        index = SearchIndex.load(speed.WORK / "index")
        out["load_s"] = round(time.perf_counter() - t0, 1)
        meta = existing_meta(index)
        ids, texts, vectors, rows = new_records(n_new, meta)
        keep = index.ids_.tolist()
        full = pd.concat([meta, rows], ignore_index=True)
        t0 = time.perf_counter()
        changed = index.meta_changed(full, keep)
        out["meta_changed_s"] = round(time.perf_counter() - t0, 1)
        out["meta_changed"] = len(changed)
        hashes = [f"h{i}" for i in range(n_new)]
        t0 = time.perf_counter()
        index.update(keep, ids, hashes, texts, vectors, full)
        out["update_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        index.save(Path(tmp) / "index")
        out["save_s"] = round(time.perf_counter() - t0, 1)
        out["records_after"] = index.size
    out["total_s"] = round(out["load_s"] + out["meta_changed_s"] + out["update_s"]
                           + out["save_s"], 1)  # fmt: skip
    out["peak_gb"] = mem.peak_gb
    return out


def timed_rebuild(n_new: int) -> dict[str, Any]:
    """The baseline: a new index fitted over the same 1,000,000 + N records."""
    import bench_search_speed as speed
    from themes.search import new_index
    from themes.search_index import SearchIndex
    from themes.settings import load_settings

    settings = load_settings()
    index = SearchIndex.load(speed.WORK / "index", read_only=True)
    meta = existing_meta(index)
    ids_old = index.ids_.tolist()
    vecs_old = np.asarray(index.vectors_)
    model_id = settings.embed.model_id
    del index
    with sqlite3.connect(speed.WORK / "texts.db") as conn:
        texts_by_id = dict(conn.execute("SELECT record_id, clean_text FROM texts"))
    ids, texts, vectors, rows = new_records(n_new, meta)
    all_ids = ids_old + ids
    all_texts = [texts_by_id[i] for i in ids_old] + texts
    all_vecs = np.concatenate([vecs_old.astype(np.float16), vectors.astype(np.float16)])
    full = pd.concat([meta, rows], ignore_index=True)
    del texts_by_id, vecs_old
    params = settings.search.model_copy(update={"ann_min_records": 1})
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        new_index(params).fit(all_ids, all_ids, all_texts, all_vecs, full, model_id=model_id)
        secs = time.perf_counter() - t0
    return {"fit_s": round(secs, 1), "peak_gb": mem.peak_gb, "records": len(all_ids)}


def markdown(res: dict[str, Any]) -> str:
    u = res["update"]
    rows = [
        ["load (writable)", u["load_s"]],
        [f"meta_changed ({u['meta_changed']} changed)", u["meta_changed_s"]],
        ["update (tokens, vectors, BM25 and word pairs rebuilt, ANN gains the new)",
         u["update_s"]],
        ["save", u["save_s"]],
        ["**total**", f"**{u['total_s']}**"],
    ]  # fmt: skip
    lines = [
        f"# Nightly update of a large search index ({res['new']} new records on "
        f"{res['records_before']:,})",
        "",
        md_table(["step", "seconds"], rows),
        "",
        f"Peak memory of the update: {u['peak_gb']} GB (RSS).",
    ]
    if "rebuild" in res:
        r = res["rebuild"]
        lines += [
            "",
            f"Baseline, same run: a new index fitted over the same {r['records']:,} records "
            f"from scratch: {r['fit_s']} s (fit only; peak {r['peak_gb']} GB).",
        ]
    lines += ["", "Command: `python benchmarks/bench_index_update.py`"]
    return "\n".join(lines)


def main() -> None:
    import bench_search_speed as speed

    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=500, help="new records in the update")
    ap.add_argument("--skip-rebuild", action="store_true", help="no from-scratch baseline")
    args = ap.parse_args()
    built = speed.ensure_built()
    res: dict[str, Any] = {"new": args.new, "records_before": built["records"]}
    res["update"] = timed_update(args.new)
    print(res["update"], flush=True)
    if not args.skip_rebuild:
        res["rebuild"] = timed_rebuild(args.new)
        print(res["rebuild"], flush=True)
    write_result("index_update", res, markdown(res))


if __name__ == "__main__":
    main()
