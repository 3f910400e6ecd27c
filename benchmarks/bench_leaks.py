"""Planted identifiers left in the clean text of whole demo exports, per type and seed.

The de-identification benchmark (`bench_deid.py`) scores short labelled narratives. This
one reads the demo generator's real exports (incidents CSV in Windows-1252, complaints
XLSX, claims CSV) through the product's own source mappings (`themes.ingest`), cleans
and de-identifies every record's narrative as the nightly flow does
(`steps.clean_texts_for_evaluation`), and counts the planted identifiers (labels.csv)
still present as whole words. A leak is shown with its type and the words around it,
the identifier itself masked, so the results never print a planted value. For person
names it also counts partial leaks: a name of two or more words that is gone as a whole
but one of whose words (capitalised, three letters or more) is still there ("Tunde
[PERSON]").

Usage: python benchmarks/bench_leaks.py [--seeds 7 8] [--records 3000]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_result  # noqa: E402


def leaks_in(value: str, text: str) -> list[int]:
    """Start offsets of `value` in `text` as a whole word ("Tran" not inside "Transfer")."""
    if value not in text:
        return []
    return [m.start() for m in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text)]


def scan(seed: int, n_records: int) -> dict[str, Any]:
    from themes import steps
    from themes.demo import generate_demo
    from themes.ingest import map_records, read_export
    from themes.records import load_mapping
    from themes.settings import load_settings

    settings = load_settings()
    root = Path(tempfile.mkdtemp(prefix="bench_leaks_"))
    manifest = generate_demo(root, seed=seed, n_records=n_records)
    with manifest.labels_path.open(encoding="utf-8") as f:
        planted = {r["record_id"]: json.loads(r["identifiers"] or "[]") for r in csv.DictReader(f)}
    ids, texts = [], []
    for kind, path in manifest.files.items():
        source = settings.ingest.default_source[kind]
        mapped = map_records(
            read_export(path), load_mapping(settings.ingest.sources_dir, source), file=str(path)
        )
        for rec in mapped.records:
            if planted.get(rec.record_id):
                ids.append(rec.record_id)
                texts.append(rec.narrative)
    t0 = time.perf_counter()
    clean = steps.clean_texts_for_evaluation(settings, texts)
    seconds = time.perf_counter() - t0
    by_type: Counter[str] = Counter()
    leaked_by_type: Counter[str] = Counter()
    partial = 0
    examples = []
    for rid, text in zip(ids, clean, strict=True):
        for ident in planted[rid]:
            by_type[ident["type"]] += 1
            hits = leaks_in(ident["value"], text)
            if not hits and ident["type"] == "PERSON" and len(ident["value"].split()) > 1:
                words = [w for w in ident["value"].split() if len(w) >= 3 and w[0].isupper()]
                left = [(k, w) for w in words for k in leaks_in(w, text)]
                if left:
                    partial += 1
                    k, word = left[0]
                    masked = text[max(0, k - 60) : k] + "<PART>" + text[k + len(word) :]
                    examples.append(
                        {
                            "record_id": rid,
                            "type": "PERSON (partial)",
                            "context": masked[:120].replace("\n", " "),
                        }
                    )
            if hits:
                leaked_by_type[ident["type"]] += 1
                k = hits[0]
                masked = text[max(0, k - 60) : k] + "<LEAK>" + text[k + len(ident["value"]) :]
                examples.append(
                    {
                        "record_id": rid,
                        "type": ident["type"],
                        "context": masked[:120].replace("\n", " "),
                    }
                )
    return {
        "seed": seed,
        "records": len(ids),
        "planted": sum(by_type.values()),
        "leaked": sum(leaked_by_type.values()),
        "person_partial": partial,
        "by_type": {
            t: {
                "planted": n,
                "leaked": leaked_by_type[t],
                "recall": round(1 - leaked_by_type[t] / n, 4),
            }
            for t, n in sorted(by_type.items())
        },
        "clean_seconds": round(seconds, 1),
        "examples": examples,
    }


def markdown(runs: list[dict[str, Any]], command: str) -> str:
    md = ["# Planted identifiers left in whole demo exports", ""]
    md.append(
        "Each seed's demo exports read through the product's source mappings, cleaned and "
        "de-identified as the nightly flow does; a leak is a planted identifier still in "
        "the clean text as a whole word. Recall here is the share of planted identifiers "
        "removed. 'names partly left': person names gone as a whole but with one of "
        "their words still there."
    )
    types = sorted({t for r in runs for t in r["by_type"]})
    rows = []
    for r in runs:
        rows.append(
            [
                r["seed"],
                r["records"],
                r["planted"],
                r["leaked"],
                round(1 - r["leaked"] / r["planted"], 4),
                r.get("person_partial", "-"),
            ]
            + [
                f"{r['by_type'][t]['leaked']}/{r['by_type'][t]['planted']}"
                if t in r["by_type"]
                else "-"
                for t in types
            ]
        )
    md += [
        "",
        md_table(
            ["seed", "records", "planted", "leaked", "removed", "names partly left", *types], rows
        ),
        "",
    ]
    md.append("Leaks (identifier masked as <LEAK>, a name's word left as <PART>):")
    md.append("")
    md.append(
        md_table(
            ["seed", "record", "type", "context"],
            [
                [r["seed"], e["record_id"], e["type"], e["context"]]
                for r in runs
                for e in r["examples"]
            ],
        )
    )
    md += ["", f"Command: `{command}`"]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    ap.add_argument("--records", type=int, default=3000)
    args = ap.parse_args()
    runs = [scan(seed, args.records) for seed in args.seeds]
    command = (
        f"python benchmarks/bench_leaks.py --seeds {' '.join(map(str, args.seeds))} "
        f"--records {args.records}"
    )
    write_result("deid_demo", {"runs": runs}, markdown(runs, command))


if __name__ == "__main__":
    main()
