"""Emerging-theme alerts on demo data: does the planted emerging theme rank first, and how
often do themes planted as steady raise an alert?

1. *Planted themes* (detection alone): monthly counts of each planted theme, for many
   generator seeds, ranked by `themes.emerging.rank_emerging`.
2. *Discovered themes* (the whole method): the demo records are de-identified, embedded
   and clustered by the product; each discovered theme is named after its majority planted
   theme, and the same ranking runs on the discovered themes' monthly counts.

False-alert rate = alerts raised by themes whose planted (or majority) theme is steady /
all such themes. Baseline in the same run: a naive rule "last month above the 24-month
mean + 2 standard deviations" on the same counts.

    python benchmarks/bench_emerging.py [--seeds 20] [--pipeline-seeds 3] [--records 900]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _cache import clean_and_embed  # noqa: E402
from _common import md_table, write_result  # noqa: E402
from themes import steps  # noqa: E402
from themes.demo import EMERGING_THEME, generate_demo  # noqa: E402
from themes.emerging import rank_emerging, theme_counts  # noqa: E402
from themes.ingest import map_records, read_export  # noqa: E402
from themes.records import load_mapping  # noqa: E402
from themes.settings import load_settings  # noqa: E402

SOURCES = {"incident": "datix_incident", "complaint": "complaints", "claim": "claims"}


def demo_records(seed: int, n: int) -> pd.DataFrame:
    out = Path(tempfile.mkdtemp(prefix="themes-emerging-"))
    manifest = generate_demo(out, seed=seed, n_records=n, messy=False)
    with manifest.labels_path.open(encoding="utf-8") as f:
        truth = {r["record_id"]: r["theme"] for r in csv.DictReader(f)}
    rows = []
    for kind, path in manifest.files.items():
        mapping = load_mapping(Path("config/sources"), SOURCES[kind])
        for rec in map_records(read_export(path), mapping, file=str(path)).records:
            rows.append(
                {"record_id": rec.record_id, "text": rec.narrative,
                 "event_date": pd.Timestamp(rec.event_date), "planted": truth[rec.record_id]}
            )  # fmt: skip
    return pd.DataFrame(rows)


def naive_alerts(counts: pd.DataFrame) -> set:
    """Baseline: last period above mean + 2 sd of the earlier periods."""
    flagged = set()
    for col in counts.columns:
        v = counts[col].to_numpy(dtype=float)
        if v[-1] > v[:-1].mean() + 2 * v[:-1].std(ddof=1):
            flagged.add(col)
    return flagged


def evaluate(counts: pd.DataFrame, name_of: dict, settings) -> dict:  # noqa: ANN001
    ranked = rank_emerging(counts, settings.trends)
    steady = [c for c in counts.columns if name_of[c] != EMERGING_THEME]
    flagged = {e.theme_id for e in ranked}
    naive = naive_alerts(counts)
    return {
        "first_is_emerging": bool(ranked) and name_of[ranked[0].theme_id] == EMERGING_THEME,
        "emerging_flagged": any(name_of[t] == EMERGING_THEME for t in flagged),
        "steady": len(steady),
        "false_alerts": len(flagged & set(steady)),
        "naive_emerging_flagged": any(name_of[t] == EMERGING_THEME for t in naive),
        "naive_false_alerts": len(naive & set(steady)),
        "top3": [(str(name_of[e.theme_id]), e.score) for e in ranked[:3]],
    }


def summarise(rows: list[dict]) -> dict:
    steady = sum(r["steady"] for r in rows)
    return {
        "seeds": len(rows),
        "first": sum(r["first_is_emerging"] for r in rows),
        "emerging_flagged": sum(r["emerging_flagged"] for r in rows),
        "false_alerts": sum(r["false_alerts"] for r in rows),
        "steady_charts": steady,
        "false_alert_rate": round(sum(r["false_alerts"] for r in rows) / max(steady, 1), 4),
        "naive_emerging_flagged": sum(r["naive_emerging_flagged"] for r in rows),
        "naive_false_alerts": sum(r["naive_false_alerts"] for r in rows),
        "naive_false_alert_rate": round(
            sum(r["naive_false_alerts"] for r in rows) / max(steady, 1), 4
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--pipeline-seeds", type=int, default=3)
    ap.add_argument("--records", type=int, default=900)
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    settings = load_settings()
    planted_rows, pipeline_rows = [], []
    for seed in range(args.seeds):
        df = demo_records(seed, args.records)
        counts = theme_counts(df.rename(columns={"planted": "theme_id"}))
        planted_rows.append({"seed": seed, **evaluate(counts, {c: c for c in counts}, settings)})
        print("planted", planted_rows[-1], flush=True)
        if seed < args.pipeline_seeds:
            clean, vectors = clean_and_embed(settings, f"emerging-{seed}", df["text"].tolist())
            labels = steps.build_theme_model(settings).fit(clean, vectors).labels_
            df["theme_id"] = labels
            majority = {
                t: Counter(df.loc[df["theme_id"] == t, "planted"]).most_common(1)[0][0]
                for t in np.unique(labels)
            }
            counts = theme_counts(df[df["theme_id"] >= 0])
            pipeline_rows.append({"seed": seed, **evaluate(counts, majority, settings)})
            print("pipeline", pipeline_rows[-1], flush=True)
    results = {"planted": summarise(planted_rows)}
    if pipeline_rows:
        results["discovered"] = summarise(pipeline_rows)
    table = []
    for key, title in (("planted", "planted themes"), ("discovered", "discovered themes")):
        if key not in results:
            continue
        r = results[key]
        table.append([title, r["seeds"], f"{r['first']}/{r['seeds']}",
                      f"{r['false_alerts']}/{r['steady_charts']} ({r['false_alert_rate']:.1%})",
                      f"{r['naive_emerging_flagged']}/{r['seeds']}",
                      f"{r['naive_false_alerts']}/{r['steady_charts']} "
                      f"({r['naive_false_alert_rate']:.1%})"])  # fmt: skip
    md = "\n".join(
        [
            "# Emerging-theme alerts on demo data",
            "",
            md_table(
                [
                    "themes",
                    "seeds",
                    "emerging ranked first",
                    "false alerts (steady)",
                    "naive: emerging flagged",
                    "naive: false alerts",
                ],
                table,
            ),  # fmt: skip
            "",
            f"{args.records} demo records per seed, 24 months; '{EMERGING_THEME}' is planted "
            "to emerge in the last three months, every other theme is planted steady. "
            "Alerts: Making Data Count XmR rules (up is concern) touching the last "
            f"{settings.trends.emerging_lookback_periods} months. Naive baseline: last month "
            "above the mean + 2 SD of the earlier months. Discovered themes are named by "
            "their majority planted theme.",
            "",
            f"Command: `python benchmarks/bench_emerging.py --seeds {args.seeds} "
            f"--pipeline-seeds {args.pipeline_seeds} --records {args.records}`",
        ]
    )
    write_result(
        "emerging", {**results, "planted_runs": planted_rows, "pipeline_runs": pipeline_rows}, md
    )


if __name__ == "__main__":
    main()
