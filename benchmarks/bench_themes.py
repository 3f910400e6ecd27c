"""Theme quality against human labels: the project's method vs BERTopic defaults.

Both methods are fitted on the same (de-identified) texts and the same embeddings.

1. NHS Friends and Family Test comments (../shared/data/fft_feedback_v6_labelled.csv):
   rows with text and exactly one label. Skipped with a message if the file is absent.
2. The synthetic demo data: planted themes as labels.

    python benchmarks/bench_themes.py [--demo-records 3000] [--skip-fft]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import SHARED_DATA, md_table, write_result  # noqa: E402
from themes import steps  # noqa: E402
from themes.embed import SentenceTransformerEmbedder  # noqa: E402
from themes.evaluate import as_rows, compare, load_labelled, score  # noqa: E402
from themes.settings import load_settings  # noqa: E402

FFT = SHARED_DATA / "fft_feedback_v6_labelled.csv"
TARGETS = {"nmi": 0.50, "ari": 0.60, "outlier_share": 0.05}


def run_dataset(
    name: str,
    texts: list[str],
    labels: list[str],
    settings,
    seeds: list[int],  # noqa: ANN001
) -> dict:
    """Both methods on the same texts and embeddings, once per UMAP seed."""
    t0 = time.perf_counter()
    clean = steps.clean_texts_for_evaluation(settings, texts)
    clean_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors = SentenceTransformerEmbedder(settings.embed).encode(clean)
    embed_s = time.perf_counter() - t0
    runs = []
    for seed in seeds:
        seeded = settings.model_copy(
            update={"themes": settings.themes.model_copy(update={"seed": seed})}
        )
        model = steps.build_theme_model(seeded)
        scores = compare(clean, labels, vectors, model, seed=seed)
        scores.append(score(ORACLE, labels, majority_merge(model.labels_, labels), 0.0))
        t0 = time.perf_counter()
        predicted = supervised_reference(vectors, labels, seed)
        scores.append(score(SUPERVISED, labels, predicted, time.perf_counter() - t0))
        for row in as_rows(scores):
            runs.append({**row, "seed": seed})
    methods = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rows = [r for r in runs if r["method"] == method]
        methods.append(
            {
                "method": method,
                **{
                    k: round(sum(r[k] for r in rows) / len(rows), 4)
                    for k in ("nmi", "ari", "outlier_share", "n_themes", "seconds")
                },
                "ari_range": [min(r["ari"] for r in rows), max(r["ari"] for r in rows)],
                "nmi_range": [min(r["nmi"] for r in rows), max(r["nmi"] for r in rows)],
            }
        )
    return {
        "dataset": name,
        "rows": len(texts),
        "labels": len(set(labels)),
        "clean_s": round(clean_s, 1),
        "embed_s": round(embed_s, 1),
        "seeds": seeds,
        "methods": methods,
        "runs": runs,
    }


ORACLE = "oracle: project themes merged by majority label (uses the labels)"


def majority_merge(topics: np.ndarray, labels: list[str]) -> np.ndarray:
    """Each theme relabelled as its most common human label, so themes that share a label
    merge. An oracle (it reads the labels), reported to show how far merging the themes
    could go, not a method; majority merging is not the best merge for ARI, so it is not a
    strict bound."""
    codes, _ = pd.factorize(pd.Series(labels))
    frame = pd.DataFrame({"topic": np.asarray(topics), "label": codes})
    majority = frame.groupby("topic")["label"].agg(lambda x: x.value_counts().index[0])
    return frame["topic"].map(majority).to_numpy()


SUPERVISED = "reference: logistic regression trained on the labels (5-fold, out of fold)"


def supervised_reference(vectors: np.ndarray, labels: list[str], seed: int) -> np.ndarray:
    """Each row's label as predicted by a logistic regression on the same embeddings,
    trained on the other four fifths of the rows (5-fold, shuffled by `seed`), as codes.
    A reference, not a method: it reads the labels. It shows how well the embeddings
    separate the human labels when told them, against how well unsupervised themes can."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict

    codes, _ = pd.factorize(pd.Series(labels))
    folds = KFold(5, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(max_iter=3000), vectors, codes, cv=folds)


def demo_dataset(n: int, seed: int = 3) -> tuple[list[str], list[str]]:
    """Demo narratives (raw) and their planted themes."""
    from themes.demo import generate_demo
    from themes.ingest import map_records, read_export
    from themes.records import load_mapping

    out = Path(tempfile.mkdtemp(prefix="themes-bench-"))
    manifest = generate_demo(out, seed=seed, n_records=n, messy=False)
    with manifest.labels_path.open(encoding="utf-8") as f:
        truth = {r["record_id"]: r["theme"] for r in csv.DictReader(f)}
    texts, labels = [], []
    sources = {"incident": "datix_incident", "complaint": "complaints", "claim": "claims"}
    for kind, path in manifest.files.items():
        mapping = load_mapping(Path("config/sources"), sources[kind])
        for rec in map_records(read_export(path), mapping, file=str(path)).records:
            texts.append(rec.narrative)
            labels.append(truth[rec.record_id])
    return texts, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-records", type=int, default=3000)
    ap.add_argument("--skip-fft", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    settings = load_settings()
    results = []
    notes = []
    if args.skip_fft:
        notes.append("FFT skipped (--skip-fft).")
    elif not FFT.is_file():
        notes.append(f"FFT skipped: {FFT} not found.")
        print(notes[-1])
    else:
        texts, labels, skipped = load_labelled(
            FFT, text_column="FFT answer", one_hot_start="Not assigned"
        )
        res = run_dataset("NHS FFT comments (one label)", texts, labels, settings, args.seeds)
        res["skipped"] = skipped
        results.append(res)
    texts, labels = demo_dataset(args.demo_records)
    results.append(
        run_dataset(f"demo data ({args.demo_records} records)", texts, labels, settings, args.seeds)
    )
    rows = []
    for res in results:
        for m in res["methods"]:
            rows.append(
                [
                    res["dataset"],
                    res["rows"],
                    m["method"],
                    f"{m['nmi']:.3f} ({m['nmi_range'][0]:.3f}–{m['nmi_range'][1]:.3f})",
                    f"{m['ari']:.3f} ({m['ari_range'][0]:.3f}–{m['ari_range'][1]:.3f})",
                    f"{m['outlier_share']:.1%}",
                    f"{m['n_themes']:.0f}",
                    f"{m['seconds']:.0f}",
                ]
            )
    md = "\n".join(
        [
            "# Theme quality against labels",
            "",
            md_table(["data", "rows", "method", "NMI", "ARI", "outliers", "themes", "fit s"], rows),
            "",
            f"Targets (FFT): NMI ≥ {TARGETS['nmi']}, ARI ≥ {TARGETS['ari']}, "
            f"outliers ≤ {TARGETS['outlier_share']:.0%}.",
            f"Means over UMAP seeds {args.seeds} (each method gets the same seed per run).",
            "Both methods use the same de-identified texts and all-MiniLM-L6-v2 embeddings;",
            "BERTopic defaults = `BERTopic(umap_model=UMAP(<its defaults>, random_state=seed))`.",
            "The oracle row is not a method: each of the project's themes relabelled by its",
            "most common human label, so themes that share a label merge. It shows how far",
            "merging the themes as the labels would can go (not a strict bound on ARI).",
            "The logistic-regression row is not a method either: trained on four fifths of",
            "the labels and scored on the rest, it shows how far the same embeddings",
            "separate the human labels when told them.",
            *notes,
            "",
            "Command: `python benchmarks/bench_themes.py --seeds "
            + " ".join(map(str, args.seeds))
            + "`",
        ]
    )
    write_result("themes_quality", {"results": results, "targets": TARGETS}, md)


if __name__ == "__main__":
    main()
