"""Linking quality on the coroners' PFD reports (issue 4).

For every report with circumstances and concerns: query with its circumstances and rank
all concern items of all reports (concerns split by `recommendations.split_concerns`); a
hit is a concern item of the same report. MRR and recall@1/5/10 for the project's linker,
BM25 alone and dense retrieval alone, in one run, on the same text.

Reports are split at random (seed 0) into a tuning half and a test half: the linker's
fusion weights and calibration are fitted on the tuning half's queries and reported on
the test half's (the corpus is always all concern items). Run once on the product's
de-identified text (placeholders) and once with names left in (raw text, held only in
memory, never written), to show what de-identification costs.

    nice -n 10 .venv/bin/python benchmarks/bench_links.py [--quick]

Writes benchmarks/results/links_pfd.{json,md}. Skips with a message when the data is
absent. Embeddings of de-identified passages are cached in var/bench_cache/ (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import ROOT as ROOT_DIR  # noqa: E402
from _common import PeakMemory, md_table, write_result  # noqa: E402
from _pfd import CACHE_DIR, load_pfd_deidentified, load_pfd_raw, require_pfd  # noqa: E402
from themes.linker import (  # noqa: E402
    Components,
    Linker,
    Weights,
    calibrate,
    calibration_samples,
    reliability,
    reliability_by_size,
    retrieval_metrics,
    tune,
)
from themes.recommendations import Recommendation, split_concerns  # noqa: E402


class CachedEncoder:
    """Wraps the product's embedder; caches vectors by text hash (in memory, and on disk
    only when `disk` is set, which is only done for de-identified text)."""

    def __init__(self, embedder, *, disk: Path | None) -> None:  # noqa: ANN001
        self.embedder = embedder
        self.disk = disk
        self.cache: dict[str, np.ndarray] = {}
        if disk is not None and disk.is_file():
            data = np.load(disk)
            self.cache = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def encode(self, texts):  # noqa: ANN001, ANN201
        keys = [hashlib.sha256(t.encode()).hexdigest()[:24] for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}
        if todo:
            t0 = time.perf_counter()
            vecs = self.embedder.encode(list(todo.values()))
            self.cache.update(zip(todo, vecs, strict=True))
            print(f"  embedded {len(todo)} texts in {time.perf_counter() - t0:.0f}s", flush=True)
            if self.disk is not None:
                np.savez(
                    self.disk,
                    keys=np.array(list(self.cache)),
                    vectors=np.stack(list(self.cache.values())),
                )
        return np.stack([self.cache[k] for k in keys]).astype(np.float32)


def build_task(df) -> tuple[list[str], list[Recommendation], list[set[int]], list[str]]:  # noqa: ANN001
    """Queries (circumstances), concern items, relevant item indexes, report ids."""
    recs: list[Recommendation] = []
    by_report: dict[str, set[int]] = {}
    for rid, concerns in zip(df["id"], df["concerns"], strict=True):
        for k, item in enumerate(split_concerns(concerns), start=1):
            by_report.setdefault(rid, set()).add(len(recs))
            recs.append(
                Recommendation(
                    id=f"pfd-{rid}-{k}", source=f"PFD report {rid}", text=item, document=rid
                )
            )
    queries, relevant, qids = [], [], []
    for rid, circ in zip(df["id"], df["circumstances"], strict=True):
        if circ.strip() and rid in by_report:
            queries.append(circ)
            relevant.append(by_report[rid])
            qids.append(rid)
    return queries, recs, relevant, qids


def bm25_default(queries: list[str], recs: list[Recommendation]) -> np.ndarray:
    """bm25s out of the box: its tokenizer with English stop words, k1=1.5, b=0.75."""
    import bm25s

    corpus = bm25s.tokenize([r.text for r in recs], stopwords="en", show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    vocab = corpus.vocab
    out = np.zeros((len(queries), len(recs)), dtype=np.float32)
    q_tok = bm25s.tokenize(queries, stopwords="en", show_progress=False, return_ids=False)
    for i, q in enumerate(q_tok):
        q = [t for t in q if t in vocab]
        if q:
            out[i] = retriever.get_scores(q)
    return out


def pooled_dense(encoder: CachedEncoder, queries: list[str], recs: list[Recommendation]):  # noqa: ANN201
    """Whole-text embeddings (the embedder chunks long texts and pools) and cosine."""
    q = encoder.encode(queries)
    r = encoder.encode([x.text for x in recs])
    return q @ r.T


def evaluate(label: str, df, encoder: CachedEncoder, *, seed: int, quick: bool) -> dict:  # noqa: ANN001
    queries, recs, relevant, _ = build_task(df)
    n_reports = len({r.document for r in recs})
    print(
        f"[{label}] {len(queries)} queries, {len(recs)} concern items from {n_reports} reports",
        flush=True,
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))
    half = len(order) // 2
    train, test = np.sort(order[:half]), np.sort(order[half:])
    rel_train = [relevant[i] for i in train]
    rel_test = [relevant[i] for i in test]
    t0 = time.perf_counter()

    # BM25 parameters tuned on the tuning half (lexical score alone)
    best_bm25: tuple[float, float, float] | None = None
    linker = None
    comp = None
    # the grid spans k1 0.5-3 and b 0.5-1; the best point (0.9, 1.0) is inside it for k1
    k1_grid = (1.2,) if quick else (0.5, 0.7, 0.9, 1.2, 1.5, 2.0, 2.5, 3.0)
    b_grid = (0.75,) if quick else (0.5, 0.75, 0.9, 1.0)
    lexical_by_param = {}
    for k1 in k1_grid:
        for b in b_grid:
            lk = Linker(encoder=encoder, k1=k1, b=b).fit(recs)
            if comp is None:
                comp = lk.components(queries)
                linker = lk
                lex = comp.lexical
            else:
                lex = lk.lexical_scores(queries)
            lexical_by_param[(k1, b)] = lex
            mrr = retrieval_metrics(lex[train], rel_train)["mrr"]
            if best_bm25 is None or mrr > best_bm25[0]:
                best_bm25 = (mrr, k1, b)
    assert best_bm25 is not None and linker is not None and comp is not None
    _, k1, b = best_bm25
    # refit with the chosen BM25 parameters for the TF-IDF scores (passage vectors are cached)
    linker = Linker(encoder=encoder, k1=k1, b=b).fit(recs)
    comp = Components(
        lexical=lexical_by_param[(k1, b)], dense=comp.dense, tfidf=linker.tfidf_scores(queries)
    )

    train_comp = comp.rows(train)
    tuned, trials = tune(linker, train_comp, rel_train)
    # the product's fusion weights are the configured ones (config/themes.toml [links]):
    # the tuning half's best, or, where that lowered the demo theme links, the best setting
    # that did not (see benchmarks/readings/links_pfd.md); calibration is fitted for them
    from themes.links import weights_from
    from themes.settings import load_settings

    weights = replace(weights_from(load_settings().links))
    # calibration: the tuning half's queries scored against sub-corpora of 3 reports up to
    # all of them, half of which hold no right answer; reliability on the test half alike
    cal = calibration_samples(train_comp, rel_train, linker.group_, weights, seed=seed)
    slope, size, intercept = calibrate(cal)
    weights = replace(
        weights,
        calibration_slope=round(slope, 4),
        calibration_size=round(size, 4),
        calibration_intercept=round(intercept, 4),
    )
    held_out = calibration_samples(comp.rows(test), rel_test, linker.group_, weights, seed=seed + 1)
    final = linker.fuse(comp, weights)
    no_doc = replace(weights, document=0.0)
    no_tfidf = replace(weights, tfidf=0.0)

    pooled = pooled_dense(encoder, queries, recs)
    default_bm25 = bm25_default(queries, recs)
    rrf = _rrf([default_bm25, pooled])
    methods = {
        "BM25 (bm25s defaults)": default_bm25,
        "dense, pooled whole text": pooled,
        "RRF k=60 of the two above": rrf,
        f"BM25 (project tokens, k1={k1}, b={b})": comp.lexical,
        "dense, passage max-sim": comp.dense,
        "TF-IDF cosine, words and word pairs": comp.tfidf,
        "linker without TF-IDF": linker.fuse(comp, no_tfidf),
        "linker without document context": linker.fuse(comp, no_doc),
        f"linker, best weights on the tuning half ({_w(tuned)})": linker.fuse(comp, tuned),
        f"linker (project, configured weights {_w(weights)})": final,
    }
    rows = {name: retrieval_metrics(s[test], rel_test) for name, s in methods.items()}
    singles = [v["mrr"] for k, v in rows.items() if "linker" not in k and "RRF" not in k]
    seconds = time.perf_counter() - t0
    return {
        "label": label,
        "queries": len(queries),
        "test_queries": len(test),
        "items": len(recs),
        "reports": n_reports,
        "bm25": {"k1": k1, "b": b},
        "weights": weights.__dict__,
        "methods": rows,
        "best_single_mrr": max(singles),
        "linker_mrr": rows[f"linker (project, configured weights {_w(weights)})"]["mrr"],
        "linker_gain_over_best_single": round(
            rows[f"linker (project, configured weights {_w(weights)})"]["mrr"] - max(singles), 4
        ),
        "linker_gain_over_bm25": round(
            rows[f"linker (project, configured weights {_w(weights)})"]["mrr"]
            - rows[f"BM25 (project tokens, k1={k1}, b={b})"]["mrr"],
            4,
        ),
        "tuned_weights": tuned.__dict__,
        "strong_link": [
            reliability(final[test], rel_test, weights, threshold=t) for t in (0.5, 0.7, 0.9)
        ],
        "calibration_samples": {"tuning": int(cal.score.size), "test": int(held_out.score.size)},
        "strong_link_by_size": reliability_by_size(held_out, weights, threshold=0.5),
        "fusion_trials": sorted(trials, key=lambda t: -t["mrr"]),  # MRR on the tuning half
        "seconds": round(seconds, 1),
    }


def _w(w: Weights) -> str:
    return f"BM25 {w.lexical:g}, dense {w.dense:g}, TF-IDF {w.tfidf:g}, document {w.document:g}"


def _rrf(score_sets: list[np.ndarray], k: int = 60) -> np.ndarray:
    out = np.zeros_like(score_sets[0], dtype=np.float64)
    for s in score_sets:
        ranks = np.argsort(np.argsort(-s, axis=1), axis=1) + 1
        out += 1.0 / (k + ranks)
    return out


def demo_theme_links(*, n_records: int, seed: int) -> dict:
    """Theme-level links on demo data: the real nightly flow (links task included) over
    generated exports, with the starter set plus the demo recommendations as the corpus.

    Scored twice: on the flow's discovered themes (each labelled with its majority planted
    theme) and on the planted themes themselves (isolates linking from clustering).
    """
    import csv
    import shutil
    import tempfile
    from collections import Counter

    from themes.demo import generate_demo
    from themes.demo_recommendations import PAIRING, write_demo_recommendations
    from themes.links import build_linker, compute_links, theme_links
    from themes.settings import load_settings
    from themes.steps import open_store

    root = Path(tempfile.mkdtemp(prefix="bench_links_demo_"))
    recs_dir = root / "recommendations"
    shutil.copytree(ROOT_DIR / "config" / "recommendations", recs_dir)
    write_demo_recommendations(recs_dir / "demo_recommendations.yaml")
    env = {
        "THEMES_PATHS__DATA_DIR": str(root / "var"),
        "THEMES_PATHS__DROP_FOLDER": str(root / "var" / "drop"),
        "THEMES_PATHS__MODELS_DIR": str(root / "models"),
        "THEMES_PATHS__REPORTS_DIR": str(root / "var" / "reports"),
        "THEMES_LINKS__RECOMMENDATIONS_DIR": str(recs_dir),
    }
    os.environ.update(env)
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    settings = load_settings()
    manifest = generate_demo(root / "exports", seed=seed, n_records=n_records)
    for kind, path in manifest.files.items():
        (settings.paths.drop_folder / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, settings.paths.drop_folder / kind / path.name)
    from pipelines.nightly import nightly

    t0 = time.perf_counter()
    summary = nightly(refit=True)
    flow_s = time.perf_counter() - t0
    with manifest.labels_path.open(encoding="utf-8") as f:
        planted = {r["record_id"]: r["theme"] for r in csv.DictReader(f)}
    store = open_store(settings)
    import sqlalchemy as sa

    with store.connect() as conn:
        assigned = conn.execute(
            sa.text(
                "SELECT a.record_id, a.theme_id, c.clean_text, c.clean_hash FROM assignments a "
                "JOIN clean_texts c ON c.record_id = a.record_id "
                "WHERE a.model_id = (SELECT model_id FROM theme_models WHERE active)"
            )
        ).all()

    def score(ranked_by_theme: dict, slug_of: dict) -> dict:
        rows, top1, hit3, p3, strong1, strong_right = [], 0, 0, 0.0, 0, 0
        for tid, ranked in ranked_by_theme.items():
            slug = slug_of.get(tid)
            if slug is None:
                continue
            ids = [r["rec_id"] for r in ranked[:3]]
            right = set(PAIRING[slug])
            top1 += ids[0] in right
            hit3 += bool(right & set(ids))
            p3 += len(right & set(ids)) / 3
            strong1 += ranked[0]["strong"]
            strong_right += ranked[0]["strong"] and ids[0] in right
            rows.append([tid, slug, ids[0], ranked[0]["probability"], ids[0] in right])
        n = len(rows)
        return {
            "themes": n,
            "top1_accuracy": round(top1 / n, 4) if n else 0.0,
            "hit_at_3": round(hit3 / n, 4) if n else 0.0,
            "precision_at_3": round(p3 / n, 4) if n else 0.0,
            "max_precision_at_3": round(1 / 3, 4),
            "top_link_strong": round(strong1 / n, 4) if n else 0.0,
            "strong_top_links_right": round(strong_right / strong1, 4) if strong1 else 0.0,
            "rows": rows,
        }

    # discovered themes, as stored by the flow's links task
    members: dict[int, Counter] = {}
    for rid, tid, _, _ in assigned:
        if tid >= 0 and rid in planted:
            members.setdefault(tid, Counter())[planted[rid]] += 1
    slug_of, purity = {}, {}
    for tid, counts in members.items():
        slug, n = counts.most_common(1)[0]
        purity[tid] = n / sum(counts.values())
        if purity[tid] >= 0.7 and slug in PAIRING:
            slug_of[tid] = slug
    stored = {
        tid: [
            {
                "rec_id": x["recommendation"]["rec_id"],
                "probability": x["probability"],
                "strong": x["strong"],
            }
            for x in theme_links(store, tid)
        ]
        for tid in members
    }
    discovered = score(stored, slug_of)
    discovered["themes_skipped_impure"] = len(members) - len(slug_of)

    # planted themes as the groups
    slugs = sorted(PAIRING)
    rows = [
        (rid, slugs.index(planted[rid]), text, h)
        for rid, _, text, h in assigned
        if planted.get(rid) in PAIRING
    ]
    linker = build_linker(store, settings)
    result = compute_links(linker, rows, settings.links)
    ranked = {
        tid: [
            {
                "rec_id": linker.ids_[x["rec_index"]],
                "probability": x["probability"],
                "strong": x["strong"],
            }
            for x in items
        ]
        for tid, items in result["themes"].items()
    }
    planted_scores = score(ranked, {i: s for i, s in enumerate(slugs)})
    ablation = demo_weight_grid(
        linker,
        [text for _, _, text, _ in assigned],
        {
            "discovered": ([tid if tid in slug_of else None for _, tid, _, _ in assigned], slug_of),
            "planted": ([planted.get(rid) for rid, _, _, _ in assigned], {s: s for s in PAIRING}),
        },
        PAIRING,
    )
    return {
        "records": n_records,
        "seed": seed,
        "corpus": summary.get("links", {}).get("recommendations"),
        "flow_seconds": round(flow_s, 1),
        "links_summary": summary.get("links"),
        "discovered_themes": discovered,
        "planted_themes": planted_scores,
        "weight_grid": ablation,
        "theme_contrast": settings.links.theme_contrast,
        "configured_weights": {
            "lexical": settings.links.w_lexical,
            "dense": settings.links.w_dense,
            "tfidf": settings.links.w_tfidf,
        },
    }


CONTRASTS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Theme contrasts tried on demo data (`links.theme_contrast`)."""


def demo_weight_grid(linker, texts, groups, pairing) -> list[dict]:  # noqa: ANN001
    """Top-1 right for the theme links under other fusion weights and theme contrasts, from
    one scoring of the cases: a theme's score is the mean of its cases' fused scores less
    the contrast times the mean over all cases, which is linear in the weights, so each
    component's per-theme and overall means are computed once. `groups` maps a grouping's
    name to (each case's group or None, each group's planted topic)."""
    comp = linker.components(texts)
    parts = {"lexical": comp.lexical, "dense": comp.dense, "tfidf": comp.tfidf}
    overall = {k: v.mean(axis=0) for k, v in parts.items()}
    means: dict[str, list[tuple[str, dict[str, np.ndarray]]]] = {}
    for name, (keys, topic_of) in groups.items():
        means[name] = []
        for key in sorted({k for k in keys if k is not None and k in topic_of}, key=str):
            rows = np.array([k == key for k in keys])
            means[name].append((topic_of[key], {k: v[rows].mean(axis=0) for k, v in parts.items()}))
    right = {
        slug: {linker.ids_.index(r) for r in ids if r in linker.ids_}
        for slug, ids in pairing.items()
    }
    out = []
    for contrast, lexical, dense, tfidf in product(
        CONTRASTS, (0.0, 0.5, 1.0), (0.0, 0.5, 0.75, 1.0, 1.5), (0.0, 0.25, 0.5, 1.0)
    ):
        if lexical == dense == tfidf == 0:
            continue
        w = {"lexical": lexical, "dense": dense, "tfidf": tfidf}
        row = {"contrast": contrast, **w}
        base = sum(w[k] * overall[k] for k in w)
        for name, themes in means.items():
            hits = [
                int(np.argmax(sum(w[k] * m[k] for k in w) - contrast * base)) in right[slug]
                for slug, m in themes
            ]
            row[f"{name}_top1"] = round(float(np.mean(hits)), 4) if hits else 0.0
            row[f"{name}_themes"] = len(hits)
        out.append(row)
    return out


def demo_markdown(d: dict) -> str:
    md = ["# Theme-level links on demo data (issue 4)", ""]
    md.append(
        f"{d['records']} synthetic records (seed {d['seed']}), real nightly flow (refit) with "
        f"the starter set plus one synthetic recommendation per planted theme "
        f"({d['corpus']} recommendations in all). A theme's top link is right when it is "
        "the recommendation written for its planted topic. Precision@3 can be at most 1/3 "
        "(one recommendation per topic)."
    )
    for name in ("discovered_themes", "planted_themes"):
        r = d[name]
        md += ["", f"### {name.replace('_', ' ')}", ""]
        md.append(
            md_table(
                [
                    "themes",
                    "top-1 right",
                    "right in top 3",
                    "precision@3",
                    "top link strong",
                    "strong top links right",
                ],
                [
                    [
                        r["themes"],
                        r["top1_accuracy"],
                        r["hit_at_3"],
                        r["precision_at_3"],
                        r["top_link_strong"],
                        r["strong_top_links_right"],
                    ]
                ],
            )
        )
        md.append("")
        md.append(
            md_table(
                ["theme", "planted topic", "top link", "P", "right"],
                [[a, b, c, f"{p:.2f}", "yes" if ok else "NO"] for a, b, c, p, ok in r["rows"]],
            )
        )
    md += ["", "### theme contrast", ""]
    md.append(
        "Top-1 right when a theme's score for an item is the mean of its cases' scores less "
        "the contrast times the mean over all cases (`links.theme_contrast`; configured "
        f"{d.get('theme_contrast')}), at the configured fusion weights, from one scoring of "
        "the cases:"
    )
    md.append("")
    cw = d.get("configured_weights", {})
    rows = [
        [r["contrast"], r["discovered_top1"], r["planted_top1"]]
        for r in d["weight_grid"]
        if all(r[k] == cw.get(k) for k in ("lexical", "dense", "tfidf"))
    ]
    md.append(md_table(["contrast", "discovered top-1 right", "planted top-1 right"], rows))
    md += ["", "Command: `nice -n 10 .venv/bin/python benchmarks/bench_links.py --demo-only`"]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no BM25 parameter grid")
    parser.add_argument(
        "--privacy",
        action="store_true",
        help="instead: de-identified vs names left in, on a subset (links_privacy.*)",
    )
    parser.add_argument("--raw-subset", type=int, default=300, help="reports in that run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-only", action="store_true", help="only the demo theme links")
    parser.add_argument("--demo-records", type=int, default=1500)
    args = parser.parse_args()
    if args.demo_only:
        d = demo_theme_links(n_records=args.demo_records, seed=args.seed)
        write_result("links_demo", d, demo_markdown(d))
        return
    require_pfd()
    from themes.embed import SentenceTransformerEmbedder
    from themes.settings import load_settings

    settings = load_settings()
    embedder = SentenceTransformerEmbedder(settings.embed)
    runs = []
    cache = CACHE_DIR / f"links_vectors_{settings.section_hash('clean', 'deidentify', 'embed')}.npz"
    with PeakMemory() as mem:
        deid = load_pfd_deidentified()
        if not args.privacy:
            runs.append(
                evaluate(
                    "de-identified (product)",
                    deid,
                    CachedEncoder(embedder, disk=cache),
                    seed=args.seed,
                    quick=args.quick,
                )
            )
        else:
            # the privacy trade-off on a random subset of reports (raw text is embedded
            # afresh, never cached, so the whole corpus would take too long here): the
            # same reports de-identified and with names left in
            rng = np.random.default_rng(args.seed)
            usable = sorted(deid[deid["circumstances"].str.strip() != ""]["id"])
            subset = set(rng.choice(usable, size=min(args.raw_subset, len(usable)), replace=False))
            raw = load_pfd_raw()
            raw = raw[raw["id"].isin(subset)].reset_index(drop=True)
            sub = deid[deid["id"].isin(subset)].reset_index(drop=True)
            runs.append(
                evaluate(
                    f"subset of {len(subset)} reports, de-identified (product)",
                    sub,
                    CachedEncoder(embedder, disk=cache),
                    seed=args.seed,
                    quick=args.quick,
                )
            )
            runs.append(
                evaluate(
                    f"same {len(subset)} reports, names left in (raw, memory only)",
                    raw,
                    CachedEncoder(embedder, disk=None),
                    seed=args.seed,
                    quick=args.quick,
                )
            )
    md = ["# Linking quality on PFD reports (issue 4)", ""]
    md.append(
        "Query: a report's circumstances; corpus: every concern item of every report; hit: "
        "a concern item of the same report. Fusion weights, BM25 k1/b and calibration tuned "
        f"on a random half of the queries (seed {args.seed}); figures are on the other half. "
        "Target: linker MRR >= best single method + 0.05 and >= 0.50."
    )
    for run in runs:
        md += ["", f"### {run['label']}", ""]
        md.append(
            f"{run['test_queries']} test queries of {run['queries']}; {run['items']} concern "
            f"items from {run['reports']} reports; weights {run['weights']}; "
            f"{run['seconds']} s."
        )
        md.append("")
        md.append(
            md_table(
                ["method", "MRR", "R@1", "R@5", "R@10"],
                [
                    [k, v["mrr"], v["recall@1"], v["recall@5"], v["recall@10"]]
                    for k, v in run["methods"].items()
                ],
            )
        )
        md.append("")
        md.append(
            "Configured linker's gain over the best single method in this table: "
            f"{run['linker_gain_over_best_single']:+.3f}; over BM25 alone: "
            f"{run['linker_gain_over_bm25']:+.3f}"
        )
        md.append("")
        md.append(
            md_table(
                [
                    "strong if P >=",
                    "share of top links strong",
                    "precision strong",
                    "precision weak",
                ],
                [
                    [r["threshold"], r["share_strong"], r["precision_strong"], r["precision_weak"]]
                    for r in run["strong_link"]
                ],
            )
        )
        md += [
            "",
            "Strong links (P >= 0.5) on the test half by corpus size: each test query scored "
            "against random sub-corpora of that many reports, half of them without the "
            "query's own report (no right answer), and once against the whole corpus. "
            f"Calibration fitted the same way on the tuning half "
            f"({run['calibration_samples']['tuning']} candidates; "
            f"{run['calibration_samples']['test']} held out).",
            "",
            md_table(
                [
                    "reports",
                    "items (median)",
                    "queries",
                    "mean P of top link",
                    "top link right",
                    "strong",
                    "precision strong",
                    "strong with no right answer",
                ],
                [
                    [
                        r["documents"],
                        r["median_items"],
                        r["queries"],
                        r["mean_probability"],
                        r["share_right"],
                        r["share_strong"],
                        r["precision_strong"],
                        r["strong_without_answer"],
                    ]
                    for r in run["strong_link_by_size"]
                ],
            ),
        ]
    md.append("")
    md.append(
        f"Peak memory {mem.peak_gb} GB. Command: "
        "`nice -n 10 .venv/bin/python benchmarks/bench_links.py`"
    )
    name = "links_privacy" if args.privacy else "links_pfd"
    if args.privacy:
        md[0] = "# Linking quality and de-identification: the privacy trade-off (issue 4)"
        md[-1] = md[-1].replace("bench_links.py", "bench_links.py --privacy")
    write_result(name, {"runs": runs, "peak_memory_gb": mem.peak_gb}, "\n".join(md))


if __name__ == "__main__":
    main()
