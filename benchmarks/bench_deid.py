"""Benchmark de-identification: recall/precision per identifier type, clinical terms
wrongly redacted, and throughput of clean + de-identify.

Run from the repository root:

    python benchmarks/bench_deid.py            # 300 labelled texts, 1000 for throughput

Writes `benchmarks/results/deid.json` and `benchmarks/results/deid.md`. With
`../shared/data/pfd_reports_2013_2023.csv` present it also counts Prevention of Future
Deaths reports that still contain the deceased's name (from the URL slug) afterwards;
no text from that file is written anywhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

from themes.clean import TextCleaner
from themes.deidentify import ENTITY_TYPES, Deidentifier
from themes.demo import deid_testset
from themes.settings import CleanSettings, DeidentifySettings

RESULTS = Path(__file__).resolve().parent / "results"
PFD_CSV = Path(__file__).resolve().parents[2] / "shared/data/pfd_reports_2013_2023.csv"
RECALL_TARGETS = {
    "NHS_NUMBER": 0.99,
    "PHONE_NUMBER": 0.99,
    "EMAIL_ADDRESS": 0.99,
    "UK_POSTCODE": 0.99,
    "DATE_OF_BIRTH": 0.99,
    "PERSON": 0.95,
}
CLINICAL_TARGET = 0.01


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def _caught(
    span: tuple[int, int], predicted: list[tuple[int, int, str]], label: str | None
) -> bool:
    """A planted span is caught when one predicted span (of the same type, unless
    `label` is None) covers at least half of it."""
    need = (span[1] - span[0]) / 2
    return any(
        _overlap(span, (s, e)) >= need and (label is None or t == label) for s, e, t in predicted
    )


def score(testset: list, results: list) -> dict:
    """Per-type recall and precision, type-agnostic recall and clinical false redactions."""
    planted: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    caught_any: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    clinical = clinical_hit = 0
    for item, result in zip(testset, results, strict=True):
        pred = result.entities
        for s, e, label in item.spans:
            planted[label] += 1
            caught[label] += _caught((s, e), pred, label)
            caught_any[label] += _caught((s, e), pred, None)
        for s, e, label in pred:
            predicted[label] += 1
            correct[label] += any(
                t == label and _overlap((s, e), (ps, pe)) > 0 for ps, pe, t in item.spans
            )
        for s, e in item.clinical_spans:
            clinical += 1
            clinical_hit += any(_overlap((s, e), (ps, pe)) > 0 for ps, pe, _ in pred)
    per_type = {}
    for label in ENTITY_TYPES:
        per_type[label] = {
            "planted": planted[label],
            "recall": caught[label] / planted[label] if planted[label] else None,
            "recall_any_type": caught_any[label] / planted[label] if planted[label] else None,
            "predicted": predicted[label],
            "precision": correct[label] / predicted[label] if predicted[label] else None,
            "target_recall": RECALL_TARGETS.get(label),
        }
    total = sum(planted.values())
    return {
        "per_type": per_type,
        "recall_all": sum(caught.values()) / total if total else None,
        "recall_all_any_type": sum(caught_any.values()) / total if total else None,
        "clinical_terms": clinical,
        "clinical_redacted": clinical_hit,
        "clinical_redacted_share": clinical_hit / clinical if clinical else None,
        "clinical_target": CLINICAL_TARGET,
    }


def _cpu_seconds() -> float:
    """CPU seconds used by this process and its finished worker processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def throughput(deid: Deidentifier, cleaner: TextCleaner, texts: list[str]) -> dict:
    """Records per second of normalise -> de-identify -> expand (engine already loaded)."""
    start = time.perf_counter()
    cpu = _cpu_seconds()
    normalised = [cleaner.normalise(t) for t in texts]
    results = deid.deidentify(normalised)
    _ = [cleaner.expand(r.text) for r in results]
    wall = time.perf_counter() - start
    words = sum(len(t.split()) for t in texts)
    return {
        "records": len(texts),
        "mean_words": words / len(texts),
        "seconds": wall,
        "records_per_s": len(texts) / wall,
        "cpu_seconds": (used := _cpu_seconds() - cpu),
        "records_per_cpu_s": len(texts) / used if used else None,
        "n_process": deid.settings.n_process,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def pfd_names(deid: Deidentifier, cleaner: TextCleaner, limit: int) -> dict | None:
    """Share of PFD reports whose deceased's name (URL slug) survives de-identification."""
    if not PFD_CSV.is_file():
        print(f"(skipping real-text check: {PFD_CSV} not found)")
        return None
    csv.field_size_limit(sys.maxsize)
    with PFD_CSV.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    text_cols = [c for c in ("investigation", "circumstances", "concerns") if rows and c in rows[0]]
    if not text_cols or not rows or "url" not in rows[0]:
        print(f"(skipping real-text check: no url/narrative columns in {PFD_CSV.name})")
        return None
    pairs = []
    for row in rows:
        slug = row["url"].rstrip("/").rsplit("/", 1)[-1]
        # some slugs end "-prevention-of-future-deaths-report": those words name no one
        slug = re.sub(r"-prevention-of-future-deaths?-report$", "", slug)
        parts = [p for p in slug.split("-") if p.isalpha() and len(p) > 2]
        text = "\n\n".join(row[c] for c in text_cols if row[c])
        if len(parts) >= 2 and text:
            pairs.append((parts[0], parts[-1], text))
        if len(pairs) >= limit:
            break
    texts = [cleaner.normalise(t) for _, _, t in pairs]
    before = after = 0
    for (first, last, _), raw, result in zip(pairs, texts, deid.deidentify(texts), strict=True):
        name = re.compile(rf"\b(?:{re.escape(first)}|{re.escape(last)})\b", re.IGNORECASE)
        # only where written as a name is (Long, LONG, McCabe), not as a word ("long-term")
        before += any(m.group()[0].isupper() for m in name.finditer(raw))
        after += any(m.group()[0].isupper() for m in name.finditer(result.text))
    return {
        "reports": len(pairs),
        "with_name_before": before,
        "with_name_after": after,
        "share_still_named": after / before if before else None,
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(report: dict) -> str:
    """A Markdown table of the scores."""
    acc = report["accuracy"]
    lines = [
        "| type | planted | recall | recall (any type) | target | predicted | precision |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in acc["per_type"].items():
        target = row["target_recall"]
        ok = (
            ""
            if target is None or row["recall"] is None
            else (" ✓" if row["recall"] >= target else " ✗")
        )
        lines.append(
            f"| {label} | {row['planted']} | {_fmt(row['recall'])}{ok} | "
            f"{_fmt(row['recall_any_type'])} | {_fmt(target) if target else '-'} | "
            f"{row['predicted']} | {_fmt(row['precision'])} |"
        )
    lines.append(
        f"| **all** | {sum(r['planted'] for r in acc['per_type'].values())} | "
        f"{_fmt(acc['recall_all'])} | {_fmt(acc['recall_all_any_type'])} | | | |"
    )
    clin_ok = "✓" if (acc["clinical_redacted_share"] or 0) <= CLINICAL_TARGET else "✗"
    tp = report["throughput"]
    lines += [
        "",
        f"Clinical terms wrongly redacted: {acc['clinical_redacted']}/{acc['clinical_terms']} "
        f"= {_fmt(acc['clinical_redacted_share'])} (target ≤ {_fmt(CLINICAL_TARGET)}) {clin_ok}",
        "",
        f"Throughput (normalise → de-identify → expand, {tp['records']} texts of "
        f"{tp['mean_words']:.0f} words on average, n_process={tp['n_process']}, "
        f"{tp['cpu_count']} CPUs, 1-min load before run {tp['load_average_1m']:.2f}): "
        f"**{tp['records_per_s']:.1f} records/s** ({tp['seconds']:.1f} s; "
        f"{tp['records_per_cpu_s']:.1f} records per CPU-second)",
    ]
    if report.get("throughput_long"):
        tl = report["throughput_long"]
        lines += [
            "",
            f"Throughput on longer records (three generated texts joined, {tl['records']} "
            f"records of {tl['mean_words']:.0f} words on average, same settings): "
            f"**{tl['records_per_s']:.1f} records/s** ({tl['seconds']:.1f} s; "
            f"{tl['records_per_cpu_s']:.1f} records per CPU-second)",
        ]
    if report.get("pfd"):
        p = report["pfd"]
        lines += [
            "",
            f"PFD reports still naming the deceased (slug name) after de-identification: "
            f"{p['with_name_after']}/{p['with_name_before']} = {_fmt(p['share_still_named'])}",
        ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark, print a table and write the results files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-texts", type=int, default=300)
    parser.add_argument("--throughput-texts", type=int, default=1000)
    parser.add_argument("--n-process", type=int, default=DeidentifySettings().n_process)
    parser.add_argument("--pfd-limit", type=int, default=500)
    args = parser.parse_args()

    deid = Deidentifier(DeidentifySettings(n_process=args.n_process))
    cleaner = TextCleaner(CleanSettings())
    testset = deid_testset(seed=args.seed, n_texts=args.n_texts)
    t0 = time.perf_counter()
    deid.deidentify(["Warm-up: Mrs Smith was seen."])
    load_s = time.perf_counter() - t0
    results = deid.deidentify([item.text for item in testset])
    report = {
        "seed": args.seed,
        "n_texts": args.n_texts,
        "engine_load_seconds": load_s,
        "python": platform.python_version(),
        "accuracy": score(testset, results),
    }
    bulk = deid_testset(seed=args.seed + 1, n_texts=args.throughput_texts)
    report["throughput"] = throughput(deid, cleaner, [item.text for item in bulk])
    # Typical narratives run to 60-150 words: join three generated texts into one record.
    long = deid_testset(seed=args.seed + 2, n_texts=3 * args.throughput_texts)
    joined = [" ".join(x.text for x in long[k : k + 3]) for k in range(0, len(long), 3)]
    report["throughput_long"] = throughput(deid, cleaner, joined)
    report["pfd"] = pfd_names(deid, cleaner, args.pfd_limit)

    text = table(report)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deid.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "deid.md").write_text(
        "# De-identification benchmark\n\n"
        f"`python benchmarks/bench_deid.py --seed {args.seed} --n-texts {args.n_texts}` "
        f"(labelled texts from `themes.demo.deid_testset`).\n\n" + text + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
