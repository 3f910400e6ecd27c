"""The governance report: on a small store built here (link strength, the actions sheet,
overdue as of the period, the same periods as emerging themes), and from the nightly
flow's demo run (slow): HTML in a real headless Chromium, the Excel workbook against the
database, emerging themes on discovered themes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from leaks import whole_word_leaks
from themes.actions import add_action, update_action
from themes.demo import EMERGING_THEME
from themes.emerging import PeriodError, emerging_themes, parse_period
from themes.governance import render_html, report_data, write_report, write_xlsx
from themes.steps import open_store
from themes.store import assignments, raw_records, utcnow


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_for_an_earlier_month_and_bad_periods(report) -> None:  # noqa: ANN001
    data = report_data(report["store"], report["settings"], period="2024-06")
    assert data["period"] == "2024-06" and data["counts"]["periods"][-1] == "2024-06"
    with pytest.raises(PeriodError, match="after the latest record"):
        report_data(report["store"], report["settings"], period="2099-01")
    with pytest.raises(PeriodError, match="YYYY-MM"):
        report_data(report["store"], report["settings"], period="June")


# -- a small store built here (fast) ---------------------------------------------------------
TODAY = date(2026, 1, 15)
"""The day the small store's reports are made: January 2026 is not over yet."""


def _monthly(store, counts: dict[int, list[int]], months: pd.PeriodIndex) -> None:  # noqa: ANN001
    """Records on the 10th of each month, `counts[theme][i]` of them in month i."""
    now = utcnow()
    raw, assigned = [], []
    for theme, per_month in counts.items():
        for month, n in zip(months, per_month, strict=True):
            for i in range(n):
                rid = f"r-{theme}-{month}-{i}"
                raw.append(
                    {"record_id": rid, "kind": "incident", "source": "test", "file": "t.csv",
                     "row_number": len(raw) + 1, "event_date": month.start_time.date()
                     + timedelta(days=9), "narrative": "n", "raw_hash": rid,
                     "first_seen": now, "updated_at": now}
                )  # fmt: skip
                assigned.append(
                    {"record_id": rid, "model_id": "m", "theme_id": theme, "score": 1.0,
                     "method": "test", "clean_hash": rid, "assigned_at": now}
                )  # fmt: skip
    with store.begin() as conn:
        conn.execute(raw_records.insert(), raw)
        conn.execute(assignments.insert(), assigned)


def _link(store, theme_id: int, rec_id: str, *, probability: float, rank: int) -> None:  # noqa: ANN001
    from themes.links import ensure_tables, link_id, theme_links_table

    ensure_tables(store)
    now = utcnow()
    with store.begin() as conn:
        conn.execute(
            theme_links_table.insert().values(
                link_id=link_id(theme_id, rec_id), theme_id=theme_id, rec_id=rec_id,
                model_id="m", rank=rank, score=2.5, probability=probability,
                strong=probability >= 0.5, n_cases=10, evidence="[]", current=True,
                first_linked_at=now, updated_at=now,
            )
        )  # fmt: skip


def _recorded_on(monkeypatch: pytest.MonkeyPatch, day: date) -> None:
    """Actions added or changed from now on are recorded at noon (UTC) on `day`."""
    monkeypatch.setattr("themes.actions.utcnow", lambda: datetime.combine(day, time(12)))


@pytest.fixture
def small(theme_model, settings, monkeypatch):  # noqa: ANN001, ANN201
    """Themes 1 (steady) and 2 (rising from October 2025), January 2024 to 10 January
    2026; links of theme 1 (one strong, one weak) and theme 2 (strong, no action); two
    actions due 15 November 2025 on theme 1, recorded on 1 September 2025: one still
    open, one done on 5 December 2025."""
    from themes.recommendations import load_dir, save

    months = pd.period_range("2024-01", "2026-01", freq="M")
    _monthly(
        theme_model,
        {1: [4, 6] * 12 + [2], 2: [3] * 21 + [15, 18, 20, 6]},
        months,
    )
    save(theme_model, load_dir(Path("config/recommendations")), file="config/recommendations")
    _link(theme_model, 1, "ockenden-2022-iea-10", probability=0.62, rank=1)
    _link(theme_model, 1, "francis-2013-001", probability=0.21, rank=2)
    _link(theme_model, 2, "francis-2013-001", probability=0.8, rank=1)
    due = "2025-11-15"
    _recorded_on(monkeypatch, date(2025, 9, 1))
    open_one = add_action(theme_model, rec_id="ockenden-2022-iea-10", owner="Head of Midwifery",
                          action="CTG training", due_date=due, theme_id=1, by="u")  # fmt: skip
    done = add_action(theme_model, rec_id="ockenden-2022-iea-10", owner="Clinical Director",
                      action="Fresh eyes audit", due_date=due, theme_id=1, by="u")  # fmt: skip
    _recorded_on(monkeypatch, date(2025, 12, 5))
    update_action(theme_model, done["action_id"], by="u", status="done", evidence="audit, Dec")
    return {"store": theme_model, "settings": settings, "open": open_one, "done": done}


def _sheet(path: Path, name: str) -> list[dict]:
    rows = list(load_workbook(path, read_only=True)[name].iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def _write(small, tmp_path: Path, period: str | None) -> tuple[dict, str, Path]:  # noqa: ANN001
    data = report_data(small["store"], small["settings"], period=period, today=TODAY)
    return data, render_html(data), write_xlsx(data, tmp_path / f"{data['period']}.xlsx")


def test_links_show_their_probability_and_strength_in_html_and_excel(small, tmp_path) -> None:  # noqa: ANN001
    _, html, xlsx = _write(small, tmp_path, "2025-12")
    assert "P 0.62, strong" in html and "P 0.21, weak" in html and "P 0.80, strong" in html
    rows = {(r["theme_id"], r["number"]): r for r in _sheet(xlsx, "Recommendation links")}
    shown = {(k[0], r["probability"], r["strength"]) for k, r in rows.items()}
    assert shown == {(1, 0.62, "strong"), (1, 0.21, "weak"), (2, 0.8, "strong")}


def test_excel_actions_sheet_lists_actions_and_flags_for_filtering(small, tmp_path) -> None:  # noqa: ANN001
    _, _, xlsx = _write(small, tmp_path, "2025-12")
    ws = load_workbook(xlsx)["Actions"]
    assert ws.auto_filter.ref, "the governance team filters the sheet in Excel"
    rows = _sheet(xlsx, "Actions")
    by_id = {r["action_id"]: r for r in rows if r["action_id"] is not None}
    late = by_id[small["open"]["action_id"]]
    assert late["theme_id"] == 1 and late["theme"] == "theme 1"
    assert late["recommendation id"] == "ockenden-2022-iea-10"
    assert (late["owner"], late["action"], late["status"]) == (
        "Head of Midwifery", "CTG training", "open",
    )  # fmt: skip
    assert late["due date"].date() == date(2025, 11, 15)
    assert late["overdue"] is True and late["flag"] == "overdue"
    done = by_id[small["done"]["action_id"]]
    assert done["status"] == "done" and done["evidence"] == "audit, Dec" and not done["flag"]
    gaps = [r for r in rows if r["flag"] == "strong link, no action"]
    assert [(r["theme_id"], r["recommendation id"]) for r in gaps] == [(2, "francis-2013-001")]


def test_actions_are_overdue_as_of_the_end_of_the_reported_period(small, tmp_path) -> None:  # noqa: ANN001
    open_id, done_id = small["open"]["action_id"], small["done"]["action_id"]
    data, html, xlsx = _write(small, tmp_path, "2025-10")  # due 15 November: not yet late
    assert data["actions_as_of"] == "2025-10-31"
    assert data["extras"]["actions"]["overdue"] == []
    assert {li["action_status"] for li in data["extras"]["links"][1]} == {"open", "no action"}
    assert "Overdue:" not in html and ">overdue<" not in html
    assert {r["action_id"]: r["overdue"] for r in _sheet(xlsx, "Actions") if r["action_id"]} == {
        open_id: False,
        done_id: False,
    }
    data, html, xlsx = _write(small, tmp_path, "2025-12")  # the open one is late by then
    assert [a["action_id"] for a in data["extras"]["actions"]["overdue"]] == [open_id]
    assert data["extras"]["links"][1][0]["action_status"] == "overdue"
    assert "Overdue:" in html and "2025-12-31" in html


def test_a_past_period_shows_each_action_as_it_stood_then(small, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Made again later, October's report still shows the action done in December as
    open, and leaves out an action recorded in January: its strong link had none then."""
    done_id = small["done"]["action_id"]
    _recorded_on(monkeypatch, date(2026, 1, 5))
    late = add_action(small["store"], rec_id="francis-2013-001", owner="Medical Director",
                      action="Candour audit", theme_id=2, by="u")  # fmt: skip
    data, html, xlsx = _write(small, tmp_path, "2025-10")
    rows = _sheet(xlsx, "Actions")
    by_id = {r["action_id"]: r for r in rows if r["action_id"] is not None}
    assert set(by_id) == {small["open"]["action_id"], done_id}
    assert (by_id[done_id]["status"], by_id[done_id]["evidence"]) == ("open", None)
    gaps = [(r["theme_id"], r["recommendation id"]) for r in rows if r["flag"]]
    assert gaps == [(2, "francis-2013-001")]
    assert data["extras"]["links"][2][0]["action_status"] == "no action"
    assert "No action: theme 2" in html
    # the report for January, once it is over, has the new action and no gap
    data = report_data(small["store"], small["settings"], period="2026-01", today=date(2026, 2, 1))
    assert late["action_id"] in {a["action_id"] for a in data["extras"]["action_list"]}
    assert data["extras"]["actions"]["strong_without_action"] == []
    assert data["extras"]["links"][2][0]["action_status"] == "open"
    statuses = {a["action_id"]: a["status"] for a in data["extras"]["action_list"]}
    assert statuses[done_id] == "done"


def test_report_and_emerging_themes_cover_the_same_periods(small) -> None:  # noqa: ANN001
    store, trends = small["store"], small["settings"].trends
    for period in (None, "2025-11"):
        data = report_data(store, small["settings"], period=period, today=TODAY)
        asked = parse_period(period)
        emerging = emerging_themes(store, trends, period=asked, today=TODAY)
        assert emerging, "theme 2 rises from October 2025"
        for e in emerging + data["emerging"]:
            assert e["chart"]["periods"] == data["counts"]["periods"]
    # January 2026 is not over on TODAY: left out by default, refused when asked for, by both
    assert data["counts"]["periods"][0] == "2024-01"
    default = report_data(store, small["settings"], today=TODAY)
    assert default["period"] == "2025-12" and default["counts"]["periods"][-1] == "2025-12"
    for period, why in (("2026-01", "not over until"), ("2026-03", "after the latest record")):
        with pytest.raises(PeriodError, match=why) as from_report:
            report_data(store, small["settings"], period=period, today=TODAY)
        with pytest.raises(PeriodError, match=why) as from_emerging:
            emerging_themes(store, trends, period=parse_period(period), today=TODAY)
        assert str(from_report.value) == str(from_emerging.value)
    # the data end before the current date: a month after the latest record is refused too
    later = date(2026, 4, 2)
    assert report_data(store, small["settings"], today=later)["period"] == "2026-01"
    with pytest.raises(PeriodError, match="after the latest record"):
        report_data(store, small["settings"], period="2026-02", today=later)
    with pytest.raises(PeriodError, match="after the latest record"):
        emerging_themes(store, trends, period=parse_period("2026-02"), today=later)
