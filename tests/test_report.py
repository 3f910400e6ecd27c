"""The governance report from the nightly flow's demo run: HTML in a real headless
Chromium, the Excel workbook against the database, emerging themes on discovered themes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from leaks import whole_word_leaks
from themes.demo import EMERGING_THEME
from themes.emerging import emerging_themes
from themes.governance import report_data, write_report
from themes.steps import open_store
from themes.store import assignments, raw_records

pytestmark = pytest.mark.slow


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (`apt-get install chromium`; .ci/run does it)")
    return path


def _chromium_run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ]
    return subprocess.run(
        [_chromium(), *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _labels(demo_run) -> list[dict[str, str]]:  # noqa: ANN001
    with demo_run["manifest"].labels_path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(demo_run, tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("report")
    store = open_store(demo_run["settings"])
    paths = write_report(store, demo_run["settings"], out_dir=out)
    return {"store": store, "paths": paths, "out": out, "settings": demo_run["settings"]}


def test_flow_wrote_the_report_and_linked_it_from_the_artifact(demo_run) -> None:  # noqa: ANN001
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    rep = demo_run["summary"]["report"]
    assert rep["written"], rep
    assert Path(rep["html"]).is_file() and Path(rep["xlsx"]).is_file()

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["nightly-themes-summary"])
                )
            )

    texts = [a.data for a in asyncio.run(read())]
    assert any(Path(rep["html"]).as_uri() in t and Path(rep["xlsx"]).as_uri() in t for t in texts)


def test_html_renders_in_chromium_with_charts_and_emerging_section(report, demo_run) -> None:  # noqa: ANN001
    html = report["paths"]["html"]
    text = html.read_text(encoding="utf-8")
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|<link\b|@import|url\(""", text)
    assert "<script" not in text and not external, f"not self-contained: {external[:3]}"
    run = _chromium_run(report["out"], "--dump-dom", html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert '<section id="emerging">' in dom
    assert dom.count('class="card emerging-theme"') >= 1
    assert dom.count('<svg class="spc"') >= 2, "each emerging theme and theme has a chart"
    assert 'class="pt concern"' in dom, "special causes of concern are drawn"
    # the other capabilities' tables appear per theme: links with evidence and action
    # status (issue 4), contributory factors and harm (issue 6)
    assert "Linked national recommendations" in dom and "no action" in dom
    assert 'class="factors"' in dom and 'class="harm"' in dom
    # no identifier planted in the demo data shows anywhere in the rendered page
    visible = re.sub(r"<[^>]+>", " ", dom)
    planted = {
        i["value"] for row in _labels(demo_run) for i in json.loads(row["identifiers"] or "[]")
    }
    assert len(planted) > 100
    leaked = whole_word_leaks(planted, visible)
    assert not leaked, f"{len(leaked)} planted identifiers in the report, e.g. {leaked[:3]}"
    pdf = report["out"] / "report.pdf"
    run = _chromium_run(report["out"], f"--print-to-pdf={pdf}", "--no-pdf-header-footer",
                        html.as_uri())  # fmt: skip
    assert run.returncode == 0 and pdf.stat().st_size > 10_000
    assert pdf.read_bytes().count(b"/Type /Page") >= 2


def test_excel_holds_the_same_counts_as_the_database(report) -> None:  # noqa: ANN001
    wb = load_workbook(report["paths"]["xlsx"], read_only=True)
    assert {
        "Summary",
        "Emerging",
        "Themes",
        "Counts by period",
        "Share of records",
        "By kind",
        "Recommendation links",
        "Contributory factors",
        "Cases",
    } <= set(wb.sheetnames)
    rows = list(wb["Counts by period"].iter_rows(values_only=True))
    periods = list(rows[0][2:])
    sheet = {(r[0], p): v for r in rows[1:] for p, v in zip(periods, r[2:], strict=True)}
    with report["store"].connect() as conn:
        db = conn.execute(
            sa.select(assignments.c.theme_id, raw_records.c.event_date).select_from(
                assignments.join(raw_records, raw_records.c.record_id == assignments.c.record_id)
            )
        ).all()
    expected = Counter((k, d.strftime("%Y-%m")) for k, d in db if k >= 0)
    shown = {k for k, _ in sheet}
    assert shown, "the workbook lists themes"
    for (key, period), value in sheet.items():
        assert value == expected.get((key, period), 0), (key, period)
    assert sum(v for (k, _), v in expected.items() if k in shown) == sum(sheet.values())
    kinds = list(wb["By kind"].iter_rows(values_only=True))[1:]
    assert sum(r[3] for r in kinds) == sum(sheet.values())


def test_planted_emerging_theme_ranks_first_among_discovered_themes(report, demo_run) -> None:  # noqa: ANN001
    truth = {r["record_id"]: r["theme"] for r in _labels(demo_run) if not r["defect"]}
    ranked = emerging_themes(report["store"], report["settings"].trends)
    assert ranked, "the planted emerging theme raises an alert"
    with report["store"].connect() as conn:
        members = [
            r[0]
            for r in conn.execute(
                sa.select(assignments.c.record_id).where(
                    assignments.c.theme_id == ranked[0]["theme_id"]
                )
            )
        ]
    top = Counter(truth[m] for m in members if m in truth).most_common(1)[0][0]
    assert top == EMERGING_THEME, ranked[0]["label"]
    assert ranked[0]["cases"] and ranked[0]["kinds"]


def test_report_for_an_earlier_month_and_bad_periods(report) -> None:  # noqa: ANN001
    from themes.emerging import PeriodError

    data = report_data(report["store"], report["settings"], period="2024-06")
    assert data["period"] == "2024-06" and data["counts"]["periods"][-1] == "2024-06"
    with pytest.raises(PeriodError, match="after the latest record"):
        report_data(report["store"], report["settings"], period="2099-01")
    with pytest.raises(PeriodError, match="YYYY-MM"):
        report_data(report["store"], report["settings"], period="June")
