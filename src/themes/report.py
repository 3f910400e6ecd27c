"""Human-readable summaries of runs (Prefect artifact, CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_summary_markdown(summary: dict[str, Any]) -> str:
    """A markdown summary of a nightly run: records in, quarantined, themes and changes."""
    lines = [
        f"# Nightly themes run `{summary.get('run_id', '?')[:8]}`: {summary.get('status')}",
        "",
    ]
    ingest = summary.get("ingest") or {}
    files = ingest.get("files", [])
    if files:
        lines += [
            "## Records in",
            "",
            "| file | source | rows | new | updated | unchanged | quarantined |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for f in files:
            note = " (already ingested)" if f.get("skipped_unchanged_file") else ""
            lines.append(
                f"| {f['file']}{note} | {f['source']} | {f['n_rows']} | {f['inserted']} | "
                f"{f['updated']} | {f['unchanged']} | {f['quarantined']} |"
            )
        reasons: dict[str, int] = {}
        for f in files:
            for reason, n in f.get("reasons", {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
        if reasons:
            lines += [
                "",
                "Quarantined by reason: " + ", ".join(f"{r}: {n}" for r, n in reasons.items()),
            ]
    else:
        lines += ["No new exports in the drop folder."]
    for err in ingest.get("errors", []):
        lines += ["", f"**Error:** {err}"]
    clean = summary.get("clean") or {}
    if clean:
        ids = clean.get("identifiers_replaced", {})
        lines += [
            "",
            "## De-identification",
            "",
            f"{clean.get('cleaned', 0)} narratives cleaned; identifiers replaced: "
            + (", ".join(f"{k} {v}" for k, v in sorted(ids.items())) or "none"),
        ]
        if clean.get("recleaned"):
            lines += [
                "",
                "The cleaning rules (settings, word lists, cleaning code or package versions) "
                f"changed, so {clean['recleaned']} stored narratives were cleaned again; "
                f"{clean.get('recleaned_changed', 0)} of them changed.",
            ]
    themes = (summary.get("themes") or {}).get("themes")
    if themes:
        embedded = summary["themes"].get("embedded", 0)
        precision = summary["themes"].get("embed_precision")
        # the arithmetic decides how long a first run takes (README, "How long a run takes")
        arithmetic = f" (in {precision})" if embedded and precision else ""
        lines += [
            "",
            "## Themes",
            "",
            f"- {'Refit' if themes['refit'] else 'Assigned to existing themes'}: "
            f"{themes['reason']}",
            f"- Model `{themes['model_id']}` with {themes['n_themes']} themes",
            f"- Records (re)assigned this run: {themes['assigned']}",
            f"- Newly embedded texts: {embedded}{arithmetic}",
        ]
        if themes["refit"]:
            lines.append(
                f"- Outliers before reassignment: {themes.get('outliers_before_reassignment', 0)}"
            )
    report = summary.get("report") or {}
    if report.get("written"):
        lines += [
            "",
            "## Governance report",
            "",
            f"- [HTML report]({Path(report['html']).as_uri()}) (self-contained; print to PDF "
            "from a browser)",
            f"- [Excel workbook]({Path(report['xlsx']).as_uri()})",
        ]
    elif report:
        lines += ["", f"Governance report not written: {report.get('reason')}"]
    registry = ((summary.get("themes") or {}).get("themes") or {}).get("extra", {}).get("registry")
    if registry:
        lines += [
            "",
            "## Theme registry",
            "",
            f"- matched {registry['matched']}, born {registry['born']}, retired "
            f"{registry['retired']}, splits {registry['splits']}, merges {registry['merges']}",
            f"- records that changed theme: {registry['moved_records']} "
            "(see `themes history THEME_ID`)",
        ]
    taxonomy = ((summary.get("themes") or {}).get("themes") or {}).get("extra", {}).get("taxonomy")
    if taxonomy:
        lines += [
            "",
            "## Seeded themes (taxonomy)",
            "",
            f"- {taxonomy['seeds_used']} of {taxonomy['seeds']} taxonomy themes took records: "
            f"{taxonomy['records_seeded']} records ({taxonomy['share_seeded']:.1%})",
        ]
        if taxonomy["unused"]:
            lines.append(
                "- No record reached `themes.seed_min_similarity` for: "
                + ", ".join(taxonomy["unused"])
                + " (add examples written the way the records are written, or lower the "
                "setting)"
            )
    totals = summary.get("totals")
    if totals:
        lines += ["", "## Store totals", ""]
        lines += [f"- {k}: {v}" for k, v in totals.items()]
    return "\n".join(lines) + "\n"
