"""Where a filtered text query's time goes, step by step, at 1,000,000 records.

Loads the index that `bench_search_speed.py` built (run that first) and times, over the
same queries and filters: embedding the query alone (the product's path,
`search.query_encoder`, on its worker thread) and with torch, the filter mask, BM25, dense
search under the filter, and the whole query as the product runs it
(`themes.search.text_query`: embedding and dense search on the worker while the mask and
BM25 run). Also: one core's matmul
speed at the encoder's layer shapes, and (`--torchscript`) a TorchScript-frozen encoder
with oneDNN fusion, the option the search-speed reading discusses.

    python benchmarks/profile_search_query.py [--queries 150] [--torchscript]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from _common import long_query_share, md_table, write_result  # noqa: E402
from bench_search_speed import FILTERS, WORK  # noqa: E402


def pct(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * float(np.percentile(times, 50)), 1),
        "p95_ms": round(1000 * float(np.percentile(times, 95)), 1),
    }


def matmul_gflops() -> float:
    """One thread, a 32-token batch through a 384 x 1536 layer (the encoder's FFN shape)."""
    import torch

    torch.set_num_threads(1)
    a, w = torch.randn(32, 384), torch.randn(1536, 384)
    for _ in range(50):
        torch.nn.functional.linear(a, w)
    t = time.perf_counter()
    for _ in range(1000):
        torch.nn.functional.linear(a, w)
    return round(1000 * 2 * 32 * 384 * 1536 / (time.perf_counter() - t) / 1e9, 1)


def torchscript(embedder: Any, queries: list[str]) -> dict[str, Any]:
    """Frozen TorchScript + oneDNN fusion: first-call (compile) and steady times."""
    import torch

    st = embedder.model
    bert, tok = st[0].auto_model.eval(), st.tokenizer
    torch.set_num_threads(1)
    torch.jit.enable_onednn_fusion(True)
    with torch.no_grad():
        f = tok(["warm up text for tracing the model"], return_tensors="pt")
        frozen = torch.jit.freeze(
            torch.jit.trace(bert, (f["input_ids"], f["attention_mask"]), strict=False).eval()
        )

    def encode(q: str) -> np.ndarray:
        f = tok([q], return_tensors="pt", truncation=True, max_length=256)
        with torch.no_grad():
            out = frozen(f["input_ids"], f["attention_mask"])
        h = out["last_hidden_state"] if isinstance(out, dict) else out[0]
        v = h[0].mean(0).numpy()
        return v / np.linalg.norm(v)

    first, cos = [], []
    ref = embedder.encode(queries)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        v = encode(q)
        first.append(time.perf_counter() - t)
        cos.append(float(v @ ref[i]))
    steady = []
    for q in queries:
        t = time.perf_counter()
        encode(q)
        steady.append(time.perf_counter() - t)
    return {
        "first_pass_first10_ms": [round(1000 * x) for x in first[:10]],
        "second_pass": pct(steady),
        "min_cosine_to_product": round(min(cos), 6),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--torchscript", action="store_true")
    ap.add_argument(
        "--long",
        action="store_true",
        help="pasted-narrative queries (queries_long.json: 6 sentences, TF-IDF-weighted BM25)",
    )
    args = ap.parse_args()

    from themes.embed import SentenceTransformerEmbedder
    from themes.search import (
        QueryEmbedder,
        fuse,
        fusion_weight,
        is_long_query,
        lexical_query,
        make_filters,
        make_query_embedder,
        rerank,
        text_query,
    )
    from themes.search_index import SearchIndex
    from themes.settings import load_settings

    if not (WORK / "index" / "manifest.json").is_file():
        raise SystemExit(f"no index at {WORK / 'index'}: run benchmarks/bench_search_speed.py")
    s = load_settings()
    index = SearchIndex.load(
        WORK / "index",
        read_only=True,  # as the product's Searcher loads it
        ann_expansion_search=s.search.ann_expansion_search,
        prefilter_max_records=s.search.prefilter_max_records,
    )
    embedder = SentenceTransformerEmbedder(s.embed)
    embedder.encode(["warm up the model"])
    qe = make_query_embedder(embedder, s)
    qe("warm up the query path")
    torch_qe = QueryEmbedder(embedder, threads=s.search.query_threads or 1)
    torch_qe("warm up the query path")
    source = "queries_long.json" if args.long else "queries.json"
    if not (WORK / source).is_file():
        raise SystemExit(f"no {WORK / source}: run benchmarks/bench_search_speed.py")
    queries = json.loads((WORK / source).read_text())[: args.queries]

    def lexical(q: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """BM25 as the product runs it: a long query's terms weighted (`lexical_query`)."""
        tokens, weights = lexical_query(index, q, s.search)
        return index.bm25(tokens, n=s.search.candidates, mask=mask, weights=weights)

    names = (
        "whole query",
        "embed",
        "embed (torch)",
        "mask",
        "bm25",
        "dense",
        "word-pair re-ranking (long queries)",
        "embed while BM25 runs",
    )
    steps: dict[str, list[float]] = {k: [] for k in names}
    cosines: list[float] = []
    for i, q in enumerate(queries):
        f = make_filters(**FILTERS[i % len(FILTERS)])
        t = time.perf_counter()
        text_query(index, q, embed=qe, settings=s.search, n=10, filters=f)
        steps["whole query"].append(time.perf_counter() - t)
        t = time.perf_counter()
        vec = qe(q)
        steps["embed"].append(time.perf_counter() - t)
        t = time.perf_counter()
        torch_vec = torch_qe(q)
        steps["embed (torch)"].append(time.perf_counter() - t)
        cosines.append(float(vec @ torch_vec))
        t = time.perf_counter()
        mask = index.mask(f)
        steps["mask"].append(time.perf_counter() - t)
        t = time.perf_counter()
        lexical_hits = lexical(q, mask)
        steps["bm25"].append(time.perf_counter() - t)
        t = time.perf_counter()
        dense_hits = index.dense(vec, n=s.search.candidates, mask=mask)
        steps["dense"].append(time.perf_counter() - t)
        if is_long_query(len(index.query_terms(q)[0]), s.search):
            fused = fuse(lexical_hits, dense_hits, method=s.search.fusion, rrf_k=s.search.rrf_k,
                         dense_weight=fusion_weight(s.search, long=True))  # fmt: skip
            t = time.perf_counter()
            rerank(index, fused, index.query_sequence(q), s.search)
            steps["word-pair re-ranking (long queries)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pending = qe.submit(q)
        lexical(q, index.mask(f))
        pending.result()
        steps["embed while BM25 runs"].append(time.perf_counter() - t)
    wp = [len(embedder.model.tokenizer(q)["input_ids"]) for q in queries]
    res: dict[str, Any] = {
        "records": index.size,
        "queries_file": source,
        "weighted_share": long_query_share(index, queries, s.search),
        "queries": len(queries),
        "query_word_pieces_mean": round(float(np.mean(wp)), 1),
        "query_encoder": qe.backend,
        "min_cosine_query_encoder_to_torch": round(min(cosines), 6),
        "steps": {k: pct(v) for k, v in steps.items() if v},
        "matmul_gflops_one_thread": matmul_gflops(),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    if args.torchscript:
        res["torchscript"] = torchscript(embedder, queries[:100])
    rows = [[k, v["p50_ms"], v["p95_ms"]] for k, v in res["steps"].items()]
    lines = [
        f"# Where a filtered {'long ' if args.long else ''}text query's time goes "
        f"({index.size:,} records)",
        "",
        f"{len(queries)} {'long ' if args.long else ''}queries (mean "
        f"{res['query_word_pieces_mean']} word-pieces; {res['weighted_share']:.0%} TF-IDF-"
        "weighted in BM25, as `search.long_query_terms` says) rotating "
        f"over {len(FILTERS)} filters; each step timed on its own, then the whole query "
        "(embedding, then dense search, on the worker while the mask and BM25 run). "
        "Query encoder: "
        f'{res["query_encoder"]} (the "embed" row; lowest cosine to torch\'s vectors '
        f'{res["min_cosine_query_encoder_to_torch"]}); "embed (torch)" is the model as '
        "loaded.",
        "",
        md_table(["step", "p50 ms", "p95 ms"], rows),
        "",
        f"One core's matmul at the encoder's layer shape: {res['matmul_gflops_one_thread']} "
        "GFLOP/s.",
    ]
    if "torchscript" in res:
        ts = res["torchscript"]
        lines += [
            "",
            f"TorchScript-frozen encoder with oneDNN fusion: first calls "
            f"{ts['first_pass_first10_ms']} ms (each new length compiles), then "
            f"p50 {ts['second_pass']['p50_ms']} / p95 {ts['second_pass']['p95_ms']} ms; "
            f"lowest cosine to the product's vectors {ts['min_cosine_to_product']}.",
        ]
    flags = (" --torchscript" if args.torchscript else "") + (" --long" if args.long else "")
    if s.search.query_threads != 0:
        flags = f"{flags} (with THEMES_SEARCH__QUERY_THREADS={s.search.query_threads})"
    lines += ["", f"Command: `python benchmarks/profile_search_query.py{flags}`"]
    name = "search_query_profile_long" if args.long else "search_query_profile"
    write_result(name, res, "\n".join(lines))


if __name__ == "__main__":
    main()
