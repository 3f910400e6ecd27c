"""The governance report for a period: a self-contained HTML page and an Excel workbook.

The HTML has its charts embedded as inline SVG, no scripts and no external resources, so
it opens offline, can be e-mailed as one file and prints cleanly to PDF from a browser.
The workbook holds the same tables (governance teams work in Excel). Only de-identified
text is used; the data come from `report_data`, which the CLI (`themes report`) and the
nightly flow share.

Sections from other capabilities (linked recommendations, contributory factors,
near-duplicates) are included when those modules provide them.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from themes.emerging import (
    BREAKDOWNS,
    Freq,
    PeriodError,
    all_records_dates,
    breakdown,
    chart,
    chart_dict,
    emerging_themes,
    parse_period,
    resolve_period,
    shares,
    theme_counts,
    theme_frame,
)
from themes.settings import Settings
from themes.store import Store

log = logging.getLogger(__name__)

FORMATS = ("html", "xlsx")


def report_data(
    store: Store,
    settings: Settings,
    *,
    period: str | None = None,
    freq: Freq = "M",
    today: date | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as plain data (JSON-ready).

    The period is chosen as for emerging themes (`resolve_period` on `today`: by default
    the latest complete one); actions are judged overdue as of the period's last day.
    """
    from themes.queries import list_themes, show_theme

    frame = theme_frame(store)
    if frame.empty:
        raise PeriodError("No themed records yet: run the nightly flow (`themes run`) first.")
    end = resolve_period(frame["event_date"], parse_period(period, freq), freq=freq, today=today)
    as_of = end.end_time.date()
    frame = frame[frame["event_date"] <= end.end_time]
    counts = theme_counts(frame, freq=freq, end=end)
    share = shares(counts, all_records_dates(store), freq=freq)
    themes = {t["theme_id"]: t for t in list_themes(store)}
    counts = counts[[c for c in counts.columns if c in themes]]
    in_period = frame[(frame["event_date"] >= end.start_time)]
    current = counts.iloc[-1] if len(counts) else pd.Series(dtype=int)
    previous = counts.iloc[-2] if len(counts) > 1 else pd.Series(0, index=counts.columns)
    rs = settings.report
    theme_rows = []
    for key in sorted(counts.columns, key=lambda k: (-int(current.get(k, 0)), k))[: rs.top_themes]:
        detail = show_theme(store, int(key))
        theme_rows.append(
            {
                "theme_id": int(key),
                "label": themes[key]["label"],
                "keywords": themes[key]["keywords"][:8],
                "total": int(counts[key].sum()),
                "this_period": int(current.get(key, 0)),
                "previous_period": int(previous.get(key, 0)),
                "share_this_period": float(share[key].iloc[-1]) if key in share else None,
                "kinds": detail["kinds"],
                "chart": chart_dict(chart(counts[key], settings.trends)),
                "cases": detail["representatives"][: rs.n_cases],
            }
        )
    by_kind = {
        kind: [
            {"theme_id": int(k), "label": themes[k]["label"], "count": int(n)}
            for k, n in grp["theme_id"].value_counts().head(5).items()
            if k in themes
        ]
        for kind, grp in in_period.groupby("kind")
    }
    data: dict[str, Any] = {
        "title": f"{rs.title}: {_period_name(end, freq)}",
        "period": str(end),
        "freq": freq,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "records_in_period": int(len(in_period)),
        "records_total": int(len(frame)),
        "kinds_in_period": {str(k): int(v) for k, v in in_period["kind"].value_counts().items()},
        "actions_as_of": as_of.isoformat(),
        "emerging": emerging_themes(
            store, settings.trends, freq=freq, period=end, n_cases=rs.n_cases, today=today
        ),
        "themes": theme_rows,
        "top_by_kind": by_kind,
        "counts": {
            "periods": [str(p) for p in counts.index],
            "themes": {int(k): [int(v) for v in counts[k].tolist()] for k in counts.columns},
            "labels": {int(k): themes[k]["label"] for k in counts.columns},
            "shares": {
                int(k): [None if pd.isna(v) else round(float(v), 4) for v in share[k].tolist()]
                for k in counts.columns
                if k in share
            },
        },
        "breakdowns": {
            by: breakdown(frame, by, freq=freq, end=end)
            .assign(period=lambda d: d["period"].astype(str))
            .to_dict("records")
            for by in BREAKDOWNS
        },
        "extras": _extras(store, [r["theme_id"] for r in theme_rows], as_of=as_of),
    }
    return data


def _period_name(p: pd.Period, freq: Freq) -> str:
    if freq == "M":
        return p.start_time.strftime("%B %Y")
    return f"week beginning {p.start_time.date().isoformat()}"


def _extras(store: Store, theme_ids: list[int], *, as_of: date) -> dict[str, Any]:
    """Sections from other capabilities (recommendation links and actions, contributory
    factors and harm, near-duplicates), when their tables hold data. Actions are shown as
    they stood at the end of `as_of`, and judged overdue on that day."""
    extras: dict[str, Any] = {}
    try:
        from themes import links
        from themes.actions import actions_as_of

        action_list = actions_as_of(store, as_of)
        extras["links"] = {
            t: links.theme_links(store, t, actions=action_list)[:3] for t in theme_ids
        }
        extras["actions"] = links.flagged_actions(store, actions=action_list)
        extras["action_list"] = action_list
    except Exception as e:  # noqa: BLE001 - an optional section must not sink the report
        log.warning("report: recommendation links left out (%s)", e)
    try:
        from themes import factors

        extras["factors"] = {t: factors.factor_profile(store, t)[:5] for t in theme_ids}
        extras["harm"] = {t: factors.harm_distribution(store, t) for t in theme_ids}
    except Exception as e:  # noqa: BLE001
        log.warning("report: contributory factors left out (%s)", e)
    try:
        from themes import duplicates

        extras["duplicates"] = duplicates.duplicate_groups(store, limit=20)
    except Exception as e:  # noqa: BLE001
        log.warning("report: near-duplicate groups left out (%s)", e)
    return {k: v for k, v in extras.items() if v}


# -- SVG charts --------------------------------------------------------------------------
COLOURS = {
    "value": "#005eb8",  # NHS blue
    "mean": "#425563",
    "limit": "#768692",
    "concern": "#ed8b00",  # MDC orange: special cause of concern
    "improvement": "#41b6e6",
    "common": "#425563",
}


def svg_chart(c: dict[str, Any], *, width: int = 640, height: int = 180, title: str = "") -> str:
    """An XmR chart as inline SVG: counts, centre line, process limits, special causes."""
    values = c["values"]
    n = len(values)
    if n == 0:
        return ""
    pad_l, pad_r, pad_t, pad_b = 36, 8, 10, 28
    lo = min(0.0, min(c["lower_process_limit"]))
    hi = max(max(values), max(c["upper_process_limit"]), 1.0) * 1.05
    lo = max(lo, 0.0)

    def x(i: float) -> float:
        return pad_l + (width - pad_l - pad_r) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return pad_t + (height - pad_t - pad_b) * (1 - (v - lo) / (hi - lo or 1))

    def line(series: list[float], colour: str, dash: str = "") -> str:
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(series))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{extra} points="{pts}"/>'

    parts = [
        f'<svg class="spc" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)} XmR chart">',
        f"<title>{escape(title)}</title>",
        line(c["upper_process_limit"], COLOURS["limit"], "4 3"),
        line([max(v, 0) for v in c["lower_process_limit"]], COLOURS["limit"], "4 3"),
        line(c["mean"], COLOURS["mean"]),
        line(values, COLOURS["value"]),
    ]
    for i, v in enumerate(values):
        kind = c["special_cause"][i]
        colour = COLOURS.get(kind, COLOURS["common"])
        r = 3.5 if kind in ("concern", "improvement") else 2.2
        tip = f"{c['periods'][i]}: {v:g}" + (
            f" ({kind}: {', '.join(c['rules'][i])})" if c["rules"][i] else ""
        )
        parts.append(
            f'<circle class="pt {kind}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="{r}" '
            f'fill="{colour}"><title>{escape(tip)}</title></circle>'
        )
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" font-size="10" text-anchor="{anchor}" '
            f'fill="#425563">{escape(c["periods"][i])}</text>'
        )
    parts.append(
        f'<text x="4" y="{y(hi / 1.05) + 4:.1f}" font-size="10" fill="#425563">{hi / 1.05:.0f}'
        f'</text><text x="4" y="{y(lo):.1f}" font-size="10" fill="#425563">{lo:.0f}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


# -- HTML --------------------------------------------------------------------------------
_CSS = """
body{font-family:Arial,Helvetica,sans-serif;color:#212b32;margin:2rem auto;max-width:60rem;
line-height:1.4}
h1{color:#005eb8;margin-bottom:.2rem}h2{border-bottom:2px solid #005eb8;padding-bottom:.2rem;
margin-top:2rem}h3{margin:.2rem 0}
.meta{color:#425563}.card{border:1px solid #d8dde0;border-radius:4px;padding:.8rem 1rem;
margin:1rem 0;page-break-inside:avoid;break-inside:avoid}
.reason{display:inline-block;background:#fff4e5;border:1px solid #ed8b00;border-radius:3px;
padding:0 .4rem;margin-right:.3rem;font-size:.85rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #d8dde0;
padding:.25rem .4rem;text-align:left;font-size:.9rem;vertical-align:top}th{background:#f0f4f5}
td.n{text-align:right}blockquote{margin:.4rem 0;padding:.3rem .6rem;border-left:4px solid #d8dde0;
font-size:.9rem;white-space:pre-wrap}.legend{font-size:.8rem;color:#425563}
.kw{color:#425563;font-size:.85rem}
@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}a{color:inherit}}
"""


def _cases_html(cases: list[dict[str, Any]]) -> str:
    return "".join(
        f"<blockquote><strong>{escape(c['record_id'])}</strong> · {escape(c['kind'])} · "
        f"{escape(c['event_date'])}<br>{escape(c['text'][:600])}</blockquote>"
        for c in cases
    )


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{escape(str(k))} {v}" for k, v in d.items()) or "none"


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML document."""
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(data['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(data['title'])}</h1>",
        f"<p class='meta'>Period {escape(data['period'])} · {data['records_in_period']} records "
        f"in the period ({_kv(data['kinds_in_period'])}) · {data['records_total']} records to "
        f"date · generated {escape(data['generated_at'])} · all case text is de-identified.</p>",
        "<p class='legend'>Charts are XmR charts (NHS England, Making Data Count): blue line "
        "= count per period, grey line = mean, dashed = process limits (mean ± 2.66 × mean "
        "moving range). Orange points are special causes of concern (a point beyond a limit, "
        "7 points on one side of the mean, 7 rising or falling, or 2 of 3 beyond two sigma). "
        "For themes, up is concern.</p>",
        "<section id='emerging'><h2>Emerging themes</h2>",
    ]
    if not data["emerging"]:
        out.append("<p>No theme shows a special-cause increase or is newly emerging.</p>")
    for rank, e in enumerate(data["emerging"], 1):
        reasons = "".join(f"<span class='reason'>{escape(r)}</span>" for r in e["reasons"])
        warn = "".join(f"<p class='legend'>⚠ {escape(w)}</p>" for w in e["chart"]["warnings"])
        out.append(
            f"<div class='card emerging-theme'><h3>{rank}. Theme {e['theme_id']}: "
            f"{escape(e['label'])}</h3><p>{reasons}</p>"
            f"<p>Mean per period before: {e['before']:g}; recent periods: {e['recent']:g} "
            f"({e['recent_cases']} cases). Kinds: {_kv(e['kinds'])}. "
            f"Locations: {_kv(dict(list(e['locations'].items())[:6]))}.</p>"
            f"{svg_chart(e['chart'], title=e['label'])}{warn}{_cases_html(e['cases'])}</div>"
        )
    out.append("</section><section id='by-kind'><h2>Top themes by kind this period</h2>")
    if not data["top_by_kind"]:
        out.append("<p>No records in this period.</p>")
    for kind, rows in data["top_by_kind"].items():
        out.append(f"<h3>{escape(kind.title())}s</h3><table><tr><th>theme</th><th>count</th></tr>")
        out += [
            f"<tr><td>{r['theme_id']}: {escape(r['label'])}</td><td class='n'>{r['count']}</td>"
            "</tr>"
            for r in rows
        ]
        out.append("</table>")
    out.append("</section><section id='themes'><h2>Themes</h2>")
    extras = data.get("extras", {})
    for t in data["themes"]:
        out.append(
            f"<div class='card theme'><h3>Theme {t['theme_id']}: {escape(t['label'])}</h3>"
            f"<p class='kw'>Keywords: {escape(', '.join(t['keywords']))}</p>"
            f"<p>This period {t['this_period']} (previous {t['previous_period']}); "
            f"{t['total']} to date. Kinds: {_kv(t['kinds'])}.</p>"
            f"{svg_chart(t['chart'], title=t['label'])}"
            f"{_extras_html(extras, t['theme_id'])}{_cases_html(t['cases'])}</div>"
        )
    out.append("</section>")
    out.append(_global_extras_html(extras, data["actions_as_of"]))
    out.append("</body></html>")
    return "\n".join(out)


def _extras_html(extras: dict[str, Any], theme_id: int) -> str:
    html = []
    links = extras.get("links", {}).get(theme_id) or []
    if links:
        rows = []
        for li in links:
            rec = li.get("recommendation", {})
            ev = (li.get("evidence") or [{}])[0]
            phrase = ""
            if ev.get("case_phrase"):
                phrase = (
                    f"<br><span class='kw'>Case {escape(str(ev.get('record_id', '')))}: "
                    f"“{escape(ev['case_phrase'][:160])}” ↔ “"
                    f"{escape(str(ev.get('recommendation_phrase', ''))[:160])}”</span>"
                )
            rows.append(
                f"<tr><td>{escape(str(rec.get('source', '')))} "
                f"{escape(str(rec.get('number', '')))}</td>"
                f"<td>{escape(str(rec.get('title') or rec.get('text', ''))[:200])}{phrase}</td>"
                f"<td class='n'>{float(li.get('score', 0)):.2f}</td>"
                f"<td class='link'>{escape(_strength(li))}</td>"
                f"<td>{escape(str(li.get('action_status') or 'no action'))}</td></tr>"
            )
        html.append(
            "<p><strong>Linked national recommendations</strong></p><table class='links'>"
            "<tr><th>source</th><th>recommendation and evidence</th><th>score</th>"
            f"<th>link</th><th>action</th></tr>{''.join(rows)}</table>"
        )
    factors = extras.get("factors", {}).get(theme_id) or []
    if factors:
        items = ", ".join(
            f"{escape(str(f.get('name', f.get('factor_id', ''))))} "
            f"{100 * float(f.get('share') or 0):.0f}%"
            + (f" (lift {f['lift']:.1f})" if f.get("lift") else "")
            for f in factors
        )
        html.append(f"<p class='factors'><strong>Contributory factors:</strong> {items}</p>")
    harm = extras.get("harm", {}).get(theme_id) or []
    if harm:
        items = ", ".join(
            f"{escape(str(h.get('label', h.get('harm_level', ''))))} {h.get('cases', 0)}"
            + (f" ({h['estimated']} estimated)" if h.get("estimated") else "")
            for h in harm
            if h.get("cases")
        )
        html.append(f"<p class='harm'><strong>Harm:</strong> {items}</p>")
    return "".join(html)


def _strength(li: dict[str, Any]) -> str:
    """A link's calibrated probability and flag, e.g. "P 0.62, strong"."""
    p = li.get("probability")
    shown = "P ?" if p is None else f"P {float(p):.2f}"
    return f"{shown}, {'strong' if li.get('strong') else 'weak'}"


def _global_extras_html(extras: dict[str, Any], as_of: str) -> str:
    html = []
    actions = extras.get("actions") or {}
    overdue = actions.get("overdue") or []
    unactioned = actions.get("strong_without_action") or []
    if overdue or unactioned:
        html.append("<section id='actions'><h2>Actions on national recommendations</h2>")
        html.append(
            f"<p>{len(overdue)} action(s) overdue at the end of the period ({escape(as_of)}); "
            f"{len(unactioned)} strong link(s) to a theme with no action recorded.</p><ul>"
        )
        for a in overdue[:20]:
            html.append(
                f"<li>Overdue: {escape(str(a.get('rec_id', '')))} · owner "
                f"{escape(str(a.get('owner', '')))} · due {escape(str(a.get('due_date', '')))}"
                f" · {escape(str(a.get('action', ''))[:120])}</li>"
            )
        for u in unactioned[:20]:
            html.append(
                f"<li>No action: theme {u.get('theme_id')} "
                f"{escape(str(u.get('theme_label', '')))} ↔ {escape(str(u.get('rec_id', '')))}"
                "</li>"
            )
        html.append("</ul></section>")
    dups = extras.get("duplicates") or []
    if dups:
        html.append("<section id='duplicates'><h2>Possible duplicate reports</h2><ul>")
        for g in dups:
            ids = [m if isinstance(m, str) else m.get("record_id") for m in g.get("members", [])]
            html.append(f"<li>{escape(', '.join(str(i) for i in ids))}</li>")
        html.append("</ul></section>")
    return "".join(html)


# -- Excel -------------------------------------------------------------------------------
def write_xlsx(data: dict[str, Any], path: Path) -> Path:
    """The report's tables as an Excel workbook."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    ws.title = "Summary"
    ws.append([data["title"]])
    ws["A1"].font = Font(bold=True, size=14)
    for row in (
        ["Period", data["period"]],
        ["Generated", data["generated_at"]],
        ["Records in period", data["records_in_period"]],
        ["Records to date", data["records_total"]],
        ["Actions overdue as of", data["actions_as_of"]],
        *[[f"{k} in period", v] for k, v in data["kinds_in_period"].items()],
        ["Case text", "de-identified"],
    ):
        ws.append(row)

    em = wb.create_sheet("Emerging")
    em.append(["rank", "theme_id", "label", "reasons", "score", "mean before", "recent mean",
               "recent cases", "kinds", "locations"])  # fmt: skip
    for i, e in enumerate(data["emerging"], 1):
        em.append([i, e["theme_id"], e["label"], "; ".join(e["reasons"]), e["score"],
                   e["before"], e["recent"], e["recent_cases"], _plain(e["kinds"]),
                   _plain(e["locations"])])  # fmt: skip

    th = wb.create_sheet("Themes")
    th.append(["theme_id", "label", "keywords", "this period", "previous period", "to date",
               "share of records this period", "special cause this period"])  # fmt: skip
    for t in data["themes"]:
        th.append([t["theme_id"], t["label"], ", ".join(t["keywords"]), t["this_period"],
                   t["previous_period"], t["total"], t["share_this_period"],
                   t["chart"]["special_cause"][-1]])  # fmt: skip

    counts = wb.create_sheet("Counts by period")
    periods = data["counts"]["periods"]
    counts.append(["theme_id", "label", *periods])
    for key, values in data["counts"]["themes"].items():
        counts.append([key, data["counts"]["labels"][key], *values])

    shares_sheet = wb.create_sheet("Share of records")
    shares_sheet.append(["theme_id", "label", *periods])
    for key, values in data["counts"]["shares"].items():
        shares_sheet.append([key, data["counts"]["labels"][key], *values])

    for by, rows in data["breakdowns"].items():
        sheet = wb.create_sheet(f"By {by}")
        sheet.append(["period", "theme_id", by, "count"])
        for r in rows:
            sheet.append([r["period"], r["theme_id"], r[by], r["count"]])

    extras = data.get("extras", {})
    if extras.get("links"):
        links = wb.create_sheet("Recommendation links")
        links.append(["theme_id", "rank", "source", "number", "title", "score",
                      "probability", "strength", "action status", "evidence: case",
                      "evidence: case phrase", "evidence: recommendation phrase"])  # fmt: skip
        for theme_id, rows in extras["links"].items():
            for li in rows:
                rec, ev = li.get("recommendation", {}), (li.get("evidence") or [{}])[0]
                links.append([theme_id, li.get("rank"), rec.get("source"), rec.get("number"),
                              rec.get("title"), li.get("score"), li.get("probability"),
                              "strong" if li.get("strong") else "weak",
                              li.get("action_status"), ev.get("record_id"),
                              ev.get("case_phrase"), ev.get("recommendation_phrase")])  # fmt: skip
    _actions_sheet(wb, data)
    if extras.get("factors"):
        fac = wb.create_sheet("Contributory factors")
        fac.append(["theme_id", "factor", "domain", "cases", "share", "lift"])
        for theme_id, rows in extras["factors"].items():
            for f in rows:
                fac.append([theme_id, f.get("name"), f.get("domain"), f.get("cases"),
                            f.get("share"), f.get("lift")])  # fmt: skip

    cases = wb.create_sheet("Cases")
    cases.append(["theme_id", "record_id", "kind", "event_date", "de-identified text"])
    for t in data["themes"]:
        for c in t["cases"]:
            cases.append([t["theme_id"], c["record_id"], c["kind"], c["event_date"], c["text"]])

    for sheet in wb.worksheets:
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for i, col in enumerate(sheet.columns, 1):
            width = max((len(str(c.value)) for c in col if c.value is not None), default=8)
            sheet.column_dimensions[get_column_letter(i)].width = min(max(width + 2, 8), 60)
        sheet.freeze_panes = "A2"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def _actions_sheet(wb: Any, data: dict[str, Any]) -> None:
    """One filterable row per action, then one per strong link with no action; `flag`
    says which need attention (overdue as of the period's last day)."""
    extras = data.get("extras", {})
    labels = {int(k): v for k, v in data["counts"]["labels"].items()}
    sheet = wb.create_sheet("Actions")
    sheet.append(["action_id", "theme_id", "theme", "recommendation id", "owner", "action",
                  "status", "due date", "overdue", "flag", "evidence"])  # fmt: skip
    for a in extras.get("action_list", []):
        due = date.fromisoformat(a["due_date"]) if a["due_date"] else None
        sheet.append([a["action_id"], a["theme_id"], labels.get(a["theme_id"], ""),
                      a["rec_id"], a["owner"], a["action"], a["status"], due,
                      bool(a["overdue"]), "overdue" if a["overdue"] else "",
                      a["evidence"]])  # fmt: skip
    for g in (extras.get("actions") or {}).get("strong_without_action", []):
        sheet.append([None, g["theme_id"], g.get("theme_label", ""), g["rec_id"], None, None,
                      "no action", None, False, "strong link, no action", None])  # fmt: skip
    sheet.auto_filter.ref = sheet.dimensions


def _plain(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def write_report(
    store: Store,
    settings: Settings,
    *,
    period: str | None = None,
    freq: Freq = "M",
    formats: tuple[str, ...] = FORMATS,
    out_dir: Path | None = None,
) -> dict[str, Path]:
    """Write the report for a period; returns {format: path}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise PeriodError(f"Unknown report format(s) {unknown}; use html or xlsx.")
    data = report_data(store, settings, period=period, freq=freq)
    out_dir = out_dir or settings.paths.reports_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"themes-report-{data['period']}"
    paths: dict[str, Path] = {}
    if "html" in formats:
        paths["html"] = out_dir / f"{stem}.html"
        tmp = paths["html"].with_suffix(".html.tmp")
        tmp.write_text(render_html(data), encoding="utf-8")
        tmp.replace(paths["html"])
    if "xlsx" in formats:
        paths["xlsx"] = write_xlsx(data, out_dir / f"{stem}.xlsx")
    return paths


def report_for_flow(store: Store, settings: Settings) -> dict[str, Any]:
    """The nightly flow's report step: the latest month, both formats; never raises for
    want of data (an empty store has nothing to report)."""
    from themes.errors import ThemesError

    try:
        paths = write_report(store, settings)
    except ThemesError as e:
        log.warning("governance report not written: %s", e)
        return {"written": False, "reason": str(e)}
    return {"written": True, **{k: str(v.resolve()) for k, v in paths.items()}}
