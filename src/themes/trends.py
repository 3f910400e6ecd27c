"""Counts over time and XmR charts following NHS England's Making Data Count (MDC).

The chart rules follow the NHSRplotthedots R package (the NHS-R community's implementation
of MDC), so a chart drawn here flags the same points as `ptd_spc()`:

- limits: mean +/- 2.66 x mean moving range (mR-bar) of the baseline points;
- a point beyond a process limit;
- a shift: `shift_length` (7) or more consecutive points on the same side of the mean;
  a point exactly on the mean breaks the run and does not count;
- a trend: `trend_length` (7) or more consecutive points each strictly higher (or lower)
  than the one before, i.e. 6 rises for 7 points; a tie breaks the trend;
- two of three: in three consecutive points all on the same side of the mean, at least two
  lie between the two-sigma line and the process limit on that side. As in NHSRplotthedots,
  a point beyond the process limit does not count as "close" and only the close points are
  flagged.

Every point of a run that fires a rule is flagged. Rules never look across a rebase: each
phase has its own mean, limits and runs. Moving ranges are not screened for outliers by
default, as in the MDC Excel tools; `screen_outliers=True` gives the NHSRplotthedots default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from themes.errors import ThemesError

LIMIT_FACTOR = 2.66  # 3 / d2, d2 = 1.128 for moving ranges of two points
TWO_SIGMA_FACTOR = 2 * LIMIT_FACTOR / 3
SCREEN_FACTOR = 3.267  # upper range limit of a moving range chart (D4 x mR-bar)
MIN_POINTS = 12  # MDC: fewer points than this give unreliable limits
RULES = ("outside_limits", "shift", "trend", "two_of_three")
DIRECTIONS = ("increase", "decrease", "neutral")

# When a point is flagged by several rules, its label takes the direction of the first of
# these (the order NHSRplotthedots' `ptd_special_cause_type` uses).
_LABEL_PRIORITY = ("outside_limits", "trend", "two_of_three", "shift")


class SpcError(ThemesError):
    """Values or options given to an SPC chart cannot make a valid chart."""


@dataclass(frozen=True)
class SpcResult:
    """An XmR chart: per-point values, limits, rules fired and a label.

    Limit fields are arrays with one entry per point, because a rebased chart has
    different limits in each phase; without rebasing they are constant.

    Attributes:
        periods: period labels, in order.
        values: the plotted values.
        phase: phase number of each point (0 before the first rebase).
        mean: centre line of each point's phase (mean of its baseline points).
        mean_moving_range: mR-bar of each point's phase baseline.
        upper_process_limit: mean + 2.66 x mR-bar.
        lower_process_limit: mean - 2.66 x mR-bar; not floored at 0.
        upper_two_sigma: mean + (2/3) x 2.66 x mR-bar.
        lower_two_sigma: mean - (2/3) x 2.66 x mR-bar.
        special_cause: per point "common", "improvement" or "concern"; with
            improvement_direction="neutral", "neutral_high" or "neutral_low".
        rules: per point, the rules (names from `RULES`) whose firing run holds the point.
        warnings: human-readable warnings (short phases, short baselines).
        improvement_direction: "increase", "decrease" or "neutral".
        baseline: points per phase used for the limits, or None for all.
    """

    periods: list
    values: np.ndarray
    phase: np.ndarray
    mean: np.ndarray
    mean_moving_range: np.ndarray
    upper_process_limit: np.ndarray
    lower_process_limit: np.ndarray
    upper_two_sigma: np.ndarray
    lower_two_sigma: np.ndarray
    special_cause: np.ndarray
    rules: list[list[str]]
    warnings: list[str]
    improvement_direction: str
    baseline: int | None

    @property
    def has_special_cause(self) -> np.ndarray:
        """Boolean per point: True where any rule fired."""
        return np.array([bool(r) for r in self.rules], dtype=bool)

    def to_frame(self) -> pd.DataFrame:
        """One row per point, for tables, charts and storage."""
        return pd.DataFrame(
            {
                "period": self.periods,
                "value": self.values,
                "phase": self.phase,
                "mean": self.mean,
                "mean_moving_range": self.mean_moving_range,
                "upper_process_limit": self.upper_process_limit,
                "lower_process_limit": self.lower_process_limit,
                "upper_two_sigma": self.upper_two_sigma,
                "lower_two_sigma": self.lower_two_sigma,
                "special_cause": self.special_cause,
                "rules": [",".join(r) for r in self.rules],
            }
        )


def xmr(
    values: Sequence[float] | np.ndarray | pd.Series,
    periods: Sequence | None = None,
    *,
    improvement_direction: Literal["increase", "decrease", "neutral"] = "decrease",
    baseline: int | None = None,
    rebase_at: Sequence[int] = (),
    shift_length: int = 7,
    trend_length: int = 7,
    screen_outliers: bool = False,
) -> SpcResult:
    """Compute an XmR chart with Making Data Count special-cause rules.

    Args:
        values: one number per period, in time order, no gaps or missing values.
        periods: labels of the periods (default 0..n-1).
        improvement_direction: which way is better; themes use "decrease" (up is concern).
        baseline: compute each phase's limits from its first `baseline` points only
            (NHSRplotthedots' `fix_after_n_points`); None uses every point.
        rebase_at: indices where a new phase starts; each phase gets its own limits.
        shift_length: points on one side of the mean that make a shift.
        trend_length: points in a strictly rising or falling run that make a trend.
        screen_outliers: drop moving ranges above 3.267 x mR-bar before recomputing
            mR-bar (NHSRplotthedots default; the MDC Excel tools do not screen).

    Returns:
        The chart, with per-point limits, rules and labels.

    Raises:
        SpcError: empty or non-finite values, mismatched periods, a bad option.
    """
    y = _validate_values(values)
    n = len(y)
    labels = list(range(n)) if periods is None else list(periods)
    if len(labels) != n:
        raise SpcError(f"xmr: {len(labels)} periods given for {n} values; give one per value.")
    if improvement_direction not in DIRECTIONS:
        raise SpcError(
            f"xmr: improvement_direction={improvement_direction!r}; use one of {DIRECTIONS}."
        )
    if baseline is not None and (isinstance(baseline, bool) or int(baseline) != baseline):
        raise SpcError(f"xmr: baseline={baseline!r} must be a whole number of points or None.")
    if baseline is not None and baseline < 2:
        raise SpcError(
            f"xmr: baseline={baseline} is too short; a moving range needs at least 2 points "
            f"(Making Data Count recommends at least {MIN_POINTS})."
        )
    for name, length in (("shift_length", shift_length), ("trend_length", trend_length)):
        if length < 2:
            raise SpcError(f"xmr: {name}={length} must be at least 2.")
    starts = _phase_starts(rebase_at, n)

    phase = np.zeros(n, dtype=int)
    mean = np.empty(n)
    amr = np.empty(n)
    warnings: list[str] = []
    for k, (lo, hi) in enumerate(zip(starts, [*starts[1:], n], strict=True)):
        phase[lo:hi] = k
        used = y[lo:hi] if baseline is None else y[lo : min(hi, lo + baseline)]
        mean[lo:hi] = used.mean()
        amr[lo:hi] = _mean_moving_range(used, screen_outliers=screen_outliers)
        where = "" if len(starts) == 1 else f"phase {k} (points {lo}-{hi - 1}): "
        if hi - lo < MIN_POINTS:
            warnings.append(
                f"{where}There are fewer than {MIN_POINTS} points ({hi - lo}); "
                f"limits are unreliable."
            )
        elif len(used) < MIN_POINTS:
            warnings.append(
                f"{where}limits are fixed on {len(used)} points, fewer than {MIN_POINTS}; "
                f"they are unreliable."
            )

    upl = mean + LIMIT_FACTOR * amr
    lpl = mean - LIMIT_FACTOR * amr
    u2s = mean + TWO_SIGMA_FACTOR * amr
    l2s = mean - TWO_SIGMA_FACTOR * amr

    side = np.sign(y - mean).astype(int)  # +1 above, -1 below, 0 on the mean
    outside = (y > upl) | (y < lpl)
    close = ~outside & ((y > u2s) | (y < l2s))

    fired: dict[str, np.ndarray] = {}  # rule -> per-point direction (+1, -1, 0 = not fired)
    fired["outside_limits"] = np.where(outside, side, 0)
    fired["shift"] = np.zeros(n, dtype=int)
    fired["trend"] = np.zeros(n, dtype=int)
    fired["two_of_three"] = np.zeros(n, dtype=int)
    for lo, hi in zip(starts, [*starts[1:], n], strict=True):
        fired["shift"][lo:hi] = _shift(side[lo:hi], shift_length)
        fired["trend"][lo:hi] = _trend(y[lo:hi], trend_length)
        fired["two_of_three"][lo:hi] = _two_of_three(side[lo:hi], close[lo:hi])

    rules = [[r for r in RULES if fired[r][i] != 0] for i in range(n)]
    special = np.array(
        [_label(i, fired, improvement_direction) for i in range(n)], dtype=object
    ).astype(str)

    return SpcResult(
        periods=labels,
        values=y,
        phase=phase,
        mean=mean,
        mean_moving_range=amr,
        upper_process_limit=upl,
        lower_process_limit=lpl,
        upper_two_sigma=u2s,
        lower_two_sigma=l2s,
        special_cause=special,
        rules=rules,
        warnings=warnings,
        improvement_direction=improvement_direction,
        baseline=baseline,
    )


def _validate_values(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    try:
        y = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise SpcError(f"xmr: values must be numbers: {e}") from e
    if y.ndim != 1:
        raise SpcError(f"xmr: values must be one-dimensional, got shape {y.shape}.")
    if len(y) == 0:
        raise SpcError("xmr: no values given; an SPC chart needs at least 2 points.")
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:10])
        raise SpcError(
            f"xmr: {len(bad)} value(s) are NaN or infinite (positions {shown}); fill empty "
            f"periods with 0 (see period_counts) or drop them before charting."
        )
    return y


def _phase_starts(rebase_at: Sequence[int], n: int) -> list[int]:
    points = sorted({int(i) for i in rebase_at} | {0})
    if points[-1] >= n or points[0] < 0:
        raise SpcError(f"xmr: rebase_at={list(rebase_at)} must hold indices between 1 and {n - 1}.")
    lengths = np.diff([*points, n])
    for start, length in zip(points, lengths, strict=True):
        if length < 2:
            raise SpcError(
                f"xmr: the phase starting at point {start} has {length} point(s); each phase "
                f"needs at least 2 (move or drop that rebase)."
            )
    return points


def _mean_moving_range(used: np.ndarray, *, screen_outliers: bool) -> float:
    mr = np.abs(np.diff(used))
    amr = float(mr.mean())
    if screen_outliers:
        kept = mr[mr < SCREEN_FACTOR * amr]
        amr = float(kept.mean()) if len(kept) else amr
    return amr


def _runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal non-zero codes as (start, stop, code), stop exclusive."""
    out = []
    start = 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[start]:
            if codes[start] != 0:
                out.append((start, i, int(codes[start])))
            start = i
    return out


def _shift(side: np.ndarray, length: int) -> np.ndarray:
    flag = np.zeros(len(side), dtype=int)
    for start, stop, code in _runs(side):
        if stop - start >= length:
            flag[start:stop] = code
    return flag


def _trend(y: np.ndarray, length: int) -> np.ndarray:
    flag = np.zeros(len(y), dtype=int)
    steps = np.sign(np.diff(y)).astype(int)  # step i joins point i and i + 1
    for start, stop, code in _runs(steps):
        if stop - start + 1 >= length:
            # a point shared by a rising and a falling run takes the later run's direction
            flag[start : stop + 1] = code
    return flag


def _two_of_three(side: np.ndarray, close: np.ndarray) -> np.ndarray:
    flag = np.zeros(len(side), dtype=int)
    for j in range(len(side) - 2):
        window = slice(j, j + 3)
        same_side = abs(int(side[window].sum())) == 3
        if same_side and int(close[window].sum()) >= 2:
            flag[window] = np.where(close[window], side[window], flag[window])
    return flag


def _label(i: int, fired: dict[str, np.ndarray], direction: str) -> str:
    sign = next((int(fired[r][i]) for r in _LABEL_PRIORITY if fired[r][i] != 0), 0)
    if sign == 0:
        return "common"
    if direction == "neutral":
        return "neutral_high" if sign > 0 else "neutral_low"
    better = 1 if direction == "increase" else -1
    return "improvement" if sign == better else "concern"


def period_counts(
    dates: pd.Series,
    *,
    freq: Literal["W", "M"],
    groups: pd.Series | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Count records per week (Monday to Sunday) or calendar month, with empty periods as 0.

    Args:
        dates: one date per record.
        freq: "W" for weeks starting on Monday, "M" for calendar months.
        groups: optional group per record (kind, site, theme...), aligned by position.
            Missing groups are counted under "(missing)".
        start: first period to include (default: the earliest date). Records before it are
            left out.
        end: last period to include (default: the latest date). Records after it are left
            out.

    Returns:
        A frame indexed by a complete `pd.PeriodIndex` named "period", with one integer
        column per group (sorted), or a single "count" column when `groups` is None.

    Raises:
        SpcError: bad freq, missing or unparseable dates, groups of another length.
    """
    if freq not in ("W", "M"):
        raise SpcError(f"period_counts: freq={freq!r}; use 'W' (weeks from Monday) or 'M'.")
    pandas_freq = "W-SUN" if freq == "W" else "M"  # a W-SUN period ends on Sunday
    try:
        when = pd.to_datetime(pd.Series(dates).reset_index(drop=True))
    except (TypeError, ValueError) as e:
        raise SpcError(f"period_counts: dates cannot be read as dates: {e}") from e
    if when.dt.tz is not None:
        when = when.dt.tz_localize(None)
    missing = np.flatnonzero(when.isna().to_numpy())
    if len(missing):
        shown = ", ".join(str(i) for i in missing[:10])
        raise SpcError(
            f"period_counts: {len(missing)} record(s) have no date (positions {shown}); "
            f"quarantine or date them before counting."
        )
    if groups is not None:
        labels = pd.Series(groups).reset_index(drop=True)
        if len(labels) != len(when):
            raise SpcError(
                f"period_counts: {len(labels)} groups given for {len(when)} dates; "
                f"give one group per record."
            )
        labels = labels.astype(object).where(labels.notna(), "(missing)")
    else:
        labels = pd.Series(["count"] * len(when), dtype=object)

    period = when.dt.to_period(pandas_freq)
    first = pd.Period(start, freq=pandas_freq) if start is not None else None
    last = pd.Period(end, freq=pandas_freq) if end is not None else None
    if first is None or last is None:
        if len(period) == 0:
            raise SpcError("period_counts: no dates given and no start and end to span.")
        first = period.min() if first is None else first
        last = period.max() if last is None else last
    if last < first:
        raise SpcError(f"period_counts: end {last} is before start {first}.")
    keep = ((period >= first) & (period <= last)).to_numpy()
    index = pd.period_range(first, last, freq=pandas_freq, name="period")

    table = pd.crosstab(period[keep], labels[keep])
    columns = ["count"] if groups is None else sorted(labels.unique(), key=str)
    table = table.reindex(index=index, columns=columns, fill_value=0).astype(int)
    table.columns.name = None
    return table


def share_of_total(counts: pd.DataFrame, totals: pd.Series) -> pd.DataFrame:
    """Each count as a share (0-1) of all records in its period.

    Args:
        counts: per-period counts (e.g. from `period_counts` with groups).
        totals: all records per period, indexed like `counts`.

    Returns:
        `counts / totals` row by row; NaN where a period's total is 0.

    Raises:
        SpcError: a period of `counts` is missing from `totals`, or a count exceeds its
            total (the two were counted from different records).
    """
    totals = pd.Series(totals)
    absent = counts.index.difference(totals.index)
    if len(absent):
        shown = ", ".join(str(p) for p in absent[:5])
        raise SpcError(f"share_of_total: totals lack {len(absent)} period(s): {shown}.")
    aligned = totals.reindex(counts.index).astype(float)
    over = counts.gt(aligned, axis=0).to_numpy()
    if over.any():
        row, col = np.argwhere(over)[0]
        raise SpcError(
            f"share_of_total: count {counts.iat[row, col]} for '{counts.columns[col]}' in "
            f"{counts.index[row]} exceeds the period total {aligned.iat[row]:g}; count both "
            f"from the same records."
        )
    return counts.div(aligned.where(aligned > 0), axis=0)
