"""Similar-case search quality and near-duplicate detection, against baselines in one run.

1. PFD reports (../shared/data/pfd_reports_2013_2023.csv, de-identified by the product):
   each report is indexed by its concerns + investigation (no circumstances); its
   circumstances are the query; the relevant result is the same report. Queries are split
   in two: the fusion method and its constant/weight are chosen on the even rows (dev) and
   reported on the odd rows (test), for hybrid, BM25 alone and dense alone.
2. FFT comments (../shared/data/fft_feedback_v6_labelled.csv, de-identified): precision@10
   of "same human label" for a seeded sample of comments as queries (self excluded), with
   the fusion chosen on PFD (nothing tuned on FFT); again over one comment per distinct
   text whose label names a theme, so that exact repeats do not answer their own copies.
3. Near-duplicates on demo data: the generator plants re-worded duplicates; the threshold
   is calibrated on one seed and precision/recall reported on two other seeds, beside a
   cosine-only baseline (no date/place blocking) calibrated the same way.

    python benchmarks/bench_search.py [--skip-pfd] [--skip-fft] [--skip-dups]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    SHARED_DATA,
    long_query_share,
    md_table,
    write_result,
)
from themes.embed import SentenceTransformerEmbedder  # noqa: E402
from themes.search import (  # noqa: E402
    SIMILAR_TERMS,
    fuse,
    fusion_weight,
    lexical_query,
    new_index,
    rerank,
    similar_terms,
)
from themes.search_index import META_COLUMNS, SearchIndex  # noqa: E402
from themes.settings import load_settings  # noqa: E402

CACHE = ROOT / "var" / "bench_cache"
FFT = SHARED_DATA / "fft_feedback_v6_labelled.csv"
POOL = 100
RRF_K = [1, 2, 5, 10, 20, 40, 60, 100]
WEIGHTS = [round(float(w), 2) for w in np.arange(0.1, 0.95, 0.1)]


def embed_cached(name: str, texts: list[str], settings) -> np.ndarray:  # noqa: ANN001
    """Embeddings of texts, cached in var/bench_cache by a hash of the texts and model."""
    key = hashlib.sha256(("\x1e".join(texts) + settings.embed.model_id).encode()).hexdigest()
    path = CACHE / f"{name}_{key[:16]}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.perf_counter()
    vectors = SentenceTransformerEmbedder(settings.embed).encode(texts)
    print(f"embedded {len(texts)} {name} texts in {time.perf_counter() - t0:.0f} s")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def dummy_meta(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": ids,
            "event_date": pd.Timestamp("2020-01-01"),
            "theme_id": -1,
            **{c: "" for c in META_COLUMNS},
        }
    )


def fit_index(settings, names: list[str], texts: list[str], vecs: np.ndarray) -> SearchIndex:  # noqa: ANN001
    """A product search index (configured settings) over `texts`, each named by itself."""
    return new_index(settings.search).fit(
        names, names, texts, vecs, dummy_meta(names), model_id=settings.embed.model_id
    )


def pfd_halves(n: int) -> dict[str, list[int]]:
    """The PFD split every part uses: even rows tune (dev), odd rows report (test)."""
    return {"dev": list(range(0, n, 2)), "test": list(range(1, n, 2))}


NEVER = 10**9
"""`long_query_terms` that no query reaches: plain BM25, every query term counted once."""


def ranked_lists(
    index: SearchIndex,
    queries: list[str],
    qvecs: np.ndarray,
    exclude: list[int] | None = None,
    *,
    settings,  # noqa: ANN001
    long_query_terms: int | None = None,
) -> list[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Per query: (BM25 list, dense list), POOL long. BM25 weights a long query's terms as
    the product does (`search.long_query_terms`, or `long_query_terms` if given; NEVER:
    plain BM25)."""
    s = settings.search
    if long_query_terms is not None:
        s = s.model_copy(update={"long_query_terms": long_query_terms})
    out = []
    for i, (text, vec) in enumerate(zip(queries, qvecs, strict=True)):
        seq = index.query_sequence(text)
        tokens, w = lexical_query(index, text, s, sequence=seq)
        b = index.bm25(tokens, n=POOL + 1, weights=w)
        d = index.dense(vec, n=POOL + 1)
        if exclude is not None:
            b = tuple(x[b[0] != exclude[i]][:POOL] for x in b)
            d = tuple(x[d[0] != exclude[i]][:POOL] for x in d)
        out.append(Lists(b, d, w is not None, seq=seq if w is not None else None, index=index))
    return out


class Lists(tuple):
    """One query's (BM25 list, dense list), whether the query is long (its BM25 terms
    weighted), which decides its dense weight in the product's fusion and whether it is
    re-ranked with word pairs, and for that its token sequence and index."""

    def __new__(cls, bm25, dense, long: bool, *, seq=None, index=None):  # noqa: ANN001, ANN204
        obj = super().__new__(cls, (bm25, dense))
        obj.long, obj.seq, obj.index = long, seq, index
        return obj


def configured(lists, s, long_weight: float | None | str = "configured") -> list[np.ndarray]:  # noqa: ANN001
    """The product's ranking of each query's lists (as `retrieve`): `search.fusion` with
    `fusion_weight`'s dense weight (a long query's own, `search.long_query_dense_weight`,
    or `long_weight` in its place when given; None: the one `dense_weight` for every
    query), then a long query's word-pair re-ranking (`rerank`)."""
    if long_weight != "configured":
        s = s.model_copy(update={"long_query_dense_weight": long_weight})
    out = []
    for ls in lists:
        b, d = ls
        long = getattr(ls, "long", False)
        ranked = fuse(
            b, d, method=s.fusion, rrf_k=s.rrf_k, dense_weight=fusion_weight(s, long=long)
        )
        if long and getattr(ls, "seq", None) is not None:
            ranked = rerank(ls.index, ranked, ls.seq, s)
        out.append(ranked[0])
    return out


def rank_metrics(rankings: list[np.ndarray], targets: list[int]) -> dict[str, float]:
    rr, r1, r10 = [], [], []
    for ranked, t in zip(rankings, targets, strict=True):
        hits = np.flatnonzero(ranked[:POOL] == t)
        rank = int(hits[0]) + 1 if len(hits) else None
        rr.append(1.0 / rank if rank else 0.0)
        r1.append(rank == 1)
        r10.append(rank is not None and rank <= 10)
    return {
        "mrr": round(float(np.mean(rr)), 4),
        "recall@1": round(float(np.mean(r1)), 4),
        "recall@10": round(float(np.mean(r10)), 4),
        "queries": len(targets),
    }


def fused(lists, method: str, k: float, w: float) -> list[np.ndarray]:  # noqa: ANN001
    return [fuse(b, d, method=method, rrf_k=k, dense_weight=w)[0] for b, d in lists]


def grid(lists, targets: list[int]) -> list[dict[str, Any]]:  # noqa: ANN001
    rows = []
    for w in WEIGHTS:
        for k in RRF_K:
            m = rank_metrics(fused(lists, "rrf", k, w), targets)
            rows.append({"fusion": "rrf", "rrf_k": k, "dense_weight": w, **m})
        m = rank_metrics(fused(lists, "convex", 0, w), targets)
        rows.append({"fusion": "convex", "rrf_k": None, "dense_weight": w, **m})
    return rows


def pfd_task(settings) -> tuple[list[str], list[str], list[str], np.ndarray, SearchIndex, float]:  # noqa: ANN001
    """The PFD task: ids, queries (circumstances), documents (concerns + investigation),
    query vectors, and the search index over the documents with its build seconds."""
    from _pfd import load_pfd_deidentified

    df = load_pfd_deidentified()
    docs = (df["concerns"].str.strip() + "\n\n" + df["investigation"].str.strip()).str.strip()
    ok = (df["circumstances"].str.strip() != "") & (docs != "")
    df, docs = df[ok].reset_index(drop=True), docs[ok].reset_index(drop=True)
    ids, queries, texts = df["id"].tolist(), df["circumstances"].tolist(), docs.tolist()
    dvec = embed_cached("pfd_docs", texts, settings)
    qvec = embed_cached("pfd_queries", queries, settings)
    t0 = time.perf_counter()
    index = fit_index(settings, ids, texts, dvec)
    return ids, queries, texts, qvec, index, time.perf_counter() - t0


def bench_pfd(settings) -> dict[str, Any]:  # noqa: ANN001
    ids, queries, _, qvec, index, index_s = pfd_task(settings)
    lists = ranked_lists(index, queries, qvec, settings=settings)
    plain = ranked_lists(index, queries, qvec, settings=settings, long_query_terms=NEVER)
    targets = list(range(len(ids)))
    dev, test = pfd_halves(len(ids)).values()
    pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
    tuning = grid(pick(lists, dev), pick(targets, dev))
    best = max(tuning, key=lambda r: (r["mrr"], r["recall@10"]))
    s = settings.search
    conf = {"fusion": s.fusion, "rrf_k": s.rrf_k, "dense_weight": s.dense_weight,
            "long_query_dense_weight": s.long_query_dense_weight}  # fmt: skip
    result: dict[str, Any] = {
        "reports": len(ids),
        "index_s": round(index_s, 2),
        "chosen_on_dev": {k: best[k] for k in ("fusion", "rrf_k", "dense_weight")},
        "configured": conf,
        "splits": {},
        "tuning_top": sorted(tuning, key=lambda r: -r["mrr"])[:10],
    }
    for split, idx in (("test", test), ("dev", dev), ("all", targets)):
        ls, ts, pl = pick(lists, idx), pick(targets, idx), pick(plain, idx)
        rows = {
            "hybrid (configured)": rank_metrics(configured(ls, s), ts),
            "hybrid without word-pair re-ranking (phrase_weight 0)": rank_metrics(
                configured(ls, s.model_copy(update={"phrase_weight": 0.0})), ts
            ),
            "hybrid, dense_weight for every query (no long-query weight)": rank_metrics(
                configured(ls, s, None), ts
            ),
            "hybrid (chosen on dev)": rank_metrics(
                fused(ls, best["fusion"], best["rrf_k"] or 0, best["dense_weight"]), ts
            ),
            "hybrid over plain BM25 (long queries not weighted)": rank_metrics(
                configured(pl, s), ts
            ),
            "hybrid (plain BM25 + dense, RRF k=60, w=0.5)": rank_metrics(
                fused(pl, "rrf", 60, 0.5), ts
            ),
            "bm25": rank_metrics([b[0] for b, _ in pl], ts),
            "bm25, long queries TF-IDF-weighted (the product's lexical side alone)": (
                rank_metrics([b[0] for b, _ in ls], ts)
            ),
            "dense": rank_metrics([d[0] for _, d in ls], ts),
        }
        result["splits"][split] = rows
    return result


def bench_pfd_alternatives(settings) -> dict[str, Any]:  # noqa: ANN001
    """Other lexical/dense combinations on the same PFD task and split, scored over the
    whole corpus: does any mix of the signals at hand gain +0.05 MRR over BM25 alone?

    Signals: the index's BM25 (bm25s tokens), BM25 over the linker's stemmed content
    words, BM25 over stemmed word bigrams (phrases), the dense cosine, and the TF-IDF
    cosine the linker uses (scikit-learn, sublinear tf, English stop words, placeholders
    dropped; words, and words and word pairs). Each is standardised per query over all
    documents (z-score, as the linker does) and mixed with weights chosen on the dev half
    (grid), then scored on the test half.
    """
    from itertools import product

    import bm25s

    from themes.linker import tfidf_vectorizer, zscore
    from themes.linker import tokens as stemmed

    ids, queries, texts, qvec, index, _ = pfd_task(settings)
    dvec = np.asarray(index.vectors_, dtype=np.float32)
    n = len(ids)
    index_bm25 = np.zeros((n, n))
    for i, q in enumerate(queries):
        pos, sc = index.bm25(index.query_tokens(q), n=n)
        index_bm25[i, pos] = sc

    def bm25_over(tok_fn, k1: float, b: float) -> np.ndarray:  # noqa: ANN001
        toks = [tok_fn(t) or ["_empty_"] for t in texts]
        model = bm25s.BM25(k1=k1, b=b)
        model.index(toks, show_progress=False)
        vocab = {w for t in toks for w in t}
        out = np.zeros((n, n))
        for i, q in enumerate(queries):
            qt = [t for t in tok_fn(q) if t in vocab]
            if qt:
                out[i] = model.get_scores(qt)
        return out

    def bigrams(text: str) -> list[str]:
        w = stemmed(text)
        return [f"{a}_{b}" for a, b in zip(w, w[1:], strict=False)]

    signals = {
        "BM25 (index tokens)": zscore(index_bm25),
        "BM25 (stemmed words)": zscore(bm25_over(stemmed, 1.2, 0.9)),
        "BM25 (stemmed bigrams)": zscore(bm25_over(bigrams, 1.2, 0.75)),
        "dense cosine": zscore(qvec @ dvec.T),
    }
    for name, max_words in (("TF-IDF (words)", 1), ("TF-IDF (words and pairs)", 2)):
        vec = tfidf_vectorizer(max_words)
        matrix = vec.fit_transform(texts)
        signals[name] = zscore((vec.transform(queries) @ matrix.T).toarray())
    dev = np.arange(n) % 2 == 0

    def mrr(scores: np.ndarray, rows: np.ndarray) -> float:
        idx = np.flatnonzero(rows)
        ranks = (scores[idx] > scores[idx, idx][:, None]).sum(axis=1) + 1
        return round(float(np.mean(1.0 / ranks)), 4)

    rows: list[dict[str, Any]] = [
        {"method": k, "weights": None, "dev_mrr": mrr(v, dev), "test_mrr": mrr(v, ~dev)}
        for k, v in signals.items()
    ]
    combos = [
        ("BM25 (index tokens)", "dense cosine"),
        ("BM25 (stemmed words)", "dense cosine"),
        ("BM25 (stemmed words)", "BM25 (stemmed bigrams)"),
        ("BM25 (stemmed words)", "BM25 (stemmed bigrams)", "dense cosine"),
        ("TF-IDF (words and pairs)", "dense cosine"),
        ("BM25 (index tokens)", "TF-IDF (words and pairs)"),
        ("BM25 (index tokens)", "TF-IDF (words and pairs)", "dense cosine"),
    ]
    grid = [round(float(w), 2) for w in np.arange(0.0, 2.01, 0.1)]
    for keys in combos:
        best: tuple[float, tuple[float, ...]] | None = None
        for ws in product(grid, repeat=len(keys) - 1):
            mixed = signals[keys[0]] + sum(
                w * signals[k] for w, k in zip(ws, keys[1:], strict=True)
            )
            m = mrr(mixed, dev)
            if best is None or m > best[0]:
                best = (m, ws)
        assert best is not None
        mixed = signals[keys[0]] + sum(
            w * signals[k] for w, k in zip(best[1], keys[1:], strict=True)
        )
        rows.append({"method": " + ".join(keys), "weights": [1.0, *best[1]],
                     "dev_mrr": best[0], "test_mrr": mrr(mixed, ~dev)})  # fmt: skip
    singles = [r["test_mrr"] for r in rows if r["weights"] is None]
    return {"reports": n, "rows": rows, "best_single_test_mrr": max(singles),
            "best_mix_test_mrr": max(r["test_mrr"] for r in rows if r["weights"])}  # fmt: skip


def clean_labelled(
    settings,  # noqa: ANN001
    name: str,
    source_key: str,
    load: Callable[[], tuple[list[str], list[str]]],
) -> tuple[list[str], list[str]]:
    """De-identified texts and their labels from `load()` (raw texts, labels), cached in
    var/bench_cache by `source_key` and the cleaning settings."""
    from themes.steps import clean_texts_for_evaluation

    key = source_key + "-" + settings.section_hash("clean", "deidentify")
    path = CACHE / f"{name}_{key}.parquet"
    if path.is_file():
        cached = pd.read_parquet(path)
        return cached["text"].tolist(), cached["label"].tolist()
    texts, labels = load()
    clean = clean_texts_for_evaluation(settings, texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": clean, "label": labels}).to_parquet(path, index=False)
    return clean, labels


def load_fft(settings) -> tuple[list[str], list[str]]:  # noqa: ANN001
    from themes.evaluate import load_labelled

    def load() -> tuple[list[str], list[str]]:
        texts, labels, _ = load_labelled(
            FFT, text_column="FFT answer", one_hot_start="Not assigned"
        )
        return texts, labels

    return clean_labelled(
        settings, "fft_deid", hashlib.sha256(FFT.read_bytes()).hexdigest()[:12], load
    )


def tfidf_rankings(texts: list[str], sample: list[int], n: int = 10) -> list[np.ndarray]:
    """Top-n positions by the linker's TF-IDF cosine (words and word pairs) for each
    sampled text against all the others (itself left out): a comparison, not the product."""
    from themes.linker import tfidf_vectorizer

    vec = tfidf_vectorizer()
    matrix = vec.fit_transform(texts)
    sims = (matrix[sample] @ matrix.T).toarray()
    sims[np.arange(len(sample)), sample] = -np.inf
    return [np.argsort(-row, kind="stable")[:n] for row in sims]


NO_THEME = ("Labelling not possible", "Not assigned")
"""FFT labels that name no theme: "Did not answer" rows and comments the coders left
unthemed."""


def same_text_groups(texts: list[str]) -> dict[str, list[int]]:
    """Positions of the comments per distinct text, case and spacing ignored."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(" ".join(t.lower().split()), []).append(i)
    return groups


def distinct_themed(texts: list[str], labels: list[str]) -> list[int]:
    """Positions of one comment per distinct text (case and spacing ignored) whose label
    names a theme: the first of the copies that carry the text's most frequent label (ties:
    the label seen first). About a third of the FFT comments repeat another's text
    ("Did not answer" alone is 1,189 of 5,684 non-empty rows), so a sampled query often
    has exact copies that every method ranks first."""
    keep = []
    for rows in same_text_groups(texts).values():
        counts: dict[str, int] = {}
        for i in rows:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        top = max(counts, key=counts.get)  # first-seen label wins a tie
        if top not in NO_THEME:
            keep.append(next(i for i in rows if labels[i] == top))
    return sorted(keep)


def fft_precision(
    settings,  # noqa: ANN001
    texts: list[str],
    labels: list[str],
    vecs: np.ndarray,
    n_queries: int,
) -> dict[str, Any]:
    """Precision@10 of same label for a seeded sample of the comments as queries (self
    excluded), per method, over an index of exactly these comments."""
    index = fit_index(settings, [f"F{i}" for i in range(len(texts))], texts, vecs)
    sample = random.Random(0).sample(range(len(texts)), min(n_queries, len(texts)))
    queries = [texts[i] for i in sample]
    lists = ranked_lists(index, queries, vecs[sample], exclude=sample, settings=settings)
    plain = ranked_lists(
        index, queries, vecs[sample], exclude=sample, settings=settings, long_query_terms=NEVER
    )
    s = settings.search
    methods = {
        "hybrid": configured(lists, s),
        "hybrid over plain BM25 (long queries not weighted)": configured(plain, s),
        "bm25": [b[0] for b, _ in plain],
        "bm25, long queries TF-IDF-weighted (the product's lexical side alone)": [
            b[0] for b, _ in lists
        ],
        "dense": [d[0] for _, d in lists],
        "TF-IDF cosine (not in the product)": tfidf_rankings(texts, sample),
    }
    out = {name: p10_of(rankings, sample, labels) for name, rankings in methods.items()}
    return {"comments": len(texts), "labels": len(set(labels)), "queries": len(sample),
            "precision@10": out}  # fmt: skip


def bench_fft(settings, n_queries: int) -> dict[str, Any]:  # noqa: ANN001
    """FFT precision@10 over all non-empty comments, and again over one comment per
    distinct text whose label names a theme (`distinct_themed`)."""
    texts, labels = load_fft(settings)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    vecs = embed_cached("fft", texts, settings)
    res = fft_precision(settings, texts, labels, vecs, n_queries)
    rows = distinct_themed(texts, labels)
    groups = same_text_groups(texts)
    res["repeats"] = len(texts) - len(groups)
    commonest = max(groups, key=lambda t: len(groups[t]))
    res["commonest"] = [commonest, len(groups[commonest])]
    res["distinct_themed"] = fft_precision(
        settings, [texts[i] for i in rows], [labels[i] for i in rows], vecs[rows], n_queries
    )
    return res


def p10_of(rankings: list[np.ndarray], sample: list[int], labels: list[str]) -> float:
    """Mean precision@10 of same label over the sampled queries."""
    prec = [
        np.mean([labels[p] == labels[q] for p in r[:10]]) if len(r) else 0.0
        for r, q in zip(rankings, sample, strict=True)
    ]
    return round(float(np.mean(prec)), 4)


def labelled_tasks(settings, n_queries: int, demo_records: int):  # noqa: ANN001, ANN201
    """Per labelled collection (demo narratives, and FFT comments when present): its name,
    texts, labels, vectors, a fitted index and a seeded sample of query positions."""
    labelled = {"demo": load_demo_themes(settings, demo_records)}
    if FFT.is_file():
        labelled["fft"] = load_fft(settings)
    for name, (docs, labels) in labelled.items():
        keep = [i for i, t in enumerate(docs) if t.strip()]
        docs, labels = [docs[i] for i in keep], [labels[i] for i in keep]
        vecs = embed_cached(f"{name}_themes" if name == "demo" else name, docs, settings)
        ix = fit_index(settings, [f"{name}{i}" for i in range(len(docs))], docs, vecs)
        sample = random.Random(0).sample(range(len(docs)), min(n_queries, len(docs)))
        yield name, docs, labels, vecs, ix, sample


LONG_QUERY_SWEEP = (0, 10, 20, 40, NEVER)


def bench_query_weighting(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """`search.long_query_terms` swept on three tasks in one run, with all else configured:
    PFD MRR (test half; same-report retrieval), and precision@10 of same label on FFT
    comments and of same planted theme on demo narratives (sampled queries, self left
    out), for the hybrid and for BM25 alone, with the share of queries it weights."""
    s = settings.search
    tasks: dict[str, Any] = {}
    ids, queries, texts, qvec, index, _ = pfd_task(settings)
    test = list(range(1, len(ids), 2))
    tasks["pfd"] = (index, [queries[i] for i in test], qvec[test], None, test, None)
    for name, docs, labels, vecs, ix, sample in labelled_tasks(settings, n_queries, demo_records):
        tasks[name] = (ix, [docs[i] for i in sample], vecs[sample], sample, sample, labels)

    rows = []
    for threshold in LONG_QUERY_SWEEP:
        row: dict[str, Any] = {"long_query_terms": None if threshold == NEVER else threshold}
        for name, (ix, qs, qv, exclude, targets, labels) in tasks.items():
            lists = ranked_lists(ix, qs, qv, exclude, settings=settings, long_query_terms=threshold)
            hybrid = configured(lists, s)
            bm25 = [b[0] for b, _ in lists]
            if labels is None:
                row[f"{name}_hybrid"] = rank_metrics(hybrid, targets)["mrr"]
                row[f"{name}_bm25"] = rank_metrics(bm25, targets)["mrr"]
            else:
                row[f"{name}_hybrid"] = p10_of(hybrid, targets, labels)
                row[f"{name}_bm25"] = p10_of(bm25, targets, labels)
            swept = s.model_copy(update={"long_query_terms": threshold})
            row[f"{name}_weighted"] = long_query_share(ix, qs, swept)
        rows.append(row)
        print(f"long_query_terms={row['long_query_terms']}: {row}", flush=True)
    return {"rows": rows, "configured": s.long_query_terms, "tasks": list(tasks),
            "queries": n_queries, "demo_records": demo_records}  # fmt: skip


LONG_WEIGHTS = (None, 0.05, 0.1, 0.15, 0.2, 0.3)
"""Dense weights for long queries swept (None: `search.dense_weight` for every query)."""
REFERENCE_WEIGHT = 0.2
"""The dense weight both weight sweeps judge a candidate against, put in the swept weight's
place (the other weight kept as configured): the one weight for every query that the PFD
fusion grid chose before queries were split into short and long. Fixed, so that neither
sweep's rule moves when the other weight does."""


def sweep_tasks(settings, n_queries: int, demo_records: int, *, similar: bool = False):  # noqa: ANN001, ANN201
    """What the weight sweeps measure on: the PFD lists and halves, and per labelled task
    (demo, and FFT when present) its sampled records' lists typed as queries (and, with
    `similar`, as "more like this": task name + "_similar"), their positions and labels."""
    s = settings.search
    ids, queries, _, qvec, index, _ = pfd_task(settings)
    pfd = ranked_lists(index, queries, qvec, settings=settings)
    labelled = {}
    for name, docs, labels, vecs, ix, sample in labelled_tasks(settings, n_queries, demo_records):
        qs = [docs[i] for i in sample]
        lists = ranked_lists(ix, qs, vecs[sample], sample, settings=settings)
        labelled[name] = (lists, sample, labels)
        if similar:
            more = [similar_lists(ix, vecs[p], p, s) for p in sample]
            labelled[f"{name}_similar"] = (more, sample, labels)
    return pfd, pfd_halves(len(ids)), labelled


def similar_lists(ix: SearchIndex, vector: np.ndarray, pos: int, s) -> Lists:  # noqa: ANN001
    """The product's "more like this" lists for the indexed record at `pos`, itself left out."""
    tokens, weights = similar_terms(ix, pos, s)
    b = ix.bm25(tokens, n=POOL + 1, weights=weights)
    d = ix.dense(vector, n=POOL + 1)
    b = tuple(x[b[0] != pos][:POOL] for x in b)
    d = tuple(x[d[0] != pos][:POOL] for x in d)
    long = weights is not None
    return Lists(b, d, long, seq=ix.sequence_of(pos) if long else None, index=ix)


def sweep_row(row: dict[str, Any], rank, pfd, halves, labelled) -> dict[str, Any]:  # noqa: ANN001
    """`row` with PFD MRR per half and precision@10 per labelled task, ranking by `rank`."""
    ranked = rank(pfd)
    for half, idx in halves.items():
        row[f"pfd_{half}_mrr"] = rank_metrics([ranked[i] for i in idx], idx)["mrr"]
    for name, (lists, sample, labels) in labelled.items():
        row[f"{name}_p10"] = p10_of(rank(lists), sample, labels)
    return row


def best_keeping(rows: list[dict[str, Any]], base: dict[str, Any], tasks) -> dict[str, Any]:  # noqa: ANN001
    """The row of best PFD dev MRR among those losing at most BM25_MAX_LOSS precision@10
    on every task against `base`."""

    def keeps(row: dict[str, Any]) -> bool:
        return all(row[f"{n}_p10"] >= base[f"{n}_p10"] - BM25_MAX_LOSS for n in tasks)

    return max((r for r in rows if keeps(r)), key=lambda r: r["pfd_dev_mrr"])


def long_shares(pfd, labelled) -> dict[str, float]:  # noqa: ANN001
    """Share of each task's queries that are long (BM25 terms weighted)."""
    share = {n: round(float(np.mean([ls.long for ls in lists])), 3)
             for n, (lists, _, _) in labelled.items()}  # fmt: skip
    share["pfd"] = round(float(np.mean([ls.long for ls in pfd])), 3)
    return share


def bench_long_weight(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """`search.long_query_dense_weight` swept with all else configured: PFD MRR on the dev
    and test halves, and hybrid precision@10 on demo narratives (same planted theme) and
    FFT comments (same label), sampled queries, self left out. Short queries keep
    `search.dense_weight`, so only the long ones move.

    The choice: the best PFD dev MRR among the weights that lose at most BM25_MAX_LOSS
    precision@10 on demo or FFT data against REFERENCE_WEIGHT for long queries."""
    s = settings.search
    pfd, halves, labelled = sweep_tasks(settings, n_queries, demo_records)
    rows = []
    for w in LONG_WEIGHTS:
        row = sweep_row({"long_query_dense_weight": w}, lambda ls, w=w: configured(ls, s, w),
                        pfd, halves, labelled)  # fmt: skip
        rows.append(row)
        print(f"long-query dense weight {w}: {row}", flush=True)
    base = next(r for r in rows if r["long_query_dense_weight"] == REFERENCE_WEIGHT)
    best = best_keeping(rows[1:], base, labelled)
    return {"rows": rows, "chosen": best["long_query_dense_weight"],
            "configured": s.long_query_dense_weight, "dense_weight": s.dense_weight,
            "reference": REFERENCE_WEIGHT,
            "tasks": list(labelled), "long_share": long_shares(pfd, labelled),
            "queries": n_queries, "demo_records": demo_records,
            "max_loss": BM25_MAX_LOSS}  # fmt: skip


RERANK_DEPTHS = (10, 30, 50, 100)
PHRASE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def bench_rerank(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """`search.rerank_depth` and `search.phrase_weight` (word-pair re-ranking of long
    queries) swept with all else configured: PFD MRR on the dev and test halves, and
    hybrid precision@10 on demo narratives (same planted theme) and FFT comments (same
    label), for the sampled records typed as queries and for "more like this" on them
    (self left out). Weight 0 is the product without the re-ranking.

    The choice: the best PFD dev MRR among the settings that lose at most BM25_MAX_LOSS
    precision@10 on any labelled task against weight 0."""
    s = settings.search
    pfd, halves, labelled = sweep_tasks(settings, n_queries, demo_records, similar=True)
    rows = []
    for weight in PHRASE_WEIGHTS:
        for depth in RERANK_DEPTHS if weight else (0,):
            swept = s.model_copy(update={"phrase_weight": weight, "rerank_depth": depth})
            row = sweep_row({"rerank_depth": depth, "phrase_weight": weight},
                            lambda ls, swept=swept: configured(ls, swept), pfd, halves,
                            labelled)  # fmt: skip
            rows.append(row)
            print(f"word-pair re-ranking {depth} x {weight}: {row}", flush=True)
    best = best_keeping(rows, rows[0], labelled)
    return {"rows": rows, "chosen": {k: best[k] for k in ("rerank_depth", "phrase_weight")},
            "configured": {"rerank_depth": s.rerank_depth, "phrase_weight": s.phrase_weight},
            "tasks": list(labelled), "long_share": long_shares(pfd, labelled),
            "queries": n_queries, "demo_records": demo_records,
            "max_loss": BM25_MAX_LOSS}  # fmt: skip


SHORT_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PFD_MAX_LOSS = 0.002
"""How much PFD dev MRR a short-query dense weight may lose against REFERENCE_WEIGHT."""


def first_sentence(text: str) -> str:
    """A narrative's first sentence without its field label: what an investigator might
    type about the event ("His Apixaban was not stopped before surgery ...")."""
    body = text.split(":", 1)[1] if ":" in text.split(".", 1)[0] else text
    return body.strip().split(". ", 1)[0].split("\n", 1)[0].strip()


def bench_short_weight(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """`search.dense_weight`, the dense weight of a short query (fewer than
    `search.long_query_terms` distinct words), swept with all else configured (long queries
    keep `search.long_query_dense_weight`). Tasks: PFD MRR on the dev and test halves;
    precision@10 of same planted theme for demo narratives' first sentences as typed
    queries (`first_sentence`, self left out); of same label on FFT comments (all, the
    FFT table's sample); and on one FFT comment per distinct themed text (`distinct_themed`),
    2 x n_queries sampled queries split into a dev and a test half.

    The choice: the best distinct-FFT dev precision@10 among the weights that lose at most
    PFD_MAX_LOSS PFD dev MRR and BM25_MAX_LOSS demo precision@10 against REFERENCE_WEIGHT."""
    s = settings.search
    ids, queries, _, qvec, index, _ = pfd_task(settings)
    pfd = ranked_lists(index, queries, qvec, settings=settings)
    halves = pfd_halves(len(ids))
    tasks: dict[str, tuple[list, list[int], list[str]]] = {}
    for name, docs, labels, vecs, ix, sample in labelled_tasks(settings, n_queries, demo_records):
        if name == "demo":
            qs = [first_sentence(docs[i]) for i in sample]
            qv = embed_cached("demo_first_sentences", qs, settings)
            lists = ranked_lists(ix, qs, qv, sample, settings=settings)
            tasks["demo_short"] = (lists, sample, labels)
        else:
            qs = [docs[i] for i in sample]
            lists = ranked_lists(ix, qs, vecs[sample], sample, settings=settings)
            tasks["fft"] = (lists, sample, labels)
            rows = distinct_themed(docs, labels)
            d_docs, d_labels = [docs[i] for i in rows], [labels[i] for i in rows]
            d_ix = fit_index(settings, [f"D{i}" for i in range(len(rows))], d_docs, vecs[rows])
            d_sample = random.Random(1).sample(range(len(rows)), min(2 * n_queries, len(rows)))
            for half, part in (("dev", d_sample[0::2]), ("test", d_sample[1::2])):
                lists = ranked_lists(
                    d_ix, [d_docs[i] for i in part], vecs[rows][part], part, settings=settings
                )
                tasks[f"fft_distinct_{half}"] = (lists, part, d_labels)
    out = []
    for w in SHORT_WEIGHTS:
        sw = s.model_copy(update={"dense_weight": w})
        row: dict[str, Any] = {"dense_weight": w}
        ranked = configured(pfd, sw)
        for half, idx in halves.items():
            row[f"pfd_{half}_mrr"] = rank_metrics([ranked[i] for i in idx], idx)["mrr"]
        for name, (lists, sample, labels) in tasks.items():
            row[f"{name}_p10"] = p10_of(configured(lists, sw), sample, labels)
        out.append(row)
        print(f"short-query dense weight {w}: {row}", flush=True)
    base = next(r for r in out if r["dense_weight"] == REFERENCE_WEIGHT)

    def keeps(row: dict[str, Any]) -> bool:
        return (
            row["pfd_dev_mrr"] >= base["pfd_dev_mrr"] - PFD_MAX_LOSS
            and row.get("demo_short_p10", 0) >= base.get("demo_short_p10", 0) - BM25_MAX_LOSS
        )

    goal = "fft_distinct_dev_p10" if "fft_distinct_dev" in tasks else "demo_short_p10"
    best = max((r for r in out if keeps(r)), key=lambda r: r[goal])
    share = {n: round(float(np.mean([not ls.long for ls in lists])), 3)
             for n, (lists, _, _) in tasks.items()}  # fmt: skip
    share["pfd"] = round(float(np.mean([not ls.long for ls in pfd])), 3)
    return {"rows": out, "chosen": best["dense_weight"], "configured": s.dense_weight,
            "reference": REFERENCE_WEIGHT,
            "goal": goal, "tasks": list(tasks), "short_share": share, "queries": n_queries,
            "demo_records": demo_records, "max_pfd_loss": PFD_MAX_LOSS,
            "max_loss": BM25_MAX_LOSS}  # fmt: skip


SIMILAR_LIMITS = (16, 32, SIMILAR_TERMS, 128, NEVER)


def rarest_terms(index: SearchIndex, pos: int, limit: int = 64) -> list[int]:
    """The "more like this" query before this benchmark: the record's 64 rarest shared terms, each
    counted once (the baseline row; no longer the product's)."""
    tokens = np.asarray(index.tokens_of(pos), dtype=np.int64)
    df = index.document_frequency()
    keep = tokens[df[tokens] > 1]
    return keep[np.argsort(df[keep], kind="stable")][:limit].tolist()


def similar_query(
    ix: SearchIndex,
    text: str,
    pos: int,
    variant: str | int,
    s,  # noqa: ANN001
) -> tuple[list[int], np.ndarray | None]:
    """The BM25 query (terms, weights) of one "more like this" variant for record `pos`:
    "before" (64 rarest, unweighted), "typed" (its whole text as a query) or a term
    limit for the product's `similar_terms`."""
    if variant == "before":
        return rarest_terms(ix, pos), None
    if variant == "typed":
        return lexical_query(ix, text, s)
    return similar_terms(ix, pos, s, limit=int(variant))


def bench_similar(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """The "more like this" query (`themes similar`): precision@10 of same planted theme on demo
    narratives and of same label on FFT comments, for sampled indexed records (each
    left out of its own results), hybrid and BM25 alone: the product's query
    (`similar_terms`: a long record's top terms by TF-IDF, weighted) at several term
    limits, against the 64 rarest terms unweighted and the record's whole text typed
    as a query."""
    s = settings.search
    variants: dict[str, str | int] = {
        "64 rarest terms, unweighted (before)": "before",
        "whole text as a typed query": "typed",
    }
    for limit in SIMILAR_LIMITS:
        label = "all" if limit == NEVER else str(limit)
        tag = " (product)" if limit == SIMILAR_TERMS else ""
        variants[f"top {label} by TF-IDF, weighted{tag}"] = limit
    out: dict[str, Any] = {}
    for name, docs, labels, vecs, ix, sample in labelled_tasks(settings, n_queries, demo_records):
        rows = []
        for variant, how in variants.items():
            hybrid, bm25, n_terms = [], [], []
            for p in sample:
                tokens, weights = similar_query(ix, docs[p], p, how, s)
                n_terms.append(len(tokens))
                b = ix.bm25(tokens, n=POOL + 1, weights=weights)
                d = ix.dense(vecs[p], n=POOL + 1)
                b = tuple(x[b[0] != p][:POOL] for x in b)
                d = tuple(x[d[0] != p][:POOL] for x in d)
                w = fusion_weight(s, long=weights is not None)
                fused_ = fuse(b, d, method=s.fusion, rrf_k=s.rrf_k, dense_weight=w)
                if weights is not None:  # a long query is re-ranked, as `retrieve` does
                    seq = ix.query_sequence(docs[p]) if how == "typed" else ix.sequence_of(p)
                    fused_ = rerank(ix, fused_, seq, s)
                hybrid.append(fused_[0])
                bm25.append(b[0])
            rows.append({"query": variant, "hybrid": p10_of(hybrid, sample, labels),
                         "bm25": p10_of(bm25, sample, labels),
                         "mean_terms": round(float(np.mean(n_terms)), 1)})  # fmt: skip
            print(f"similar {name}: {rows[-1]}", flush=True)
        out[name] = {"records": len(docs), "queries": len(sample), "rows": rows}
    return {"tasks": out, "configured_limit": SIMILAR_TERMS,
            "long_query_terms": s.long_query_terms}  # fmt: skip


BM25_K1 = (1.2, 1.5, 2.0, 2.5, 3.0)
BM25_B = (0.75, 0.9, 1.0)
BM25_BEFORE = (1.5, 0.75)
"""The setting before this grid chose one (bm25s's own defaults are k1 1.5, b 0.75)."""
BM25_MAX_LOSS = 0.01
"""How much precision@10 on FFT or demo data a setting may lose against BM25_BEFORE."""


def load_demo_themes(settings, n: int, seed: int = 3) -> tuple[list[str], list[str]]:  # noqa: ANN001
    """De-identified demo narratives and their planted themes (cached)."""
    from bench_themes import demo_dataset

    key = hashlib.sha256((ROOT / "src" / "themes" / "demo.py").read_bytes()).hexdigest()[:12]
    return clean_labelled(
        settings, "demo_themes", f"{key}-{seed}-{n}", lambda: demo_dataset(n, seed=seed)
    )


def bench_bm25_params(settings, n_queries: int, demo_records: int) -> dict[str, Any]:  # noqa: ANN001
    """The product's lexical side alone (BM25; a long query's terms weighted as
    `search.long_query_terms` says) over a (k1, b) grid: PFD MRR on the dev and test
    halves, and precision@10 of same label on FFT comments and of same planted theme on
    demo data.

    The choice: the best PFD dev MRR among settings that lose at most BM25_MAX_LOSS
    precision@10 on FFT and on demo data against BM25_BEFORE, so that the setting is not
    tuned to one data set.
    """
    ids, queries, texts, qvec, index, _ = pfd_task(settings)
    dvec = np.asarray(index.vectors_, dtype=np.float32)
    halves = pfd_halves(len(ids))
    labelled = {}
    if FFT.is_file():
        labelled["fft"] = load_fft(settings)
    labelled["demo"] = load_demo_themes(settings, demo_records)

    def lexical(ix: SearchIndex, text: str, n: int) -> np.ndarray:
        tokens, weights = lexical_query(ix, text, settings.search)
        return ix.bm25(tokens, n=n, weights=weights)[0]

    def precision(ix: SearchIndex, docs: list[str], labels: list[str], sample: list[int]) -> float:
        out = []
        for q in sample:
            pos = [p for p in lexical(ix, docs[q], 11) if p != q][:10]
            out.append(np.mean([labels[p] == labels[q] for p in pos]) if pos else 0.0)
        return round(float(np.mean(out)), 4)

    prepared = {}
    for name, (docs, labels) in labelled.items():
        keep = [i for i, t in enumerate(docs) if t.strip()]
        docs, labels = [docs[i] for i in keep], [labels[i] for i in keep]
        names = [f"{name}{i}" for i in range(len(docs))]
        sample = random.Random(0).sample(range(len(docs)), min(n_queries, len(docs)))
        prepared[name] = (names, docs, labels, sample)
    rows = []
    for k1 in BM25_K1:
        for b in BM25_B:
            row: dict[str, Any] = {"k1": k1, "b": b}
            pfd = SearchIndex(bm25_k1=k1, bm25_b=b).fit(
                ids, ids, texts, dvec, dummy_meta(ids), model_id="m"
            )
            for half, idx in halves.items():
                ranked = [lexical(pfd, queries[i], POOL) for i in idx]
                row[f"pfd_{half}_mrr"] = rank_metrics(ranked, list(idx))["mrr"]
            for name, (names, docs, labels, sample) in prepared.items():
                ix = SearchIndex(bm25_k1=k1, bm25_b=b).fit(
                    names, names, docs, np.zeros((len(docs), 8), np.float32),
                    dummy_meta(names), model_id="m",
                )  # fmt: skip
                row[f"{name}_p10"] = precision(ix, docs, labels, sample)
            rows.append(row)
            print(f"BM25 k1={k1} b={b}: {row}", flush=True)
    before = next(r for r in rows if (r["k1"], r["b"]) == BM25_BEFORE)
    allowed = [
        r
        for r in rows
        if all(r[f"{n}_p10"] >= before[f"{n}_p10"] - BM25_MAX_LOSS for n in prepared)
    ]
    chosen = max(allowed, key=lambda r: r["pfd_dev_mrr"])
    s = settings.search
    return {
        "rows": rows,
        "before": {"k1": BM25_BEFORE[0], "b": BM25_BEFORE[1]},
        "chosen": {"k1": chosen["k1"], "b": chosen["b"]},
        "configured": {"k1": s.bm25_k1, "b": s.bm25_b},
        "max_loss": BM25_MAX_LOSS,
        "checked_on": sorted(prepared),
        "queries": n_queries,
        "demo_records": demo_records,
    }


def demo_store(seed: int, n: int, root: Path, settings):  # noqa: ANN001, ANN201
    """Demo exports through the product's steps: ingest, clean/de-identify, embed, factors
    and harm, index.

    The index and the planted pairs are cached in var/bench_cache, keyed by the seed, the
    size, the generator and de-identification code and their settings, so a rerun that
    changes only the duplicate scoring does not re-embed.
    """
    from themes import steps
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier
    from themes.demo import generate_demo
    from themes.factors import config_hash, update_factors
    from themes.search import update_index

    src = ROOT / "src" / "themes"
    code = "".join(
        (src / f).read_text() for f in ("demo.py", "deidentify.py", "clean.py", "harm.py")
    )
    sections = settings.section_hash("clean", "deidentify", "embed")
    key = hashlib.sha256(
        f"{seed}:{n}:{sections}:{config_hash(settings.factors)}:{code}".encode()
    ).hexdigest()[:16]
    cached = CACHE / f"dups_{seed}_{key}"
    if (cached / "truth.json").is_file():
        try:
            truth = {tuple(p) for p in json.loads((cached / "truth.json").read_text())}
            return SearchIndex.load(cached / "index"), truth
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt
            print(f"cache {cached} unusable ({e}); rebuilding")
    s = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update={"data_dir": root / "var"}),
            "store": settings.store.model_copy(update={"url": ""}),
        }
    )
    manifest = generate_demo(root / "exports", seed=seed, n_records=n)
    store = steps.open_store(s)
    for kind, path in manifest.files.items():
        steps.ingest_file(store, path, steps.resolve_source(s.ingest, kind=kind, source=None))
    steps.clean_pending(store, TextCleaner(s.clean), Deidentifier(s.deidentify))
    embedder = SentenceTransformerEmbedder(s.embed)
    steps.embed_all(store, embedder)
    update_factors(store, s, embedder=embedder)  # harm levels, as the nightly flow does
    index, _ = update_index(store, s)
    with manifest.labels_path.open(encoding="utf-8") as f:
        truth = {
            tuple(sorted((r["record_id"], r["is_duplicate_of"])))
            for r in csv.DictReader(f)
            if r["is_duplicate_of"]
        }
    indexed = set(index.ids_.tolist())
    truth = {p for p in truth if p[0] in indexed and p[1] in indexed}
    index.save(cached / "index")
    (cached / "truth.json").write_text(json.dumps(sorted(truth)))
    return index, truth


def pr(pred: set, truth: set) -> dict[str, float]:  # noqa: ANN001
    return pr_counts(len(pred & truth), len(pred), len(truth))


def pr_counts(tp: int, predicted: int, planted: int) -> dict[str, float]:
    """Precision, recall and F1 (4 decimals) from the counts."""
    p = tp / predicted if predicted else 1.0
    r = tp / planted if planted else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "predicted": predicted, "planted": planted}  # fmt: skip


DUP_CONTEXTS = (0, 10, 30)
"""Neighbour counts whose shared words the overlap discounts (0: none)."""

DUP_OVERLAPS = tuple((k, by_kind) for by_kind in (False, True) for k in DUP_CONTEXTS)
"""The word overlaps computed for each pair: (neighbour context, IDF judged by kind)."""

DUP_WINDOWS = (0, 1, 2, 3)
"""Event-date windows (days) calibrated with the score; pairs are blocked at the widest."""


def pair_features(
    index: SearchIndex,
    settings,  # noqa: ANN001
    blocked: bool,
    match_fields: list[str] | None = None,
) -> dict[tuple, tuple]:
    """(cosine, word overlap for each of DUP_OVERLAPS, patient-sex conflict, day gap) of
    every candidate pair: blocked as the product blocks (at the widest of DUP_WINDOWS, on
    `match_fields`, by default the configured ones), or every pair with cosine >= 0.5 when
    not blocked (day gap 0: no date window)."""
    from themes.duplicates import find_pairs, pair_overlap, sex_conflicts

    if blocked:
        pairs = find_pairs(
            index,
            np.arange(index.size),
            threshold=-1.0,
            max_days=max(DUP_WINDOWS),
            match_fields=settings.search.duplicate_match_fields
            if match_fields is None
            else match_fields,
        )
    else:
        v = np.asarray(index.vectors_, dtype=np.float32)
        sims = v @ v.T
        pairs = [
            (i, int(j), float(sims[i, j]), 0)
            for i in range(len(v))
            for j in np.flatnonzero(sims[i, i + 1 :] >= 0.5) + i + 1
        ]
    if not blocked:  # the cosine-only baseline needs no word overlap
        return {
            tuple(sorted((index.ids_[a], index.ids_[b]))): (c,)
            + (0.0,) * len(DUP_OVERLAPS)
            + (0.0, 0)
            for a, b, c, _ in pairs
        }
    # one overlap call per record with all its partners (the weights are per record)
    partners: dict[int, list[tuple[int, float, int]]] = {}
    for a, b, c, gap in pairs:
        partners.setdefault(a, []).append((b, c, gap))
    out = {}
    for a, rest in partners.items():
        others = np.array([b for b, *_ in rest], dtype=np.int64)
        overlaps = [
            pair_overlap(index, a, others, context=k, idf_by_kind=by_kind)
            for k, by_kind in DUP_OVERLAPS
        ]
        conflict = sex_conflicts(index, a, others)
        for j, (b, c, gap) in enumerate(rest):
            key = tuple(sorted((index.ids_[a], index.ids_[b])))
            out[key] = (c, *(float(o[j]) for o in overlaps), float(conflict[j]), gap)
    return out


def scored(
    features: dict[tuple, tuple],
    weight: float,
    overlap: tuple[int, bool] | int = 0,
    penalty: float = 0.0,
    window: int | None = None,
) -> dict[tuple, float]:
    """Each pair's duplicate score as the product computes it (see themes.duplicates), for
    the pairs whose event dates are at most `window` days apart (None: all candidates).
    `overlap` is (neighbour context, IDF by kind), or a context alone (global IDF)."""
    k = 1 + DUP_OVERLAPS.index(overlap if isinstance(overlap, tuple) else (overlap, False))
    return {
        p: (1 - weight) * f[0] + weight * f[k] - penalty * f[-2]
        for p, f in features.items()
        if window is None or f[-1] <= window
    }


def calibrate(
    scores: dict[tuple, float], truth: set, by: str = "f1"
) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """The best threshold on the pooled calibration seeds, and its fit.

    Keys carry their seed first (see `pooled`). `by="f1"` (the product's calibration)
    judges a threshold by the pooled F1. `by="worst"` judges it by the target's own
    criterion: the worst seed's lower of precision and recall, then the mean of that over
    the seeds, then the pooled F1 (reported as an alternative; see the readings).
    """
    fit_at = fitter(scores, truth)
    best_t, best = 1.0, {"f1": -1.0, "worst": -1.0, "mean": -1.0}
    for t in THRESHOLDS:
        fit = fit_at(t, t)
        if objective(fit, by) > objective(best, by):
            best_t, best = t, fit
    return best_t, best


THRESHOLDS = np.round(np.arange(0.2, 1.0, 0.01), 2).tolist()
"""The duplicate thresholds calibration tries (and reports)."""


def fitter(
    scores: dict[tuple, float], truth: set, cross: dict[tuple, bool] | None = None
) -> Callable[[float, float], dict[str, float]]:
    """fit(threshold, cross-kind threshold) of pooled `scores` against `truth`: the pooled
    F1, and the worst and mean over the seeds of the lower of precision and recall, as
    `pr` rounds them (one pass over arrays, not one set per seed and threshold)."""
    keys = list(scores)
    seeds = sorted({k[0] for k in scores} | {k[0] for k in truth})
    at = {seed: i for i, seed in enumerate(seeds)}
    s = np.array([scores[k] for k in keys], dtype=np.float64)
    c = np.array([bool(cross and cross[k]) for k in keys], dtype=bool)
    hit = np.array([k in truth for k in keys], dtype=bool)
    seed_of = np.array([at[k[0]] for k in keys], dtype=np.int64)
    planted = np.bincount([at[p[0]] for p in truth], minlength=len(seeds)).tolist()

    def fit(t: float, tc: float) -> dict[str, float]:
        pred = np.where(c, s >= tc, s >= t)
        tps = np.bincount(seed_of[pred & hit], minlength=len(seeds)).tolist()
        ns = np.bincount(seed_of[pred], minlength=len(seeds)).tolist()
        lows = [min(round(tp / n, 4) if n else 1.0, round(tp / m, 4) if m else 1.0)
                for tp, n, m in zip(tps, ns, planted, strict=True)]  # fmt: skip
        return {"f1": pr_counts(sum(tps), sum(ns), len(truth))["f1"], "worst": min(lows),
                "mean": round(float(np.mean(lows)), 4)}  # fmt: skip

    return fit


def objective(fit: dict[str, float], by: str = "f1") -> tuple[float, ...]:
    """How `calibrate` ranks fits (see there)."""
    if by == "f1":
        return (fit["f1"],)
    return fit["worst"], fit["mean"], fit["f1"]


def calibrate_two(
    scores: dict[tuple, float], cross: dict[tuple, bool], truth: set, by: str = "f1"
) -> tuple[tuple[float, float], dict[str, float]]:
    """The best pair of thresholds (same kind, different kinds) on the pooled calibration
    seeds, judged as `calibrate` judges one; `cross` says which pairs join two kinds. Ties
    go to the two thresholds nearest each other, then the lower."""
    fit_at = fitter(scores, truth, cross)
    best_ts, best, best_key = (1.0, 1.0), {}, None
    for t in THRESHOLDS:
        for tc in THRESHOLDS:
            fit = fit_at(t, tc)
            key = (*objective(fit, by), -round(abs(t - tc), 2))
            if best_key is None or key > best_key:
                best_ts, best, best_key = (t, tc), fit, key
    return best_ts, best


def pooled(per_seed: dict[int, dict[tuple, Any]], seeds: list[int]) -> dict[tuple, Any]:
    """Pairs of several seeds in one dict (keys carry the seed, so ids never collide)."""
    return {(seed, *pair): v for seed in seeds for pair, v in per_seed[seed].items()}


PRODUCT = "product (date+place blocking, cosine + word overlap, sex check)"
"""The near-duplicate row that the configuration follows."""

NO_HARM = "blocked without harm"
"""Key of the candidate pairs blocked on the configured match fields less `harm`."""


def bench_dups(settings, n: int, cal_seeds: list[int], eval_seeds: list[int]) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"records_per_seed": n, "calibration_seeds": cal_seeds,
                           "evaluation_seeds": eval_seeds,
                           "match_fields": settings.search.duplicate_match_fields}  # fmt: skip
    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [*cal_seeds, *eval_seeds]:
            t0 = time.perf_counter()
            data[seed] = demo_store(seed, n, Path(tmp) / str(seed), settings)
            print(f"demo seed {seed}: {time.perf_counter() - t0:.0f} s")
    feats: dict[Any, dict[int, dict[tuple, tuple]]] = {
        blocked: {seed: pair_features(ix, settings, blocked) for seed, (ix, _) in data.items()}
        for blocked in (True, False)
    }
    # the ablation of the harm-level match: blocked on the other configured fields only
    fields = settings.search.duplicate_match_fields
    if "harm" in fields:
        others = [f for f in fields if f != "harm"]
        feats[NO_HARM] = {
            seed: pair_features(ix, settings, True, others) for seed, (ix, _) in data.items()
        }
    # calibration pools the planted pairs of every calibration seed (about 20 per seed)
    truth_cal = {(seed, *pair) for seed in cal_seeds for pair in data[seed][1]}
    cal = {blocked: pooled(feats[blocked], cal_seeds) for blocked in feats}
    # which candidate pairs join two kinds (a complaint or claim against an incident)
    kind_of = {
        seed: dict(zip(ix.ids_.tolist(), ix.meta_["kind"].astype(str).tolist(), strict=True))
        for seed, (ix, _) in data.items()
    }
    cross = {
        blocked: {seed: {p: kind_of[seed][p[0]] != kind_of[seed][p[1]] for p in f[seed]}
                  for seed in f}
        for blocked, f in feats.items()
    }  # fmt: skip
    cross_cal = {blocked: pooled(cross[blocked], cal_seeds) for blocked in feats}
    # the product: neighbour context, weight and threshold chosen together on calibration,
    # with the configured patient-sex conflict penalty (and, for the ablation, without it)
    penalty = settings.search.duplicate_sex_conflict_penalty
    grid = [round(w, 2) for w in np.arange(0.0, 1.01, 0.1)]

    def best_fit(
        pen: float,
        windows: tuple[int, ...],
        blocking: Any = True,
        by: str = "f1",
        overlaps: tuple[tuple[int, bool], ...] = DUP_OVERLAPS,
    ) -> tuple[int, tuple[int, bool], float, dict]:
        fits = {
            (d, k, w): calibrate(scored(cal[blocking], w, k, pen, d), truth_cal, by)
            for d in windows
            for k in overlaps
            for w in grid
        }
        # ties: the wider date window, the weight nearer 0.5, the smaller context, global IDF
        d, k, w = max(fits, key=lambda dkw: (*objective(fits[dkw][1], by), dkw[0],
                                             -abs(dkw[2] - 0.5), -dkw[1][0],
                                             -int(dkw[1][1])))  # fmt: skip
        return d, k, w, fits

    best_d, best_k, best_w, fits = best_fit(penalty, DUP_WINDOWS)
    _, two_k, two_w, _ = best_fit(penalty, (2,))
    _, plain_k, plain_w, plain_fits = best_fit(0.0, (best_d,))
    worst_d, worst_k, worst_w, _ = best_fit(penalty, DUP_WINDOWS, by="worst")
    global_idf = tuple(o for o in DUP_OVERLAPS if not o[1])
    _, gl_k, gl_w, _ = best_fit(penalty, (best_d,), overlaps=global_idf)
    out["calibration"] = {
        f"window {d}, context {k[0]}, idf by kind {k[1]}, weight {w}": {"threshold": t, **f}
        for (d, k, w), (t, f) in fits.items()
    }
    no_ctx_w = max(
        grid, key=lambda w: (*objective(plain_fits[(best_d, (0, False), w)][1]), -abs(w - 0.5))
    )
    nh_k, nh_w = best_k, best_w
    if NO_HARM in feats:
        _, nh_k, nh_w, _ = best_fit(penalty, (best_d,), NO_HARM)
    methods = {
        PRODUCT: (True, best_w, best_k, penalty, best_d),
        "product with one threshold for every pair (not by kinds)": (
            True, best_w, best_k, penalty, best_d),
        "product with a 2-day date window": (True, two_w, two_k, penalty, 2),
        "product calibrated on the worst seed, not F1": (
            True, worst_w, worst_k, penalty, worst_d, "worst"),
        "product with IDF over all records (not by kind)": (True, gl_w, gl_k, penalty, best_d),
        **({"product without the harm-level match": (NO_HARM, nh_w, nh_k, penalty, best_d)}
           if NO_HARM in feats else {}),
        "product without the sex check": (True, plain_w, plain_k, 0.0, best_d),
        "blocking, cosine + word overlap without context": (
            True, no_ctx_w, (0, False), 0.0, best_d),
        "blocking, cosine only": (True, 0.0, 0, 0.0, best_d),
        "blocking, word overlap only (no context)": (True, 1.0, 0, 0.0, best_d),
        "cosine only (no blocking)": (False, 0.0, 0, 0.0, None),
    }  # fmt: skip
    for name, (blocked, w, k, pen, d, *by) in methods.items():
        # the product's rows calibrate a threshold for pairs of one kind and one for pairs
        # of two kinds; the baselines and the "one threshold" row one for all pairs
        two = name.startswith("product") and "one threshold" not in name
        if two:
            (t, tc), _ = calibrate_two(
                scored(cal[blocked], w, k, pen, d), cross_cal[blocked], truth_cal, *by
            )
        else:
            t, _ = calibrate(scored(cal[blocked], w, k, pen, d), truth_cal, *by)
            tc = t
        k = k if isinstance(k, tuple) else (k, False)
        rows: dict[str, Any] = {"lexical_weight": w, "context": k[0], "idf_by_kind": k[1],
                                "sex_penalty": pen, "date_window": d, "threshold": t,
                                "cross_kind_threshold": tc}  # fmt: skip
        for seed in eval_seeds:
            sc = scored(feats[blocked][seed], w, k, pen, d)
            x = cross[blocked][seed]
            rows[f"seed {seed}"] = pr(
                {p for p, s in sc.items() if s >= (tc if x[p] else t)}, data[seed][1]
            )
        out[name] = rows
    # a learned mix of every pair feature: does a richer model than one score beat it?
    out["logistic regression on every pair feature"] = logistic_row(
        feats[True], cal_seeds, eval_seeds, truth_cal, {s: d[1] for s, d in data.items()}, best_d
    )
    cfg_w, cfg_t = settings.search.duplicate_lexical_weight, settings.search.duplicate_threshold
    cfg_tc = settings.search.duplicate_cross_kind_threshold
    cfg_k = (settings.search.duplicate_context, settings.search.duplicate_idf_by_kind)
    cfg_d = settings.search.duplicate_max_days
    if cfg_k not in DUP_OVERLAPS or cfg_d not in DUP_WINDOWS:
        return out
    out["configured"] = {
        "lexical_weight": cfg_w,
        "context": cfg_k[0],
        "idf_by_kind": cfg_k[1],
        "sex_penalty": penalty,
        "date_window": cfg_d,
        "threshold": cfg_t,
        "cross_kind_threshold": cfg_tc,
        **{
            f"seed {seed}": pr(
                {
                    p
                    for p, s in scored(feats[True][seed], cfg_w, cfg_k, penalty, cfg_d).items()
                    if s >= (cfg_tc if cross[True][seed][p] else cfg_t)
                },
                data[seed][1],
            )
            for seed in eval_seeds
        },
    }
    out["precision_stability"] = dup_precision_stability(settings, n, eval_seeds[0])
    out["rank_first"] = rank_first(data, settings)
    return out


def rank_first(data: dict[int, tuple[SearchIndex, set]], settings) -> dict[str, Any]:  # noqa: ANN001
    """How often a planted duplicate's partner is the first of its configured candidates
    (most similar first), checked from both records of every planted pair of every seed."""
    from themes.duplicates import candidates, check_args

    kw = check_args(settings.search)
    checked, first, misses = 0, 0, []
    for seed, (ix, truth) in sorted(data.items()):
        for a, b in sorted(truth):
            for dup, partner in ((a, b), (b, a)):
                cand, _ = candidates(ix, ix.position(dup), **kw)
                checked += 1
                if len(cand) and ix.ids_[cand[0]] == partner:
                    first += 1
                else:
                    misses.append([seed, dup, partner])
    return {"seeds": sorted(data), "checked": checked, "first": first, "misses": misses[:20]}


def logistic_row(
    feats: dict[int, dict[tuple, tuple]],
    cal_seeds: list[int],
    eval_seeds: list[int],
    truth_cal: set,
    truth: dict[int, set],
    window: int,
) -> dict[str, Any]:
    """A logistic regression on every feature of a blocked pair (cosine, the six word
    overlaps, the sex conflict, the day gap), fitted on the calibration seeds' pairs within
    `window` days, its probability threshold calibrated by F1 as the product's score is;
    then applied to each evaluation seed. A check on the product's single score, not a
    method the product ships."""
    from sklearn.linear_model import LogisticRegression

    def pairs(seeds: list[int]) -> tuple[list[tuple], np.ndarray]:
        keys = [(s, *p) for s in seeds for p, f in feats[s].items() if f[-1] <= window]
        x = np.array([feats[k[0]][k[1:]] for k in keys], dtype=np.float64).reshape(len(keys), -1)
        return keys, x

    keys, x = pairs(cal_seeds)
    model = LogisticRegression(max_iter=5000).fit(x, np.array([k in truth_cal for k in keys]))
    t, _ = calibrate(dict(zip(keys, model.predict_proba(x)[:, 1], strict=True)), truth_cal)
    row: dict[str, Any] = {"lexical_weight": "learned", "context": "0, 10, 30",
                           "idf_by_kind": "both", "sex_penalty": "learned",
                           "date_window": window, "threshold": t}  # fmt: skip
    for seed in eval_seeds:
        keys, x = pairs([seed])
        prob = model.predict_proba(x)[:, 1] if keys else np.zeros(0)
        pred = {k[1:] for k, p in zip(keys, prob, strict=True) if p >= t}
        row[f"seed {seed}"] = pr(pred, truth[seed])
    return row


def dup_precision_stability(settings, n: int, seed: int) -> dict[str, Any]:  # noqa: ANN001
    """How far the configured duplicate scores move when the demo store of `seed` is
    embedded in float32 instead of the configured arithmetic: the largest change over the
    candidate pairs both stores share, and over those at or near (0.03) the threshold."""
    ss = settings.search
    resolved = SentenceTransformerEmbedder(settings.embed).precision
    if resolved == "float32":
        # `auto` on a CPU without native bfloat16 is float32: both stores would be the same
        # arithmetic and the comparison a trivial 0, so none is made
        return {"seed": seed, "precision": settings.embed.precision, "resolved": resolved,
                "compared": False}  # fmt: skip
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in (resolved, "float32"):
            s = settings.model_copy(
                update={"embed": settings.embed.model_copy(update={"precision": precision})}
            )
            ix, _ = demo_store(seed, n, Path(tmp) / precision, s)
            scores[precision] = scored(pair_features(ix, s, True), ss.duplicate_lexical_weight,
                                       (ss.duplicate_context, ss.duplicate_idf_by_kind),
                                       ss.duplicate_sex_conflict_penalty,
                                       ss.duplicate_max_days)  # fmt: skip
    a, b = scores[resolved], scores["float32"]
    common = set(a) & set(b)
    near = [p for p in common if max(a[p], b[p]) >= ss.duplicate_threshold - 0.03]
    return {"seed": seed, "precision": settings.embed.precision, "resolved": resolved,
            "compared": True, "pairs": len(common),
            "max_change": round(max((abs(a[p] - b[p]) for p in common), default=0.0), 4),
            "near_threshold": len(near),
            "max_change_near_threshold": round(max((abs(a[p] - b[p]) for p in near),
                                                   default=0.0), 4),
            "decided_differently": sum((a[p] >= ss.duplicate_threshold)
                                       != (b[p] >= ss.duplicate_threshold) for p in common),
            }  # fmt: skip


def thresholds(row: dict[str, Any]) -> str:
    """A near-duplicate row's threshold, or its two (one kind / two kinds) where they differ."""
    t, tc = row["threshold"], row.get("cross_kind_threshold", row["threshold"])
    return f"{t}" if tc == t else f"{t} / {tc}"


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Similar-case search quality", ""]
    if "pfd" in res:
        p = res["pfd"]
        lines += [
            f"**PFD reports** ({p['reports']} reports; index: concerns + investigation; "
            "query: circumstances; relevant: the same report). Fusion chosen on the dev half "
            f"(even rows): {p['chosen_on_dev']}; configured: {p['configured']}.",
            "",
        ]
        test = p["splits"]["test"]
        best_single = max(test["bm25"]["mrr"], test["dense"]["mrr"])
        gain = round(test["hybrid (configured)"]["mrr"] - best_single, 4)
        lines += [
            f"On the test half the configured hybrid is **{gain:+.4f} MRR** against the better "
            "single method, BM25 alone or dense alone "
            f"(target ≥ +0.05: {'met' if gain >= 0.05 else '**missed**'}).",
            "",
        ]
        lexical = test.get("bm25, long queries TF-IDF-weighted (the product's lexical side alone)")
        if lexical is not None:
            own = round(test["hybrid (configured)"]["mrr"] - lexical["mrr"], 4)
            lines += [
                "Part of that gain is the lexical side's: the product's BM25, which weights "
                "the terms of a long query by TF-IDF (`search.long_query_terms`), scores "
                f"{lexical['mrr']} alone, and the hybrid is **{own:+.4f}** against it.",
                "",
            ]
        plain = test.get("hybrid without word-pair re-ranking (phrase_weight 0)")
        if plain is not None:
            lines += [
                "Without the word-pair re-ranking of long queries (`search.phrase_weight` 0) "
                f"the hybrid scores {plain['mrr']} "
                f"({round(plain['mrr'] - best_single, 4):+.4f} against the better single method).",
                "",
            ]
        for split in ("test", "all"):
            rows = [
                [m, v["mrr"], v["recall@1"], v["recall@10"], v["queries"]]
                for m, v in p["splits"][split].items()
            ]
            header = ["method", "MRR", "recall@1", "recall@10", "queries"]
            lines += [f"_{split} queries_", "", md_table(header, rows), ""]
    if "pfd_alternatives" in res:
        a = res["pfd_alternatives"]
        gain = round(a["best_mix_test_mrr"] - a["best_single_test_mrr"], 4)
        lines += [
            "_Other mixes of the same signals_ (whole-corpus z-scores, weights chosen on the "
            "dev half, MRR on both halves): the best mix is "
            f"**{gain:+.4f}** MRR on the test half against the best single signal.",
            "",
            md_table(
                ["signals", "weights", "dev MRR", "test MRR"],
                [
                    [r["method"], r["weights"] or "—", r["dev_mrr"], r["test_mrr"]]
                    for r in a["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "query_weighting" in res:
        q = res["query_weighting"]
        names = {"pfd": "PFD test MRR", "fft": "FFT p@10", "demo": "demo p@10"}
        header = ["long_query_terms"]
        for t in q["tasks"]:
            header += [f"{names[t]} hybrid", f"{names[t]} BM25", f"{t} queries weighted"]
        lines += [
            "_Long-query term weighting_ (`search.long_query_terms`, configured "
            f"{q['configured']}; — = never): a query with at least this many distinct "
            "indexed words weights them by (1 + ln count) × idf in BM25. Everything else as "
            f"configured; FFT and demo: {q['queries']} sampled queries, self excluded; demo: "
            f"{q['demo_records']} records, same planted theme.",
            "",
            md_table(
                header,
                [
                    [r["long_query_terms"] if r["long_query_terms"] is not None else "—"]
                    + [r[f"{t}_{c}"] for t in q["tasks"] for c in ("hybrid", "bm25", "weighted")]
                    for r in q["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "long_weight" in res:
        lw = res["long_weight"]
        names = {"fft": "FFT p@10 hybrid", "demo": "demo p@10 hybrid"}
        share = ", ".join(f"{t} {v}" for t, v in lw["long_share"].items())
        lines += [
            "_Dense weight of long queries_ (`search.long_query_dense_weight`, configured "
            f"{lw['configured']}; — = `dense_weight` {lw['dense_weight']} for every query): "
            "the weight a query long enough to have its BM25 terms weighted fuses its dense "
            f"side with (share of such queries: {share}). Short queries keep "
            "`dense_weight`. Chosen: the best PFD dev MRR among weights that lose at most "
            f"{lw['max_loss']} precision@10 on demo or FFT data against the reference weight "
            f"{lw.get('reference', lw['dense_weight'])} for long queries: "
            f"**{lw['chosen'] if lw['chosen'] is not None else '—'}**. FFT and demo: "
            f"{lw['queries']} sampled queries, self excluded.",
            "",
            md_table(
                [
                    "long_query_dense_weight",
                    "PFD dev MRR",
                    "PFD test MRR",
                    *[names[t] for t in lw["tasks"]],
                ],
                [
                    [
                        r["long_query_dense_weight"]
                        if r["long_query_dense_weight"] is not None
                        else "—",
                        r["pfd_dev_mrr"],
                        r["pfd_test_mrr"],
                        *[r[f"{t}_p10"] for t in lw["tasks"]],
                    ]
                    for r in lw["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "rerank" in res:
        rr = res["rerank"]
        names = {"fft": "FFT p@10", "demo": "demo p@10", "fft_similar": "FFT more-like-this p@10",
                 "demo_similar": "demo more-like-this p@10"}  # fmt: skip
        share = ", ".join(f"{t} {v}" for t, v in rr["long_share"].items())
        lines += [
            "_Word-pair re-ranking of long queries_ (`search.rerank_depth` × "
            f"`search.phrase_weight`, configured {rr['configured']}; weight 0 = off): a long "
            "query's top fused results re-ordered by min-max(fused) + weight × min-max(TF-IDF "
            "cosine over words and adjacent word pairs) (share of long queries: "
            f"{share}). Chosen: the best PFD dev MRR among settings that lose at most "
            f"{rr['max_loss']} precision@10 on any labelled task against weight 0: "
            f"**{rr['chosen']}**. FFT and demo: {rr['queries']} sampled records, typed as a "
            'query and as "more like this", self excluded.',
            "",
            md_table(
                [
                    "rerank_depth",
                    "phrase_weight",
                    "PFD dev MRR",
                    "PFD test MRR",
                    *[names.get(t, t) for t in rr["tasks"]],
                ],
                [
                    [
                        r["rerank_depth"],
                        r["phrase_weight"],
                        r["pfd_dev_mrr"],
                        r["pfd_test_mrr"],
                        *[r[f"{t}_p10"] for t in rr["tasks"]],
                    ]
                    for r in rr["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "short_weight" in res:
        sw = res["short_weight"]
        names = {
            "demo_short": "demo first sentences p@10",
            "fft": "FFT p@10",
            "fft_distinct_dev": "distinct FFT dev p@10",
            "fft_distinct_test": "distinct FFT test p@10",
        }
        share = ", ".join(f"{t} {v}" for t, v in sw["short_share"].items())
        lines += [
            "_Dense weight of short queries_ (`search.dense_weight`, configured "
            f"{sw['configured']}; long queries keep `long_query_dense_weight`): share of short "
            f"queries per task: {share}. Demo: the first sentence of {sw['queries']} sampled "
            "narratives as a typed query, same planted theme; distinct FFT: one comment per "
            f"distinct text with a theme label, {sw['queries']} dev and {sw['queries']} test "
            "queries. Chosen: the best distinct FFT dev "
            f"precision@10 among weights losing at most {sw['max_pfd_loss']} PFD dev MRR and "
            f"{sw['max_loss']} demo precision@10 against the reference weight "
            f"{sw.get('reference', sw['configured'])}: "
            f"**{sw['chosen']}**.",
            "",
            md_table(
                ["dense_weight", "PFD dev MRR", "PFD test MRR", *[names[t] for t in sw["tasks"]]],
                [
                    [
                        r["dense_weight"],
                        r["pfd_dev_mrr"],
                        r["pfd_test_mrr"],
                        *[r[f"{t}_p10"] for t in sw["tasks"]],
                    ]
                    for r in sw["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "bm25_params" in res:
        g = res["bm25_params"]
        cols = [c for c in ("fft", "demo") if c in g["checked_on"]]
        names = {"fft": "FFT p@10", "demo": "demo p@10"}
        lines += [
            "_BM25 parameters_ (the product's lexical side alone: its index, long queries "
            "weighted). Chosen: the best PFD dev "
            f"MRR among settings that lose at most {g['max_loss']} precision@10 on "
            f"{' and '.join(names[c].split()[0] for c in cols)} against the earlier setting "
            f"k1 {g['before']['k1']}, b {g['before']['b']} ({g['queries']} sampled queries "
            f"each, self excluded; demo: {g['demo_records']} records, same planted theme). "
            f"Chosen k1 {g['chosen']['k1']}, b {g['chosen']['b']}; configured k1 "
            f"{g['configured']['k1']}, b {g['configured']['b']}.",
            "",
            md_table(
                ["k1", "b", "PFD dev MRR", "PFD test MRR", *[names[c] for c in cols]],
                [
                    [
                        r["k1"],
                        r["b"],
                        r["pfd_dev_mrr"],
                        r["pfd_test_mrr"],
                        *[r[f"{c}_p10"] for c in cols],
                    ]
                    for r in g["rows"]
                ],
            ),  # fmt: skip
            "",
        ]
    if "fft" in res:
        f = res["fft"]
        lines += [
            f"**FFT comments** ({f['comments']} de-identified comments, {f['labels']} labels; "
            f"{f['queries']} sampled queries, self excluded): precision@10 of same label.",
            "",
            md_table(["method", "precision@10"], [[k, v] for k, v in f["precision@10"].items()]),
            "",
        ]
        if "distinct_themed" in f:
            d = f["distinct_themed"]
            lines += [
                f"**FFT comments, one per distinct text with a theme label** ({d['comments']} "
                f"comments, {d['labels']} labels; {d['queries']} sampled queries, self "
                f"excluded): the {f['repeats']} rows that repeat another's text (the commonest, "
                f"{f['commonest'][0]!r}, {f['commonest'][1]} times) and the labels "
                '"Labelling not possible" and "Not assigned" left out, so that no query is '
                "answered by its own copies.",
                "",
                md_table(
                    ["method", "precision@10"], [[k, v] for k, v in d["precision@10"].items()]
                ),
                "",
            ]
    if "similar" in res:
        m = res["similar"]
        tasks = list(m["tasks"])
        names = {"demo": "demo p@10", "fft": "FFT p@10"}
        by_task = {t: {r["query"]: r for r in m["tasks"][t]["rows"]} for t in tasks}
        queries = list(by_task[tasks[0]])
        detail = "; ".join(
            f"{t}: {m['tasks'][t]['queries']} of {m['tasks'][t]['records']} records" for t in tasks
        )
        lines += [
            '**"More like this"** (`themes similar RECORD_ID`): precision@10 of same planted '
            "theme (demo) and same label (FFT) for sampled indexed records, each left out of "
            f"its own results ({detail}). The product's query is a record's shared terms; one "
            f"with at least {m['long_query_terms']} of them (`search.long_query_terms`) keeps "
            f"its top {m['configured_limit']} by TF-IDF and weights them as a long typed "
            "query. Dense side: the record's stored vector.",
            "",
            md_table(
                ["BM25 query"]
                + [f"{names[t]} {c}" for t in tasks for c in ("hybrid", "BM25")]
                + [f"{t} mean terms" for t in tasks],
                [
                    [q]
                    + [by_task[t][q][c] for t in tasks for c in ("hybrid", "bm25")]
                    + [by_task[t][q]["mean_terms"] for t in tasks]
                    for q in queries
                ],
            ),  # fmt: skip
            "",
        ]
    if "duplicates" in res:
        d = res["duplicates"]
        lines += [
            f"**Near-duplicates** on demo data ({d['records_per_seed']} records per seed; "
            f"blocking on event date and {', '.join(d.get('match_fields', []))}; date window, "
            "lexical weight, context, IDF by kind and threshold calibrated together on the "
            "pooled planted "
            "pairs of seeds "
            f"{', '.join(map(str, d.get('calibration_seeds', [d.get('calibration_seed')])))} "
            "(best F1); with those, the product's rows calibrate one threshold for pairs "
            "of one kind and one for pairs of two kinds (a complaint or claim against an "
            "incident) together; then all are applied to the evaluation seeds).",
            "",
        ]
        names = [k for k in d if isinstance(d[k], dict) and "lexical_weight" in d[k]]
        rows = []
        for name in names:
            for seed in d["evaluation_seeds"]:
                r = d[name][f"seed {seed}"]
                w, t = d[name]["lexical_weight"], thresholds(d[name])
                window = d[name].get("date_window", "—")
                rows.append([name, window if window is not None else "—", w,
                             d[name].get("context", 0),
                             idf if isinstance(idf := d[name].get("idf_by_kind"), str)
                             else "yes" if idf else "no", t, seed,
                             r["precision"], r["recall"], r["predicted"],
                             r["planted"]])  # fmt: skip
        lines += [md_table(["method", "date window (days)", "word weight", "context",
                            "IDF by kind", "threshold (one kind / two kinds)", "seed",
                            "precision", "recall", "predicted", "planted"], rows),
                  ""]  # fmt: skip
        product = next((k for k in names if k.startswith("product")), None)
        if product is not None:
            r = d[product]
            worst = min(
                min(r[f"seed {s}"]["precision"], r[f"seed {s}"]["recall"])
                for s in d["evaluation_seeds"]
            )
            verdict = "met" if worst >= 0.9 else "**missed**"
            per = [r[f"seed {s}"] for s in d["evaluation_seeds"]]
            tp = sum(round(x["precision"] * x["predicted"]) for x in per)
            pooled_p = round(tp / max(1, sum(x["predicted"] for x in per)), 4)
            pooled_r = round(tp / max(1, sum(x["planted"] for x in per)), 4)
            lines += [f"Calibrated settings (date window {r.get('date_window')} days, word "
                      f"weight {r['lexical_weight']}, context {r.get('context', 0)}, IDF by "
                      f"kind {'yes' if r.get('idf_by_kind') else 'no'}, threshold "
                      f"{thresholds(r)}): the lowest "
                      f"precision or recall over the evaluation seeds is **{worst}** "
                      f"(target ≥ 0.9: {verdict}); pooled over them, precision {pooled_p} and "
                      f"recall {pooled_r}.", ""]  # fmt: skip
            rf = d.get("rank_first")
            if rf:
                lines += [f"Ranked first: from either record of a planted pair, its partner "
                          f"is the first of the record's configured candidates in "
                          f"{rf['first']} of {rf['checked']} checks (seeds "
                          f"{rf['seeds'][0]}-{rf['seeds'][-1]}).", ""]  # fmt: skip
            st = d.get("precision_stability")
            if st and st.get("compared") is False:
                lines += [f"Embedding arithmetic: not compared. `embed.precision` "
                          f"{st['precision']} gives {st['resolved']} on this host, the "
                          "same arithmetic as the float32 reference.", ""]  # fmt: skip
            elif st:
                caveat = ("" if "resolved" in st else
                          " (this result does not record what `auto` resolved to: on a host "
                          "without native bfloat16 both stores are float32 and a 0 means "
                          "nothing)")  # fmt: skip
                lines += [f"Embedding arithmetic: with the demo store of seed {st['seed']} "
                          f"embedded in float32 instead of {st.get('resolved', st['precision'])}"
                          f"{caveat}, the configured "
                          f"score of the {st['pairs']} candidate pairs moves by at most "
                          f"{st['max_change']} ({st['max_change_near_threshold']} for the "
                          f"{st['near_threshold']} within 0.03 of the threshold or above); "
                          f"{st['decided_differently']} pair(s) decided differently.",
                          ""]  # fmt: skip
            c = d.get("configured")
            chosen = (r["lexical_weight"], r.get("context", 0), thresholds(r),
                      r.get("date_window"), bool(r.get("idf_by_kind")))  # fmt: skip
            shipped = (c["lexical_weight"], c.get("context", 0), thresholds(c),
                       c.get("date_window"), bool(c.get("idf_by_kind"))) if c else None  # fmt: skip
            if c and shipped != chosen:
                lines += [f"_The configuration shipped during this run (date window "
                          f"{c.get('date_window')}, word weight {c['lexical_weight']}, context "
                          f"{c.get('context', 0)}, IDF by kind "
                          f"{'yes' if c.get('idf_by_kind') else 'no'}, threshold "
                          f"{thresholds(c)}) differs from the "
                          "calibrated settings; `config/themes.toml` is to be set to the "
                          "calibrated ones._", ""]  # fmt: skip
    lines += ["Command: `python benchmarks/bench_search.py`"]
    return "\n".join(lines)


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-pfd", action="store_true")
    ap.add_argument("--skip-fft", action="store_true")
    ap.add_argument("--skip-dups", action="store_true")
    ap.add_argument("--skip-bm25-params", action="store_true")
    ap.add_argument("--skip-weighting", action="store_true", help="no long-query sweep")
    ap.add_argument("--skip-similar", action="store_true", help='no "more like this" part')
    ap.add_argument("--skip-long-weight", action="store_true", help="no long-query weight sweep")
    ap.add_argument("--skip-rerank", action="store_true", help="no word-pair re-ranking sweep")
    ap.add_argument("--skip-short-weight", action="store_true", help="no short-query weight sweep")
    ap.add_argument("--bm25-queries", type=int, default=500)
    ap.add_argument("--bm25-demo-records", type=int, default=2000)
    ap.add_argument("--fft-queries", type=int, default=500)
    ap.add_argument("--dup-records", type=int, default=2000)
    ap.add_argument("--dup-cal-seeds", type=int, nargs="+", default=list(range(101, 126)))
    ap.add_argument("--dup-eval-seeds", type=int, nargs="+", default=list(range(126, 136)))
    ap.add_argument("--markdown-only", action="store_true", help="Re-render the saved results.")
    args = ap.parse_args()
    if args.markdown_only:
        saved = json.loads((RESULTS / "search_quality.json").read_text())
        (RESULTS / "search_quality.md").write_text(markdown(saved).rstrip() + "\n")
        return
    settings = load_settings()
    res: dict[str, Any] = {}
    if not args.skip_pfd:
        from _pfd import PFD_CSV

        if PFD_CSV.is_file():
            res["pfd"] = {**bench_pfd(settings), "measured_at": stamp()}
            res["pfd_alternatives"] = {
                **bench_pfd_alternatives(settings),
                "measured_at": stamp(),
            }
        else:
            print(f"SKIP PFD: {PFD_CSV} is absent")
    if not args.skip_weighting and "pfd" in res:
        res["query_weighting"] = {
            **bench_query_weighting(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_rerank and "pfd" in res:
        res["rerank"] = {
            **bench_rerank(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_long_weight and "pfd" in res:
        res["long_weight"] = {
            **bench_long_weight(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_short_weight and "pfd" in res:
        res["short_weight"] = {
            **bench_short_weight(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_bm25_params and "pfd" in res:
        res["bm25_params"] = {
            **bench_bm25_params(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_similar:
        res["similar"] = {
            **bench_similar(settings, args.bm25_queries, args.bm25_demo_records),
            "measured_at": stamp(),
        }
    if not args.skip_fft:
        if FFT.is_file():
            res["fft"] = {**bench_fft(settings, args.fft_queries), "measured_at": stamp()}
        else:
            print(f"SKIP FFT: {FFT} is absent")
    if not args.skip_dups:
        res["duplicates"] = {
            **bench_dups(settings, args.dup_records, args.dup_cal_seeds, args.dup_eval_seeds),
            "measured_at": stamp(),
        }
    # parts not re-run keep their last measured figures (each part records its own time)
    previous = RESULTS / "search_quality.json"
    if previous.is_file():
        saved = {k: v for k, v in json.loads(previous.read_text()).items() if k != "machine"}
        res = {**saved, **res}
    write_result("search_quality", res, markdown(res))


if __name__ == "__main__":
    main()
