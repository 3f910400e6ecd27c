"""Theme trends from the store, SPC charts per theme and the ranked list of emerging themes.

`trends.py` holds the chart arithmetic (Making Data Count XmR rules); this module counts
records per theme and period, splits them by kind, site, location and specialty, and
decides which themes are emerging:

- a theme with a special-cause signal of *increase* (for themes, up is concern) whose
  firing run touches one of the last `trends.emerging_lookback_periods` periods; or
- a theme born (first given its permanent id) within `trends.emerging_born_within_days`
  that already has at least `trends.emerging_min_cases` cases.

Each is ranked by how far its recent periods sit above its usual level, in units of the
chart's sigma (mR-bar / 1.128), and carries its evidence: the chart, counts before and
after, representative de-identified cases, and the kinds and locations involved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from themes.errors import ThemesError
from themes.settings import TrendSettings
from themes.store import (
    Store,
    assignments,
    clean_texts,
    raw_records,
    theme_registry,
    utcnow,
)
from themes.trends import SpcResult, period_counts, share_of_total, xmr

Freq = Literal["W", "M"]
BREAKDOWNS = ("kind", "site", "location", "specialty")
D2 = 1.128  # sigma = mR-bar / d2 for moving ranges of two points


class PeriodError(ThemesError):
    """A report period that cannot be read or lies outside the data."""


def parse_period(text: str | None, freq: Freq = "M") -> pd.Period | None:
    """'2025-10' (a month), or for weeks '2025-W40' or a date in the week, as a Period."""
    if text is None:
        return None
    text = text.strip()
    try:
        if freq == "M" and re.fullmatch(r"\d{4}-\d{2}", text):
            return pd.Period(text, freq="M")
        if freq == "W" and re.fullmatch(r"\d{4}-[Ww]\d{2}", text):
            monday = date.fromisocalendar(int(text[:4]), int(text[6:]), 1)
            return pd.Period(monday, freq="W-SUN")
        if freq == "W" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return pd.Period(date.fromisoformat(text), freq="W-SUN")
    except ValueError:
        pass
    raise PeriodError(
        f"Period '{text}' cannot be read; use YYYY-MM for a month, or YYYY-Www (or a date) "
        f"for a week."
    )


def period_of(day: date | pd.Timestamp, freq: Freq = "M") -> pd.Period:
    """The calendar month, or the week (Monday to Sunday), that holds `day`."""
    return pd.Period(day, freq="M" if freq == "M" else "W-SUN")


def resolve_period(
    dates: pd.Series,
    period: pd.Period | None,
    *,
    freq: Freq = "M",
    today: date | None = None,
) -> pd.Period:
    """The last period that emerging themes and the governance report cover: one rule.

    `period` when given, else the latest complete period that holds a record. A period is
    complete once `today` is past its last day. The period holding `today` (or any later
    one) is never charted: its count is partial and would read as a fall. Nor is a period
    that starts after the latest record (its data have not arrived).

    Args:
        dates: event dates of the records to chart (at least one).
        period: the period asked for, or None for the default.
        freq: "M" for calendar months, "W" for weeks from Monday.
        today: the date the periods are judged on (default: today).

    Raises:
        PeriodError: `period` starts after the latest record, is not over yet, or has no
            record on or before it.
    """
    today = today or date.today()
    current = period_of(today, freq)
    first, last = dates.min(), dates.max()
    complete = min(period_of(last, freq), current - 1)
    end = complete if period is None else period
    records = f"records from {first.date().isoformat()} to {last.date().isoformat()}"
    if end.start_time > last:
        raise PeriodError(
            f"Period {end} is after the latest record ({records}); choose {complete} or earlier."
        )
    if end >= current:
        raise PeriodError(
            f"Period {end} is not over until {end.end_time.date().isoformat()}, so its counts "
            f"would be partial; choose {current - 1} or earlier."
        )
    if end.end_time < first:
        why = "" if period is not None else f" ({current} is not over yet)"
        raise PeriodError(f"No themed records on or before {end}{why}; {records}.")
    return end


def trend_end(frame: pd.DataFrame, *, freq: Freq = "M", today: date | None = None) -> pd.Period:
    """The last period a trend of `frame`'s records shows: the latest complete period that
    holds a record (`resolve_period`), so that a month not over yet never reads as a fall.

    Raises:
        PeriodError: `frame` has no record, or none before the current period.
    """
    if frame.empty:
        raise PeriodError("No themed records yet; run `themes run` first.")
    return resolve_period(frame["event_date"], None, freq=freq, today=today)


def theme_frame(store: Store, *, include_hidden: bool = False) -> pd.DataFrame:
    """One row per themed record: record_id, theme_id, event_date, kind, site, location,
    specialty, severity (themes curated as 'not a theme' left out unless asked)."""
    q = (
        sa.select(
            assignments.c.record_id,
            assignments.c.theme_id,
            raw_records.c.event_date,
            raw_records.c.kind,
            raw_records.c.site,
            raw_records.c.location,
            raw_records.c.specialty,
            raw_records.c.severity,
            theme_registry.c.not_a_theme,
        )
        .select_from(
            assignments.join(
                raw_records, raw_records.c.record_id == assignments.c.record_id
            ).outerjoin(theme_registry, theme_registry.c.key == assignments.c.theme_id)
        )
        .where(assignments.c.theme_id >= 0)
    )
    with store.connect() as conn:
        frame = pd.DataFrame(conn.execute(q).mappings().all())
    if frame.empty:
        return pd.DataFrame(
            columns=["record_id", "theme_id", "event_date", *BREAKDOWNS, "severity"]
        )
    if not include_hidden:
        frame = frame[~frame["not_a_theme"].fillna(False).astype(bool)]
    frame["event_date"] = pd.to_datetime(frame["event_date"])
    return frame.drop(columns=["not_a_theme"]).reset_index(drop=True)


def all_records_dates(store: Store) -> pd.Series:
    """Event dates of every record (the denominator for shares)."""
    with store.connect() as conn:
        dates = [r[0] for r in conn.execute(sa.select(raw_records.c.event_date))]
    return pd.to_datetime(pd.Series(dates, dtype="datetime64[ns]"))


def theme_counts(
    frame: pd.DataFrame, *, freq: Freq = "M", end: pd.Period | None = None
) -> pd.DataFrame:
    """Records per period (rows, complete) and theme (columns)."""
    if frame.empty:
        return pd.DataFrame()
    return period_counts(frame["event_date"], freq=freq, groups=frame["theme_id"], end=end)


def breakdown(
    frame: pd.DataFrame, by: str, *, freq: Freq = "M", end: pd.Period | None = None
) -> pd.DataFrame:
    """Long table: period, theme_id, <by>, count (zero rows left out)."""
    if by not in BREAKDOWNS:
        raise ThemesError(f"Unknown breakdown '{by}'; use one of {', '.join(BREAKDOWNS)}.")
    if frame.empty:
        return pd.DataFrame(columns=["period", "theme_id", by, "count"])
    groups = frame["theme_id"].astype(str) + "\x1f" + frame[by].fillna("(missing)").astype(str)
    wide = period_counts(frame["event_date"], freq=freq, groups=groups, end=end)
    long = wide.stack().rename("count").reset_index()
    long.columns = ["period", "group", "count"]
    long = long[long["count"] > 0]
    parts = long["group"].str.split("\x1f", n=1, expand=True)
    long["theme_id"] = parts[0].astype(int)
    long[by] = parts[1]
    return long[["period", "theme_id", by, "count"]].reset_index(drop=True)


def shares(counts: pd.DataFrame, all_dates: pd.Series, *, freq: Freq = "M") -> pd.DataFrame:
    """Each theme's count as a share of all records in the period."""
    if counts.empty:
        return counts
    totals = period_counts(
        all_dates, freq=freq, start=counts.index.min().start_time, end=counts.index.max().end_time
    )["count"]
    return share_of_total(counts, totals)


def chart(series: pd.Series, settings: TrendSettings) -> SpcResult:
    """An XmR chart of one theme's counts; up is concern."""
    return xmr(
        series.to_numpy(dtype=float),
        [str(p) for p in series.index],
        improvement_direction="decrease",
        baseline=settings.baseline_periods,
    )


@dataclass
class Emerging:
    """One emerging theme with its evidence."""

    theme_id: int | str
    """Permanent theme id (or any group key when ranking other counts)."""
    label: str
    reasons: list[str]
    score: float
    before: float
    """Mean count per period before the recent window."""
    recent: float
    """Mean count per period in the recent window."""
    recent_cases: int
    chart: dict[str, Any]
    kinds: dict[str, int] = field(default_factory=dict)
    locations: dict[str, int] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def chart_dict(result: SpcResult) -> dict[str, Any]:
    """A chart as plain lists (JSON, report)."""
    return {
        "periods": [str(p) for p in result.periods],
        "values": [float(v) for v in result.values],
        "mean": [float(v) for v in result.mean],
        "upper_process_limit": [float(v) for v in result.upper_process_limit],
        "lower_process_limit": [float(v) for v in result.lower_process_limit],
        "special_cause": [str(s) for s in result.special_cause],
        "rules": [list(r) for r in result.rules],
        "warnings": list(result.warnings),
    }


def rank_emerging(
    counts: pd.DataFrame,
    settings: TrendSettings,
    *,
    born: dict[int, datetime] | None = None,
    as_of: datetime | None = None,
    labels: dict[int, str] | None = None,
) -> list[Emerging]:
    """Rank themes by evidence of emergence, from counts alone (period x theme).

    A theme is listed when its chart shows a special-cause increase ("concern") whose run
    touches one of the last `emerging_lookback_periods` periods, or when it was born
    within `emerging_born_within_days` of `as_of` and has at least `emerging_min_cases`
    cases in that window. Score: (recent mean - usual mean) / sigma, where usual is the
    chart's centre line over the earlier periods and sigma = mR-bar / 1.128.
    """
    if counts.empty:
        return []
    lookback = max(1, settings.emerging_lookback_periods)
    born = born or {}
    labels = labels or {}
    as_of = as_of or datetime.now()
    out: list[Emerging] = []
    for theme_id in counts.columns:
        series = counts[theme_id]
        key = theme_id.item() if hasattr(theme_id, "item") else theme_id  # numpy -> int
        values = series.to_numpy(dtype=float)
        n = len(values)
        before = values[:-lookback] if n > lookback else values[:0]
        recent = values[-lookback:]
        reasons = []
        result = chart(series, settings)
        recent_concern = [
            i
            for i in range(max(0, n - lookback), n)
            if result.special_cause[i] == "concern" and values[i] > result.mean[i]
        ]
        if recent_concern:
            fired = sorted({r for i in recent_concern for r in result.rules[i]})
            reasons.append("special-cause increase (" + ", ".join(fired) + ")")
        when = born.get(key)
        window = timedelta(days=settings.emerging_born_within_days)
        if (
            when is not None
            and as_of - when <= window
            and recent.sum() >= settings.emerging_min_cases
        ):
            reasons.append(f"new theme (first seen {when.date().isoformat()})")
        if not reasons:
            continue
        usual = float(before.mean()) if len(before) else 0.0
        mr = np.abs(np.diff(before)).mean() if len(before) > 1 else 0.0
        sigma = max(mr / D2, np.sqrt(max(usual, 1.0)) * 0.5, 1e-9)
        score = (float(recent.mean()) - usual) / sigma
        if score <= 0:  # a signal, but the recent periods are not above the usual level
            continue
        out.append(
            Emerging(
                theme_id=key,
                label=labels.get(key, str(key)),
                reasons=reasons,
                score=round(float(score), 2),
                before=round(usual, 2),
                recent=round(float(recent.mean()), 2),
                recent_cases=int(recent.sum()),
                chart=chart_dict(result),
            )
        )
    return sorted(out, key=lambda e: (-e.score, str(e.theme_id)))


def emerging_themes(
    store: Store,
    settings: TrendSettings,
    *,
    freq: Freq = "M",
    period: pd.Period | None = None,
    n_cases: int = 3,
    today: date | None = None,
) -> list[dict[str, Any]]:
    """The ranked emerging themes up to `period` (default: the latest complete period, as
    `resolve_period` decides on `today`), with evidence."""
    from themes.queries import list_themes

    frame = theme_frame(store)
    if frame.empty:
        return []
    end = resolve_period(frame["event_date"], period, freq=freq, today=today)
    frame = frame[frame["event_date"] <= end.end_time]
    counts = theme_counts(frame, freq=freq, end=end)
    themes = {t["theme_id"]: t for t in list_themes(store)}
    counts = counts[[c for c in counts.columns if c in themes]]
    # "new" means born by a refit after the registry's first fit (the first fit gives
    # every theme its id at once, so none of those is new); judged in wall-clock time
    with store.connect() as conn:
        born_at = {
            int(k): b
            for k, b in conn.execute(sa.select(theme_registry.c.key, theme_registry.c.born_at))
        }
    first_fit = min(born_at.values(), default=None)
    born_dates = {
        k: b
        for k, b in born_at.items()
        if first_fit is not None and b - first_fit > timedelta(minutes=1)
    }
    as_of = utcnow()
    ranked = rank_emerging(
        counts,
        settings,
        born=born_dates,
        as_of=as_of,
        labels={k: t["label"] for k, t in themes.items()},
    )
    lookback = max(1, settings.emerging_lookback_periods)
    recent_periods = counts.index[-lookback:]
    start = recent_periods[0].start_time
    recent = frame[(frame["event_date"] >= start)]
    for e in ranked:
        rows = recent[recent["theme_id"] == e.theme_id]
        e.kinds = {str(k): int(v) for k, v in rows["kind"].value_counts().items()}
        e.locations = {
            str(k): int(v) for k, v in rows["location"].fillna("(missing)").value_counts().items()
        }
        e.cases = _recent_cases(store, rows.sort_values("event_date")["record_id"].tolist()[-50:])[
            :n_cases
        ]
    return [e.as_dict() for e in ranked]


def _recent_cases(store: Store, record_ids: Sequence[str]) -> list[dict[str, Any]]:
    """De-identified text of the given records, newest first."""
    if not record_ids:
        return []
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(
                raw_records.c.record_id,
                raw_records.c.kind,
                raw_records.c.event_date,
                raw_records.c.location,
                clean_texts.c.clean_text,
            )
            .select_from(
                raw_records.join(clean_texts, clean_texts.c.record_id == raw_records.c.record_id)
            )
            .where(raw_records.c.record_id.in_(list(record_ids)))
            .order_by(raw_records.c.event_date.desc(), raw_records.c.record_id)
        ).all()
    return [
        {
            "record_id": r[0],
            "kind": r[1],
            "event_date": r[2].isoformat(),
            "location": r[3],
            "text": r[4],
        }
        for r in rows
    ]
