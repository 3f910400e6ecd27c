"""XmR charts and period counts (themes.trends).

Published worked examples come from the NHSRplotthedots R package (NHS-R community, the
reference implementation of NHS England's Making Data Count rules):
- tests/testthat/test-ptd_spc.R and _snaps/ptd_spc.md (summary of `set.seed(123); rnorm(20)`);
- tests/testthat/test-ptd_calculate_point_type.R (rule helpers on small vectors);
- tests/testthat/test-ptd_spc_standard.R (2 of 3 on opposite sides of the mean);
- vignettes/deviations.Rmd (outlier screening versus the MDC Excel tools).
Where a source gives no numbers, the expected values are derived by hand in comments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from themes.errors import ThemesError
from themes.trends import SpcError, period_counts, share_of_total, xmr

# R: set.seed(123); rnorm(20)  (the values printed, to 3 significant figures, in
# NHSRplotthedots' tests/testthat/_snaps/ptd_spc_standard.md)
RNORM_123 = [
    -0.56047565, -0.23017749, 1.55870831, 0.07050839, 0.12928774,
    1.71506499, 0.46091621, -1.26506123, -0.68685285, -0.44566197,
    1.22408180, 0.35981383, 0.40077145, 0.11068272, -0.55584113,
    1.78691314, 0.49785048, -1.96661716, 0.70135590, -0.47279141,
]  # fmt: skip

# NHSRplotthedots vignettes/deviations.Rmd: one outlier (10) in an alternating series.
DEVIATIONS = [1, 2, 1, 2, 10, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]


def flagged(result, rule: str) -> list[int]:
    return [i for i, rules in enumerate(result.rules) if rule in rules]


# --- limits -----------------------------------------------------------------------------


def test_limits_match_nhsrplotthedots_summary_snapshot():
    """_snaps/ptd_spc.md: mean_col 0.142, lpl -3.01, upl 3.29, 20 common cause points."""
    r = xmr(RNORM_123, improvement_direction="increase")
    assert r.mean[0] == pytest.approx(0.1416238, abs=1e-6)
    assert r.mean_moving_range[0] == pytest.approx(1.1853396, abs=1e-6)
    assert round(r.lower_process_limit[0], 2) == -3.01
    assert round(r.upper_process_limit[0], 2) == 3.29
    # two sigma = mean +/- (2/3) * 2.66 * mR-bar = 0.1416 +/- 2.1020
    assert r.upper_two_sigma[0] == pytest.approx(0.1416238 + 2.1020022, abs=1e-5)
    assert r.lower_two_sigma[0] == pytest.approx(0.1416238 - 2.1020022, abs=1e-5)
    assert np.all(r.upper_process_limit == r.upper_process_limit[0])
    assert list(r.special_cause) == ["common"] * 20
    assert r.warnings == []


def test_rebase_matches_nhsrplotthedots_two_groups_of_ten():
    """_snaps/ptd_spc.md, facet = rep(c(0, 1), each = 10): per-group limits are
    0.0746 (-2.60, 2.75) and 0.209 (-3.28, 3.70); a rebase at point 10 splits the same way,
    and each group is short, so each gets the < 12 points warning (ptd_add_short_group_warnings).
    """
    r = xmr(RNORM_123, rebase_at=[10], improvement_direction="increase")
    assert list(r.phase) == [0] * 10 + [1] * 10
    assert round(r.mean[0], 4) == 0.0746 and round(r.mean[10], 3) == 0.209
    assert round(r.lower_process_limit[0], 2) == -2.60
    assert round(r.upper_process_limit[0], 2) == 2.75
    assert round(r.lower_process_limit[10], 2) == -3.28
    assert round(r.upper_process_limit[10], 2) == 3.70
    assert len(r.warnings) == 2
    assert "phase 0" in r.warnings[0] and "phase 1" in r.warnings[1]
    assert all("fewer than 12 points" in w for w in r.warnings)


def test_outlier_screening_matches_deviations_vignette():
    """vignettes/deviations.Rmd: MDC Excel keeps every moving range; NHSRplotthedots screens
    those above 3.267 x mR-bar. By hand: sum = 35, mean = 35/18 = 1.9444; moving ranges are
    1, 1, 1, 8, 9 and twelve 1s, so mR-bar = 32/17 = 1.8824 (Excel) and UPL = 6.9515,
    LPL = -3.0626. 3.267 x 1.8824 = 6.15 screens the 8 and the 9, leaving fifteen 1s:
    mR-bar = 1, UPL = 4.6044, LPL = -0.7156. Either way only the 10 is special cause."""
    excel = xmr(DEVIATIONS)
    assert excel.mean[0] == pytest.approx(35 / 18)
    assert excel.mean_moving_range[0] == pytest.approx(32 / 17)
    assert excel.upper_process_limit[0] == pytest.approx(6.9515, abs=1e-4)
    assert excel.lower_process_limit[0] == pytest.approx(-3.0626, abs=1e-4)
    screened = xmr(DEVIATIONS, screen_outliers=True)
    assert screened.mean_moving_range[0] == pytest.approx(1.0)
    assert screened.upper_process_limit[0] == pytest.approx(4.6044, abs=1e-4)
    assert screened.lower_process_limit[0] == pytest.approx(-0.7156, abs=1e-4)
    for r in (excel, screened):
        assert flagged(r, "outside_limits") == [4]
        assert r.has_special_cause.tolist() == [i == 4 for i in range(18)]


# --- rule 1: a point beyond a process limit ---------------------------------------------


def test_point_beyond_limits_in_both_directions():
    """Above the UPL is concern when lower is better, improvement when higher is better; the
    mirror image 12 - x (mean 10.0556, LPL 10.0556 - 5.0071 = 5.0485) puts 2 below the LPL."""
    up = xmr(DEVIATIONS, improvement_direction="decrease")
    assert up.special_cause[4] == "concern"
    assert xmr(DEVIATIONS, improvement_direction="increase").special_cause[4] == "improvement"
    down = xmr([12 - v for v in DEVIATIONS], improvement_direction="decrease")
    assert down.lower_process_limit[0] == pytest.approx(5.0485, abs=1e-4)
    assert flagged(down, "outside_limits") == [4]
    assert down.special_cause[4] == "improvement"
    assert (
        xmr([12 - v for v in DEVIATIONS], improvement_direction="neutral").special_cause[4]
        == "neutral_low"
    )


# --- rule 2: shift ----------------------------------------------------------------------


def test_shift_flags_every_point_of_runs_above_and_below():
    """8 points below then 7 above. By hand: mean = 37/15 = 2.467; mR-bar = 16/14 = 1.143, so
    UPL = 5.51, LPL = -0.57 and the 2-sigma lines 4.49 and 0.44: no point is near a limit and
    the alternation rules out a trend. Both runs are shifts; every point is flagged."""
    values = [2, 1, 2, 1, 2, 1, 2, 1, 4, 3, 4, 3, 4, 3, 4]
    r = xmr(values, improvement_direction="decrease")
    assert r.mean[0] == pytest.approx(37 / 15)
    assert flagged(r, "shift") == list(range(15))
    assert all(rules == ["shift"] for rules in r.rules)
    assert list(r.special_cause) == ["improvement"] * 8 + ["concern"] * 7
    increase = xmr(values, improvement_direction="increase")
    assert list(increase.special_cause) == ["concern"] * 8 + ["improvement"] * 7
    neutral = xmr(values, improvement_direction="neutral")
    assert list(neutral.special_cause) == ["neutral_low"] * 8 + ["neutral_high"] * 7


def test_run_of_six_is_not_a_shift():
    """Same as above with only 6 high points (mean 33/14 = 2.357): the 8 low points still
    shift (improvement), the 6 high points are common cause."""
    r = xmr([2, 1, 2, 1, 2, 1, 2, 1, 4, 3, 4, 3, 4, 3])
    assert flagged(r, "shift") == list(range(8))
    assert list(r.special_cause[8:]) == ["common"] * 6


def test_point_on_the_mean_breaks_a_shift():
    """NHSRplotthedots' ptd_seven_point_one_side_mean needs a non-zero sign for every point.
    Mean = 140/14 = 10 exactly; the two 10s sit on it, leaving runs of 3 on each side, so no
    shift. Swapping them for 8 and 12 keeps the mean at 10 and makes two runs of exactly 7
    (mR-bar = 19/13, 2-sigma lines 7.41/12.59 and limits 6.11/13.89: no other rule fires)."""
    broken = xmr([7, 9, 8, 10, 9, 7, 8, 13, 11, 12, 10, 11, 13, 12])
    assert broken.mean[0] == 10.0
    assert not broken.has_special_cause.any()
    whole = xmr([7, 9, 8, 8, 9, 7, 8, 13, 11, 12, 12, 11, 13, 12])
    assert whole.mean[0] == 10.0
    assert flagged(whole, "shift") == list(range(14))
    assert list(whole.special_cause) == ["improvement"] * 7 + ["concern"] * 7


# --- rule 3: trend ----------------------------------------------------------------------


def test_trend_flags_all_seven_points_in_both_directions():
    """test-ptd_calculate_point_type.R: ptd_seven_point_trend(c(2, 1:7, 3)) marks point 8
    (1-based) as the end of a rising run of 7, and ptd_part_of_seven_trend flags points 2-8.
    Here mean 33/9 = 3.667, mR-bar 11/8 = 1.375, UPL 7.32: no other rule fires. The mirror
    8 - x falls and is improvement when lower is better."""
    rising = xmr([2, 1, 2, 3, 4, 5, 6, 7, 3], improvement_direction="decrease")
    assert flagged(rising, "trend") == list(range(1, 8))
    assert list(rising.special_cause) == ["common"] + ["concern"] * 7 + ["common"]
    falling = xmr([8 - v for v in [2, 1, 2, 3, 4, 5, 6, 7, 3]], improvement_direction="decrease")
    assert flagged(falling, "trend") == list(range(1, 8))
    assert list(falling.special_cause) == ["common"] + ["improvement"] * 7 + ["common"]
    assert (
        xmr([2, 1, 2, 3, 4, 5, 6, 7, 3], improvement_direction="increase").special_cause[1]
        == "improvement"
    )


def test_trend_label_follows_the_trend_not_the_side_of_the_mean():
    """Points 1-3 of the rising trend lie below the mean (3.667) but are labelled by the
    trend's direction, as NHSRplotthedots' "7 Point Trend (Increasing)" type is."""
    r = xmr([2, 1, 2, 3, 4, 5, 6, 7, 3])
    assert (r.values[1:4] < r.mean[1:4]).all()
    assert list(r.special_cause[1:4]) == ["concern"] * 3


def test_tie_breaks_a_trend_and_six_points_are_not_one():
    """test-ptd_calculate_point_type.R: ptd_seven_point_trend(c(1:3, 3:6)) is all 0, and
    ptd_seven_point_trend(1:6) is all 0."""
    assert flagged(xmr([1, 2, 3, 3, 4, 5, 6]), "trend") == []
    assert flagged(xmr([1, 2, 3, 4, 5, 6]), "trend") == []
    assert flagged(xmr([1, 2, 3, 4, 5, 6, 7]), "trend") == list(range(7))


# --- rule 4: two of three beyond two sigma ----------------------------------------------


def test_two_of_three_flags_the_close_points_in_both_directions():
    """Limits fixed on 12 alternating points 10, 12: mean 11, mR-bar 2, UPL 16.32, upper
    2-sigma 14.55, lower 2-sigma 7.45, LPL 5.68. Then 15, 12, 15 (two above 14.55, all above
    the mean) and, after a 10, 7, 10, 7 (two below 7.45, all below the mean). Only the close
    points are flagged, as ptd_part_of_two_in_three does."""
    values = [10, 12] * 6 + [15, 12, 15, 10, 7, 10, 7]
    r = xmr(values, baseline=12)
    assert r.upper_two_sigma[0] == pytest.approx(11 + 2 / 3 * 2.66 * 2)
    assert flagged(r, "two_of_three") == [12, 14, 16, 18]
    assert [r.special_cause[i] for i in (12, 14, 16, 18)] == ["concern"] * 2 + ["improvement"] * 2
    assert r.special_cause[13] == "common" and r.special_cause[17] == "common"
    assert r.special_cause[12] == "concern"
    assert (
        xmr(values, baseline=12, improvement_direction="increase").special_cause[12]
        == "improvement"
    )


def test_two_of_three_needs_all_three_on_one_side():
    """test-ptd_spc_standard.R: alternating 1, -1 for 16 points with point 15 = 5.5 and 16 =
    -5.5. Mean 0, mR-bar 43.5/15 = 2.9, 2-sigma lines +/-5.14, limits +/-7.71: both are close
    to a limit but on opposite sides, so both stay common cause."""
    values = [1.0, -1.0] * 8
    values[14], values[15] = 5.5, -5.5
    r = xmr(values, improvement_direction="increase")
    assert r.mean_moving_range[0] == pytest.approx(2.9)
    assert list(r.special_cause[-2:]) == ["common", "common"]


def test_point_beyond_the_limit_does_not_count_towards_two_of_three():
    """NHSRplotthedots' close_to_limits excludes points outside the limits: with 15, 12, 17
    after the baseline above, 17 (> 16.32) is outside and 15 has no close companion."""
    r = xmr([10, 12] * 6 + [15, 12, 17], baseline=12)
    assert flagged(r, "outside_limits") == [14]
    assert flagged(r, "two_of_three") == []
    assert r.special_cause[12] == "common"


# --- baselines, rebasing, warnings ------------------------------------------------------


def test_fixed_baseline_keeps_limits_from_the_first_points():
    """Limits on the first 12 points (mean 11, mR-bar 2) hold for later points; the three 20s
    are outside. Without a baseline the 20s pull the mean to 192/15 = 12.8."""
    values = [10, 12] * 6 + [20, 20, 20]
    fixed = xmr(values, baseline=12)
    assert np.allclose(fixed.mean, 11.0)
    assert np.allclose(fixed.upper_process_limit, 11 + 2.66 * 2)
    assert flagged(fixed, "outside_limits") == [12, 13, 14]
    assert list(fixed.special_cause[12:]) == ["concern"] * 3
    assert fixed.baseline == 12
    assert xmr(values).mean[0] == pytest.approx(12.8)


def test_rules_do_not_run_across_a_rebase():
    """1..8 rises 7 times (a trend of 8 points); split into 1-4 and 5-8 each phase is too short
    for a trend, and the phases get means 2.5 and 6.5."""
    assert flagged(xmr(list(range(1, 9))), "trend") == list(range(8))
    r = xmr(list(range(1, 9)), rebase_at=[4])
    assert flagged(r, "trend") == []
    assert list(r.mean) == [2.5] * 4 + [6.5] * 4


def test_short_series_warns_and_long_one_does_not():
    assert xmr(range(11)).warnings == [
        "There are fewer than 12 points (11); limits are unreliable."
    ]
    assert xmr([10, 12] * 6).warnings == []
    short_baseline = xmr([10, 12] * 10, baseline=6)
    assert len(short_baseline.warnings) == 1 and "fixed on 6 points" in short_baseline.warnings[0]


def test_result_carries_periods_and_converts_to_a_frame():
    periods = pd.period_range("2025-01", periods=12, freq="M")
    r = xmr([10, 12] * 6, periods)
    assert r.periods == list(periods)
    frame = r.to_frame()
    assert list(frame["period"]) == list(periods)
    assert frame["upper_process_limit"].iloc[0] == pytest.approx(16.32)
    assert set(frame["special_cause"]) == {"common"}


# --- a steady process and a real change -------------------------------------------------


def test_steady_poisson_counts_rarely_signal():
    """100 steady series of 24 monthly counts (Poisson, mean 10, seed 0): measured 3.7% of
    points flagged and 18% of charts with any signal when written; the bounds leave room for
    that, while a broken rule (e.g. shifts of 3) would flag far more."""
    rng = np.random.default_rng(0)
    results = [xmr(rng.poisson(10, 24)) for _ in range(100)]
    share_points = np.mean([r.has_special_cause.mean() for r in results])
    share_charts = np.mean([r.has_special_cause.any() for r in results])
    assert share_points < 0.08
    assert share_charts < 0.35


def test_planted_rise_is_concern():
    """18 steady months (Poisson 10) then 6 months at mean 30: with limits fixed on the steady
    months, the last six points are above the UPL or in a shift and all are concern."""
    rng = np.random.default_rng(1)
    values = np.r_[rng.poisson(10, 18), rng.poisson(30, 6)]
    r = xmr(values, baseline=18)
    assert list(r.special_cause[-6:]) == ["concern"] * 6
    assert "improvement" not in set(r.special_cause)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "no values given"),
        ({"values": [1.0, float("nan"), 2.0]}, "positions 1"),
        ({"values": [[1, 2], [3, 4]]}, "one-dimensional"),
        ({"values": [1, 2, 3], "baseline": 1}, "baseline=1 is too short"),
        ({"values": [1, 2, 3], "periods": ["a", "b"]}, "2 periods given for 3 values"),
        ({"values": [1, 2, 3], "improvement_direction": "up"}, "improvement_direction='up'"),
        ({"values": [1, 2, 3, 4], "rebase_at": [3]}, "phase starting at point 3 has 1"),
        ({"values": [1, 2, 3, 4], "rebase_at": [9]}, "rebase_at=[9]"),
        ({"values": [1, 2, 3], "trend_length": 1}, "trend_length=1"),
    ],
)
def test_bad_input_raises_spc_error_naming_the_problem(kwargs, message):
    with pytest.raises(SpcError, match=message.replace("[", r"\[").replace("]", r"\]")):
        xmr(**kwargs)
    assert issubclass(SpcError, ThemesError)


# --- period counts ----------------------------------------------------------------------


def test_weekly_counts_start_on_monday_and_fill_gaps():
    """Sunday 5 Jan 2025 and Monday 6 Jan fall in different weeks; the empty week of 13 Jan
    is a 0 row; a missing group is counted, not dropped."""
    dates = pd.Series(pd.to_datetime(["2025-01-05", "2025-01-06", "2025-01-07", "2025-01-21"]))
    groups = pd.Series(["incident", "complaint", "incident", None])
    counts = period_counts(dates, freq="W", groups=groups)
    assert [p.start_time.strftime("%Y-%m-%d") for p in counts.index] == [
        "2024-12-30", "2025-01-06", "2025-01-13", "2025-01-20",
    ]  # fmt: skip
    assert all(p.start_time.dayofweek == 0 for p in counts.index)
    assert list(counts.columns) == ["(missing)", "complaint", "incident"]
    assert counts["incident"].tolist() == [1, 1, 0, 0]
    assert counts["complaint"].tolist() == [0, 1, 0, 0]
    assert counts["(missing)"].tolist() == [0, 0, 0, 1]
    assert int(counts.to_numpy().sum()) == 4


def test_monthly_counts_span_start_and_end():
    dates = pd.Series(pd.to_datetime(["2025-01-31", "2025-01-01", "2025-03-15", "2024-11-30"]))
    counts = period_counts(dates, freq="M", start="2024-12-01", end="2025-04-30")
    assert [str(p) for p in counts.index] == ["2024-12", "2025-01", "2025-02", "2025-03", "2025-04"]
    assert counts["count"].tolist() == [0, 2, 0, 1, 0]  # 2024-11-30 is before start


def test_period_counts_rejects_missing_dates():
    with pytest.raises(SpcError, match="1 record\\(s\\) have no date \\(positions 1\\)"):
        period_counts(pd.Series(["2025-01-01", None]), freq="M")
    with pytest.raises(SpcError, match="freq='D'"):
        period_counts(pd.Series(["2025-01-01"]), freq="D")


def test_share_of_total():
    index = pd.period_range("2025-01", periods=3, freq="M", name="period")
    counts = pd.DataFrame({"falls": [2, 0, 5], "meds": [1, 0, 0]}, index=index)
    totals = pd.Series([4, 0, 10], index=index)
    share = share_of_total(counts, totals)
    assert share["falls"].tolist()[0] == 0.5 and share["falls"].tolist()[2] == 0.5
    assert share["meds"].iloc[0] == 0.25
    assert np.isnan(share["falls"].iloc[1])
    with pytest.raises(SpcError, match="exceeds the period total"):
        share_of_total(counts, pd.Series([1, 0, 10], index=index))
    with pytest.raises(SpcError, match="totals lack 1 period"):
        share_of_total(counts, totals.iloc[:2])
