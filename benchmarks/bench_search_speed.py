"""Search speed at scale: 1,000,000 indexed records, ANN (usearch) vs exact brute force.

Synthetic collection: texts are 3-8 sentences drawn from a pool of demo-generator
sentences; each vector is the mean of its sentences' real all-MiniLM-L6-v2 embeddings plus
a little noise (so neighbourhoods look like real text, not random points). Filter fields
are random. The index is built once (timed, peak memory measured) and saved; then a
fresh process per mode loads it and times filtered text queries end to end: embedding the
query (model warm), BM25 + dense retrieval under the filter, fusion, reading the top-k
texts from SQLite and making highlighted snippets. ANN recall@10 is measured against exact
search on the same queries, with and without filters.

    python benchmarks/bench_search_speed.py [--records 1000000] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import ROOT, PeakMemory, long_query_share, md_table, write_result  # noqa: E402

WORK = ROOT / "var" / "bench_cache" / "search_speed"
KINDS = ["incident", "complaint", "claim"]
SITES = ["Royal Infirmary", "General Hospital", "Community Services"]
LOCATIONS = [f"Ward {i}" for i in range(1, 31)] + ["Emergency Department", "Theatres"]
SPECIALTIES = ["Surgery", "Medicine", "Maternity", "Mental Health", "Paediatrics", "Elderly"]
SEVERITIES = ["No harm", "Low", "Moderate", "Severe", "Death"]
HARMS = ["none", "low", "moderate", "severe", "fatal"]
FILTERS = [
    {"kind": ["incident"]},
    {"site": ["General Hospital"], "since": "2023-01-01"},
    {"severity": ["Moderate", "Severe"], "kind": ["incident", "complaint"]},
    {"specialty": ["Maternity"]},
    {"location": ["Ward 7"], "since": "2022-01-01"},
]


def sentence_pool(n_max: int = 3000) -> list[str]:
    from themes.demo import generate_demo

    with tempfile.TemporaryDirectory() as tmp:
        m = generate_demo(Path(tmp), seed=5, n_records=3000, messy=False)
        texts = []
        for path in (m.files["incident"], m.files["claim"]):
            df = pd.read_csv(path, dtype=str, encoding="cp1252", encoding_errors="replace").fillna(
                ""
            )
            for col in ("Description", "Action taken", "Outcome", "Allegation summary"):
                if col in df:
                    texts += df[col].tolist()
    sentences = {
        s.strip()
        for t in texts
        for s in re.split(r"(?<=[.!?])\s+", t)
        if 20 < len(s.strip()) < 300 and not re.match(r"^\d\d:\d\d", s.strip())
    }
    pool = sorted(sentences)
    rng = np.random.default_rng(0)
    return [pool[i] for i in rng.permutation(len(pool))[:n_max]]


LONG_QUERY_SENTENCES = 6
"""Sentences in a long query: a pasted narrative, past `search.long_query_terms`."""


def write_long_queries(pool: list[str], n: int = 2000) -> None:
    """Long queries (a pasted incident narrative: LONG_QUERY_SENTENCES pool sentences),
    whose BM25 terms the product weights; seeded apart from the index's own draws."""
    rng = np.random.default_rng(7)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "queries_long.json").write_text(
        json.dumps([" ".join(rng.choice(pool, LONG_QUERY_SENTENCES)) for _ in range(n)])
    )


def draw_records(
    rng: np.random.Generator, n: int, pool: list[str], pool_vecs: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """N synthetic records: texts of 3-8 pool sentences, and float16 vectors that are the
    mean of those sentences' embeddings plus a little noise, normalised (drawn 100,000 at
    a time to bound memory)."""
    lengths = rng.integers(3, 9, n)
    picks = rng.integers(0, len(pool), (n, 8))
    texts = [" ".join(pool[j] for j in picks[i, : lengths[i]]) for i in range(n)]
    vectors = np.zeros((n, pool_vecs.shape[1]), dtype=np.float16)
    for start in range(0, n, 100_000):
        end = min(n, start + 100_000)
        sel = picks[start:end]
        keep = np.arange(8)[None, :] < lengths[start:end, None]
        v = (pool_vecs[sel] * keep[..., None]).sum(axis=1) / lengths[start:end, None]
        v += 0.02 * rng.normal(size=v.shape)
        vectors[start:end] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
    return texts, vectors


def build(n: int) -> dict[str, Any]:
    from themes.embed import SentenceTransformerEmbedder
    from themes.search import new_index
    from themes.settings import load_settings

    settings = load_settings()
    pool = sentence_pool()
    cached = WORK / f"pool_{len(pool)}.npy"
    if cached.is_file():
        pool_vecs = np.load(cached)
    else:
        t0 = time.perf_counter()
        pool_vecs = SentenceTransformerEmbedder(settings.embed).encode(pool)
        print(f"embedded {len(pool)} pool sentences in {time.perf_counter() - t0:.0f} s")
        WORK.mkdir(parents=True, exist_ok=True)
        np.save(cached, pool_vecs)
    rng = np.random.default_rng(1)
    ids = [f"R{i:07d}" for i in range(n)]
    texts, vectors = draw_records(rng, n, pool, pool_vecs)
    days = rng.integers(0, 6 * 365, n)
    meta = pd.DataFrame(
        {
            "record_id": ids,
            "event_date": pd.to_datetime(date(2020, 1, 1)) + pd.to_timedelta(days, unit="D"),
            "theme_id": rng.integers(-1, 25, n),
            "kind": rng.choice(KINDS, n, p=[0.7, 0.2, 0.1]),
            "site": rng.choice(SITES, n, p=[0.5, 0.3, 0.2]),
            "location": rng.choice(LOCATIONS, n),
            "specialty": rng.choice(SPECIALTIES, n),
            "severity": rng.choice(SEVERITIES, n, p=[0.4, 0.35, 0.15, 0.08, 0.02]),
            "status": rng.choice(["Open", "Closed"], n),
            "harm": rng.choice(HARMS, n, p=[0.4, 0.35, 0.15, 0.08, 0.02]),
        }
    )
    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / "texts.db"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE texts (record_id TEXT PRIMARY KEY, clean_text TEXT)")
        conn.executemany("INSERT INTO texts VALUES (?, ?)", zip(ids, texts, strict=True))
    (WORK / "queries.json").write_text(
        json.dumps([" ".join(rng.choice(pool, 2)) for _ in range(2000)])
    )
    write_long_queries(pool)
    params = settings.search
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        index = new_index(params.model_copy(update={"ann_min_records": 1}))
        index.fit(ids, ids, texts, vectors, meta, model_id=settings.embed.model_id)
        fit_s = time.perf_counter() - t0
        index.save(WORK / "index")
        build_s = time.perf_counter() - t0
    return {
        "records": n,
        "pool_sentences": len(pool),
        "build_s": round(build_s, 1),
        "fit_s": round(fit_s, 1),
        "build_peak_gb": mem.peak_gb,
        "index_disk_gb": round(
            sum(p.stat().st_size for p in (WORK / "index").rglob("*") if p.is_file()) / 2**30, 2
        ),
        "ann": {
            "dtype": params.ann_dtype,
            "connectivity": params.ann_connectivity,
            "expansion_add": params.ann_expansion_add,
        },
    }


def ensure_built(n: int = 1_000_000) -> dict[str, Any]:
    """The saved index's build figures, building it first (`build`) when it is absent;
    for the benchmarks that reuse this synthetic index."""
    built_file = WORK / "build.json"
    if not (WORK / "index").is_dir() or not built_file.is_file():
        print(f"building the {n:,}-record index (bench_search_speed.build; about 10 min)")
        built_file.write_text(json.dumps(build(n)))
    return json.loads(built_file.read_text())


def resident_by_file(top: int = 5) -> dict[str, float]:
    """This process's resident memory (GB) per mapped file, from /proc/self/smaps: the
    index files mapped read-only, shared libraries; "[anonymous]" is everything else."""
    totals: dict[str, int] = {}
    name = "[anonymous]"
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            mapped = len(head) > 5 and head[5].startswith("/")
            name = Path(head[5]).name if mapped else "[anonymous]"
            if name.endswith(".so") or ".so." in name:
                name = "[shared libraries]"
        elif head and head[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(head[1]) * 1024
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    out = {k: round(v / 2**30, 2) for k, v in ranked[:top]}
    out["[other files]"] = round(sum(v for _, v in ranked[top:]) / 2**30, 2)
    return out


def serve(mode: str, n_queries: int) -> dict[str, Any]:
    """Load the saved index in this (fresh) process and time filtered queries."""
    import psutil

    from themes.embed import SentenceTransformerEmbedder
    from themes.search import (
        make_filters,
        make_query_embedder,
        retrieve,
        similar_terms,
        snippet,
        text_query,
    )
    from themes.search_index import SearchIndex
    from themes.settings import load_settings

    settings = load_settings()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        override = {} if mode == "ann" else {"ann_min_records": 10**12}
        index = SearchIndex.load(
            WORK / "index",
            read_only=True,  # as the product's Searcher loads it
            ann_expansion_search=settings.search.ann_expansion_search,
            prefilter_max_records=settings.search.prefilter_max_records,
            **override,
        )
        load_s = time.perf_counter() - t0
        # as Searcher: the query encoder exported and checked by main() (as the first
        # search does), so this process loads neither torch nor the PyTorch model;
        # embedding and dense search on a worker thread, BM25 beside it
        query_embedder = make_query_embedder(SentenceTransformerEmbedder(settings.embed), settings)
        query_embedder("warm up the query path")

        queries = json.loads((WORK / "queries.json").read_text())[:n_queries]
        long_queries = json.loads((WORK / "queries_long.json").read_text())[:n_queries]
        conn = sqlite3.connect(WORK / "texts.db")

        def read_page(hits: list, terms: set[str]) -> None:
            """What ends every search: the top 10's texts from SQLite, and snippets."""
            ids = [str(index.ids_[p]) for p, *_ in hits[:10]]
            marks = ",".join("?" * len(ids))
            rows = dict(
                conn.execute(
                    f"SELECT record_id, clean_text FROM texts WHERE record_id IN ({marks})",
                    ids,
                )
            )
            _ = [snippet(rows[r], terms) for r in ids]

        def timed(batch: list[str]) -> list[float]:
            times = []
            for i, q in enumerate(batch):
                f = make_filters(**FILTERS[i % len(FILTERS)])
                t = time.perf_counter()
                _, hits = text_query(
                    index, q, embed=query_embedder, settings=settings.search, n=10, filters=f
                )
                read_page(hits, set(q.lower().split()))
                times.append(time.perf_counter() - t)
            return times

        def timed_similar(record_ids: list[str]) -> list[float]:
            """Each record's "more like this" as `Searcher.similar` runs it, filtered, top
            10 with texts and snippets: the record found by id, its terms and vector, hybrid
            retrieval."""
            inverse = {v: k for k, v in index.tokenizer_.get_vocab_dict().items()}
            times = []
            for i, rid in enumerate(record_ids):
                f = make_filters(**FILTERS[i % len(FILTERS)])
                t = time.perf_counter()
                pos = index.position(rid)
                tokens, weights = similar_terms(index, pos, settings.search)
                hits = retrieve(
                    index, tokens=tokens, weights=weights,
                    vector=np.asarray(index.vectors_[pos], dtype=np.float32),
                    settings=settings.search, n=11, filters=f, exclude=pos,
                    sequence=index.sequence_of(pos),
                )  # fmt: skip
                read_page(hits, {inverse[t] for t in tokens if t in inverse})
                times.append(time.perf_counter() - t)
            return times

        times = timed(queries)
        long_times = timed(long_queries)
        rng = np.random.default_rng(11)
        like = [str(index.ids_[p]) for p in rng.choice(index.size, n_queries, replace=False)]
        like_times = timed_similar(like)
        distinct = [len(index.query_terms(q)[0]) for q in long_queries]
        rss_gb = round(psutil.Process().memory_info().rss / 2**30, 2)
        by_file = resident_by_file()
        torch_loaded = "torch" in sys.modules
    out = {
        "mode": mode,
        "queries": len(queries),
        "load_s": round(load_s, 1),
        "p50_ms": round(1000 * float(np.percentile(times, 50)), 1),
        "p95_ms": round(1000 * float(np.percentile(times, 95)), 1),
        "mean_ms": round(1000 * float(np.mean(times)), 1),
        "peak_gb": mem.peak_gb,
        "peak_anon_gb": mem.peak_anon_gb,
        "rss_after_gb": rss_gb,
        "rss_after_by_file_gb": by_file,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "query_threads": query_embedder.encoder_threads,
        "query_encoder": query_embedder.backend,
        "torch_loaded": torch_loaded,
        "long_query": {
            "queries": len(long_queries),
            "p50_ms": round(1000 * float(np.percentile(long_times, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(long_times, 95)), 1),
            "mean_distinct_terms": round(float(np.mean(distinct)), 1),
            "weighted_share": long_query_share(index, long_queries, settings.search),
            "long_query_terms": settings.search.long_query_terms,
        },
        "similar": {
            "records": len(like),
            "p50_ms": round(1000 * float(np.percentile(like_times, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(like_times, 95)), 1),
            "max_ms": round(1000 * float(np.max(like_times)), 1),
        },
        "short_query_weighted_share": long_query_share(index, queries, settings.search),
        "ann_expansion_search": settings.search.ann_expansion_search,
        "prefilter_max_records": settings.search.prefilter_max_records,
    }
    if mode == "ann":
        # dense recall@10 of the ANN path against exact search, same queries
        vecs = [query_embedder(q) for q in queries[:200]]
        for label, filt in (("unfiltered", None), ("filtered", "rotate")):
            overlaps = []
            for i, v in enumerate(vecs):
                f = make_filters(**FILTERS[i % len(FILTERS)]) if filt else None
                mask = index.mask(f)
                exact = index.dense(v, n=10, mask=mask, exact=True)[0]
                approx = index.dense(v, n=10, mask=mask)[0]
                overlaps.append(len(set(exact) & set(approx)) / max(1, len(exact)))
            out[f"recall@10_{label}"] = round(float(np.mean(overlaps)), 4)
        times = []
        for v in vecs:
            t = time.perf_counter()
            index.dense(v, n=10)
            times.append(time.perf_counter() - t)
        out["dense_only_p50_ms"] = round(1000 * float(np.percentile(times, 50)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--serve", choices=["ann", "exact"])
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    if args.serve:
        print("RESULT " + json.dumps(serve(args.serve, args.queries)))
        return
    if args.skip_build:
        built = json.loads((WORK / "build.json").read_text())
        built["reused"] = True
    else:
        built = build(args.records)
        (WORK / "build.json").write_text(json.dumps(built))
    if not (WORK / "queries_long.json").is_file():
        write_long_queries(sentence_pool())
    from themes.embed import SentenceTransformerEmbedder
    from themes.search import make_query_embedder
    from themes.settings import load_settings

    settings = load_settings()
    # the one-time export and check of the query encoder, done by the first search
    make_query_embedder(SentenceTransformerEmbedder(settings.embed), settings).close()
    modes = {}
    for mode in ("ann", "exact"):
        proc = subprocess.run(
            [sys.executable, __file__, "--serve", mode, "--queries", str(args.queries)],
            capture_output=True,
            text=True,
            check=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        modes[mode] = json.loads(line.removeprefix("RESULT "))
    res = {"build": built, "serve": modes}
    a, e = modes["ann"], modes["exact"]
    rows = [
        [m["mode"], "2 sentences", m["p50_ms"], m["p95_ms"], m["load_s"], m["peak_gb"],
         m.get("peak_anon_gb", "")]
        for m in (a, e)
    ]  # fmt: skip
    rows += [
        [m["mode"], f"{LONG_QUERY_SENTENCES} sentences (long)", m["long_query"]["p50_ms"],
         m["long_query"]["p95_ms"], "", "", ""]
        for m in (a, e) if "long_query" in m
    ]  # fmt: skip
    rows += [
        [m["mode"], '"more like this" (a record)', m["similar"]["p50_ms"],
         m["similar"]["p95_ms"], "", "", ""]
        for m in (a, e) if "similar" in m
    ]  # fmt: skip
    long_note = (
        f" The long queries ({LONG_QUERY_SENTENCES} sentences, a pasted narrative) have "
        f"{a['long_query']['mean_distinct_terms']} distinct indexed words on average; "
        f"{a['long_query']['weighted_share']:.0%} reach `search.long_query_terms` "
        f"({a['long_query']['long_query_terms']}), so BM25 weights their terms by TF-IDF "
        f"(of the 2-sentence queries: {a['short_query_weighted_share']:.0%}). Peak memory is "
        "the serving process's over both query sets."
        if "long_query" in a
        else ""
    )
    md = "\n".join(
        [
            "# Search speed (1,000,000 synthetic records)"
            if built["records"] == 1_000_000
            else f"# Search speed ({built['records']:,} synthetic records)",
            "",
            f"Index build (BM25 + usearch HNSW {built['ann']['dtype']}, M="
            f"{built['ann']['connectivity']}): **{built['build_s']} s** "
            f"(peak {built['build_peak_gb']} GB; {built['index_disk_gb']} GB on disk)"
            + (
                "; this run reused an index built by an earlier run (`--skip-build`), so the "
                "build figures are that run's."
                if built.get("reused")
                else "."
            ),
            "",
            "Filtered text query end to end (query embedding with the model warm, BM25 + dense "
            "under the filter, fusion, top-10 texts read from SQLite, snippets); "
            f"{a['queries']} queries of each length rotating over {len(FILTERS)} filters; "
            "target p95 ≤ 50 ms, memory ≤ 3 GB." + long_note,
            "",
            md_table(
                [
                    "dense search",
                    "query",
                    "p50 ms",
                    "p95 ms",
                    "load s",
                    "peak RSS GB",
                    "of it anonymous GB",
                ],
                rows,
            ),  # fmt: skip
            "",
            (
                f'"More like this": {a["similar"]["records"]} random indexed records, each '
                "as `Searcher.similar` runs it (found by id, its terms and stored vector, "
                "hybrid retrieval under the same rotating filters, itself left out, top-10 "
                "texts and snippets); the first also builds the id lookup (slowest of the "
                f"ANN run {a['similar']['max_ms']} ms)."
                if "similar" in a
                else ""
            ),
            "",
            "The index is loaded as the product's searcher loads it: read-only, with the "
            "usearch graph, the BM25 matrix and `vectors.npy` memory-mapped. Peak RSS counts "
            "the pages of those files that queries have touched (page cache, which the "
            "kernel can drop and other processes share); anonymous memory is what the "
            "process itself holds. Resident memory after the ANN run, by file (GB): "
            + ", ".join(f"{k} {v}" for k, v in a.get("rss_after_by_file_gb", {}).items())
            + f". Queries are embedded by the {a['query_encoder']} query encoder; torch "
            + ("was" if a.get("torch_loaded") else "was not")
            + " loaded in the serving process.",
            "",
            f"ANN recall@10 against exact search: **{a['recall@10_unfiltered']}** unfiltered, "
            f"**{a['recall@10_filtered']}** filtered (target ≥ 0.95). Dense-only ANN query: "
            f"{a['dense_only_p50_ms']} ms p50.",
            "",
            f"Command: `python benchmarks/bench_search_speed.py --records {built['records']}`",
        ]
    )
    write_result("search_speed", res, md)


if __name__ == "__main__":
    main()
