"""The search benchmark's own index helpers keep up with the product's index schema.

The benchmarks run for hours and are not part of CI; this checks, in well under a second,
the pieces of them that build product objects, so a schema change (a new filter column,
say) breaks here rather than an hour into a benchmark run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_benchmark_builds_a_searchable_product_index(settings) -> None:  # noqa: ANN001
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_search
    finally:
        sys.path.remove(str(BENCHMARKS))
    texts = ["patient fell from bed at night", "insulin dose missed on the ward", "retained swab"]
    names = [f"R{i}" for i in range(len(texts))]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(texts), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = bench_search.fit_index(settings, names, texts, vecs)
    assert index.size == 3
    hits = index.bm25(index.query_tokens("retained swab"), n=1)[0]
    assert index.ids_[hits[0]] == "R2"
