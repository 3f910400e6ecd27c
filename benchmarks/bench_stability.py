"""Theme stability across refits: the project's themes + registry vs BERTopic refits.

For each dataset (the demo data, and NHS FFT comments when ../shared/data is present):

1. *Same data, another seed*: a fit, then a full refit with a different random seed.
   ARI between the two record assignments.
2. *5% new records*: a fit on 95% of the records, then a refit (another seed) on all of
   them. ARI on the old 95%.

The product's refit is *stable* (`themes.stable_refit`, the default): it keeps the
registry's themes as centres and adds newly discovered ones, so it is measured that way;
independent refits (`themes run --refit --rediscover`) are measured too.
3. For each refit, the registry (`themes.registry.match_themes`, the same matching the
   nightly flow uses) maps the refit's themes to the first fit's permanent ids. Reported:
   share of the first fit's ids kept, and share of records whose *id* is unchanged (what a
   committee sees). Without a registry, BERTopic's topic numbers are compared as they are.

BERTopic with its defaults (UMAP/HDBSCAN defaults, random_state = seed) runs on the same
texts and embeddings in the same run.

    python benchmarks/bench_stability.py [--seeds 42 43] [--demo-records 3000] [--skip-fft]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from _cache import clean_and_embed  # noqa: E402
from _common import md_table, write_result  # noqa: E402
from bench_themes import FFT, demo_dataset  # noqa: E402
from themes import steps  # noqa: E402
from themes.embed import l2_normalise  # noqa: E402
from themes.evaluate import load_labelled  # noqa: E402
from themes.registry import RegistryTheme, match_themes  # noqa: E402
from themes.settings import load_settings  # noqa: E402

TARGETS = {"same_data_ari": 0.90, "new_records_ari": 0.85}


def centroids(vectors: np.ndarray, labels: np.ndarray) -> tuple[list[int], np.ndarray]:
    ids = sorted(int(t) for t in np.unique(labels) if t >= 0)
    cents = np.stack([vectors[labels == t].mean(0) for t in ids])
    return ids, l2_normalise(cents)


def ours(settings, texts, vectors, seed, previous=None):  # noqa: ANN001, ANN201
    """The product's fit; with `previous` labels, its stable refit anchored on them (the
    previous themes' centroids, each record starting from its previous theme)."""
    seeded = settings.model_copy(
        update={"themes": settings.themes.model_copy(update={"seed": seed})}
    )
    anchors = members = None
    if previous is not None:
        ids, anchors = centroids(vectors, previous)
        row = {t: i for i, t in enumerate(ids)}
        members = np.array([row.get(int(t), -1) for t in previous])
    model = steps.build_theme_model(seeded).fit(
        texts, vectors, anchors=anchors, anchor_members=members
    )
    return np.asarray(model.labels_)


def bertopic_defaults(texts, vectors, seed):  # noqa: ANN001, ANN201
    from bertopic import BERTopic
    from umap import UMAP

    model = BERTopic(umap_model=UMAP(n_neighbors=15, n_components=5, min_dist=0.0,
                                     metric="cosine", random_state=seed))  # fmt: skip
    topics, _ = model.fit_transform(texts, vectors)
    return np.asarray(topics)


def registry_ids(
    first: np.ndarray, second: np.ndarray, vectors: np.ndarray, threshold: float
) -> tuple[np.ndarray, float]:
    """Map `second`'s themes to `first`'s ids through the registry; returns (ids, share of
    first's ids kept)."""
    ids1, c1 = centroids(vectors, first)
    ids2, c2 = centroids(vectors, second)
    registry = [
        RegistryTheme(key=k, label=str(k), centroid=c) for k, c in zip(ids1, c1, strict=True)
    ]
    matching = match_themes(
        registry, c2, ids2, {t: str(t) for t in ids2}, threshold=threshold,
        next_key=max(ids1) + 1,
    )  # fmt: skip
    mapped = np.array([matching.key_of[int(t)] if t >= 0 else -1 for t in second])
    kept = len(set(matching.key_of.values()) & set(ids1)) / len(ids1)
    return mapped, kept


def scenario(name, fit, texts, vectors, seeds, threshold, *, registry: bool, stable: bool):  # noqa: ANN001, ANN201
    """Two refits (same data, other seed) and a refit after adding 5% new records.

    stable=True: the second fit is the product's stable refit, anchored on the first
    fit's theme centroids (as the nightly flow anchors on the registry)."""
    rng = np.random.default_rng(0)
    n = len(texts)
    old = np.sort(rng.choice(n, size=int(round(n * 0.95)), replace=False))
    t0 = time.perf_counter()
    a = fit(texts, vectors, seeds[0], None)
    sub = fit([texts[i] for i in old], vectors[old], seeds[0], None)
    if stable:
        b = fit(texts, vectors, seeds[1], a)
        # the new 5% have no previous theme
        previous = np.full(n, -1)
        previous[old] = sub
        b_new = fit(texts, vectors, seeds[1], previous)
        seconds = (time.perf_counter() - t0) / 4
    else:
        b = b_new = fit(texts, vectors, seeds[1], None)
        seconds = (time.perf_counter() - t0) / 3
    row = {
        "method": name,
        "same_data_ari": round(adjusted_rand_score(a, b), 4),
        "new_records_ari": round(adjusted_rand_score(sub, b_new[old]), 4),
        "themes": [int(len(set(a) - {-1})), int(len(set(b) - {-1}))],
        "fit_seconds": round(seconds, 1),
    }
    if registry:
        mapped, kept = registry_ids(a, b, vectors, threshold)
        row["same_data_ids_kept"] = round(kept, 3)
        row["same_data_records_same_id"] = round(float(np.mean(mapped == a)), 4)
        mapped_new, kept_new = registry_ids(sub, b_new[old], vectors[old], threshold)
        row["new_records_ids_kept"] = round(kept_new, 3)
        row["new_records_records_same_id"] = round(float(np.mean(mapped_new == sub)), 4)
    else:
        row["same_data_records_same_id"] = round(float(np.mean(a == b)), 4)
        row["new_records_records_same_id"] = round(float(np.mean(sub == b_new[old])), 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs=2, default=[42, 43])
    ap.add_argument("--demo-records", type=int, default=3000)
    ap.add_argument("--skip-fft", action="store_true")
    ap.add_argument("--skip-bertopic", action="store_true")
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    settings = load_settings()
    threshold = settings.registry.match_threshold
    datasets = [("demo", f"demo data ({args.demo_records} records)", None)]
    notes = []
    if args.skip_fft:
        notes.append("FFT skipped (--skip-fft).")
    elif not FFT.is_file():
        notes.append(f"FFT skipped: {FFT} not found.")
    else:
        datasets.insert(0, ("fft", "NHS FFT comments (one label)", FFT))
    results = []
    for key, title, path in datasets:
        if path is None:
            texts, _ = demo_dataset(args.demo_records)
        else:
            texts, _, _ = load_labelled(
                path, text_column="FFT answer", one_hot_start="Not assigned"
            )
        clean, vectors = clean_and_embed(settings, key, texts)
        rows = []
        for label, stable in (("ours: stable refit + registry (product)", True),
                              ("ours: independent refits + registry", False)):  # fmt: skip
            fit = lambda t, v, s, a: ours(settings, t, v, s, a)  # noqa: E731
            rows.append(scenario(label, fit, clean, vectors, args.seeds, threshold,
                                 registry=True, stable=stable))  # fmt: skip
            print(title, rows[-1], flush=True)
        if not args.skip_bertopic:
            rows.append(scenario("BERTopic defaults, no registry",
                                 lambda t, v, s, a: bertopic_defaults(t, v, s), clean, vectors,
                                 args.seeds, threshold, registry=False, stable=False))  # fmt: skip
            print(title, rows[-1], flush=True)
        results.append({"dataset": title, "rows": len(clean), "methods": rows})
    table = []
    for res in results:
        for m in res["methods"]:
            table.append([
                res["dataset"], m["method"], f"{m['same_data_ari']:.3f}",
                f"{m['new_records_ari']:.3f}",
                f"{m.get('same_data_ids_kept', '—')}", f"{m['same_data_records_same_id']:.1%}",
                f"{m.get('new_records_ids_kept', '—')}", f"{m['new_records_records_same_id']:.1%}",
                f"{m['themes'][0]}/{m['themes'][1]}", f"{m['fit_seconds']:.0f}",
            ])  # fmt: skip
    md = "\n".join(
        [
            "# Theme stability across refits",
            "",
            md_table(
                [
                    "data",
                    "method",
                    "ARI same data",
                    "ARI +5% (old records)",
                    "ids kept",
                    "records same id",
                    "ids kept +5%",
                    "records same id +5%",
                    "themes",
                    "fit s",
                ],  # fmt: skip
                table,
            ),
            "",
            f"Targets: ARI between refits with different seeds ≥ {TARGETS['same_data_ari']}; "
            f"after adding 5% new records ≥ {TARGETS['new_records_ari']} on the old records.",
            f"Seeds {args.seeds[0]} and {args.seeds[1]}. 'ids kept': share of the first fit's "
            f"themes whose permanent id survives the refit (registry match threshold "
            f"{threshold}); 'records same id': share of records showing the same theme id "
            "after the refit (for BERTopic, its raw topic numbers).",
            *notes,
            "",
            "Command: `python benchmarks/bench_stability.py --seeds "
            + " ".join(map(str, args.seeds))
            + "`",
        ]
    )
    write_result("stability", {"results": results, "targets": TARGETS, "seeds": args.seeds}, md)


if __name__ == "__main__":
    main()
