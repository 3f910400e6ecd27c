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


def _bench_search():  # noqa: ANN202
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_search
    finally:
        sys.path.remove(str(BENCHMARKS))
    return bench_search


def test_the_benchmark_builds_a_searchable_product_index(settings) -> None:  # noqa: ANN001
    bench_search = _bench_search()
    texts = ["patient fell from bed at night", "insulin dose missed on the ward", "retained swab"]
    names = [f"R{i}" for i in range(len(texts))]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(texts), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = bench_search.fit_index(settings, names, texts, vecs)
    assert index.size == 3
    hits = index.bm25(index.query_tokens("retained swab"), n=1)[0]
    assert index.ids_[hits[0]] == "R2"


def test_duplicate_calibration_objectives() -> None:
    """F1 pools the seeds; "worst" judges by the worst seed's lower of precision and recall.

    Seed 1: planted pairs at 0.9 and 0.5, a false pair at 0.6. Seed 2: planted at 0.9, 0.8,
    0.7, 0.65, false at 0.25. A threshold of 0.5 finds every planted pair (one false);
    0.61 loses seed 1's weaker pair (recall 0.5 there) and drops the false one.
    """
    bench = _bench_search()
    scores = {(1, "a", "b"): 0.9, (1, "c", "d"): 0.5, (1, "e", "f"): 0.6,
              (2, "a", "b"): 0.9, (2, "c", "d"): 0.8, (2, "e", "f"): 0.7,
              (2, "g", "h"): 0.65, (2, "i", "j"): 0.25}  # fmt: skip
    truth = {(1, "a", "b"), (1, "c", "d"), (2, "a", "b"), (2, "c", "d"), (2, "e", "f"),
             (2, "g", "h")}  # fmt: skip
    t, fit = bench.calibrate(scores, truth, "worst")
    assert 0.25 < t <= 0.5
    assert fit["worst"] == 0.6667  # seed 1: precision 2/3, recall 1
    t_f1, fit_f1 = bench.calibrate(scores, truth)
    assert fit_f1["f1"] >= fit["f1"]
    assert bench.objective(fit, "worst") == (fit["worst"], fit["mean"], fit["f1"])


def test_logistic_check_learns_from_calibration_seeds_only() -> None:
    """The benchmark's learned-mix row: fitted on calibration seeds' pairs within the date
    window, applied to each evaluation seed's pairs, pairs past the window never predicted."""
    bench = _bench_search()
    n_feats = 1 + len(bench.DUP_OVERLAPS)  # cosine, overlaps; then conflict and day gap
    rng = np.random.default_rng(0)

    def seed_pairs(seed: int) -> tuple[dict[tuple, tuple], set]:
        feats, truth = {}, set()
        for i in range(40):
            dup = i % 2 == 0
            level = 0.8 if dup else 0.2
            x = tuple(level + 0.05 * rng.normal(size=n_feats))
            feats[(f"A{i}", f"B{i}")] = (*x, 0.0, 0 if i < 36 else 3)
            if dup:
                truth.add((f"A{i}", f"B{i}"))
        return feats, truth

    data = {s: seed_pairs(s) for s in (1, 2, 3)}
    feats = {s: f for s, (f, _) in data.items()}
    truth_cal = {(s, *p) for s in (1, 2) for p in data[s][1]}
    row = bench.logistic_row(feats, [1, 2], [3], truth_cal, {3: data[3][1]}, window=1)
    r = row["seed 3"]
    assert r["predicted"] == 18  # the 18 planted pairs within the window; none past it
    assert r["precision"] == 1.0
    assert r["planted"] == 20
