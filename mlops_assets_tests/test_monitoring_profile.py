"""Reference profiles: exact bins, seasons, JSON round trip, design effect, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_assets.monitoring.profile import OTHER, CategoricalProfile, NumericProfile, Profile, build_profile


def _days(start: str, n: int) -> pd.Series:
    return pd.Series(pd.date_range(start, periods=n, freq="D", tz="UTC"))


def test_numeric_bins_counts_and_sums_are_exact():
    frame = pd.DataFrame({"x": np.arange(1.0, 101.0)})
    prof = build_profile(frame, ["x"], bins=4)
    col = prof.columns["x"]
    assert isinstance(col, NumericProfile)
    np.testing.assert_allclose(col.edges, [25.75, 50.5, 75.25])
    assert col.counts.tolist() == [[25, 25, 25, 25]]
    np.testing.assert_allclose(
        col.sums[0], [sum(range(1, 26)), sum(range(26, 51)), sum(range(51, 76)), sum(range(76, 101))]
    )
    assert col.nulls.tolist() == [0]
    assert col.mean == pytest.approx(50.5)
    # Robust scale: IQR / 1.349 of 1..100.
    assert col.scale == pytest.approx((75.25 - 25.75) / 1.349)
    assert prof.seasonality == "none" and prof.season_rows.tolist() == [100]


def test_ties_give_fewer_bins_and_nulls_are_counted():
    frame = pd.DataFrame({"b": [0.0] * 70 + [1.0] * 25 + [np.nan] * 5})
    col = build_profile(frame, ["b"], bins=20).columns["b"]
    # Every interior quantile is 0 or 1: two unique edges, three bins (-inf, 0], (0, 1], (1, inf).
    assert col.edges.tolist() == [0.0, 1.0]
    assert col.counts.tolist() == [[70, 25, 0]]
    assert col.nulls.tolist() == [5]


def test_seasonal_counts_follow_the_calendar_month():
    ts = pd.concat([_days("2020-01-01", 31), _days("2020-07-01", 31)], ignore_index=True)
    frame = pd.DataFrame({"t": ts, "x": np.r_[np.zeros(31), np.ones(31)]})
    prof = build_profile(frame, ["x"], timestamp_column="t", bins=2)
    assert prof.seasonality == "month"
    assert prof.season_rows[0] == 31 and prof.season_rows[6] == 31 and prof.season_rows.sum() == 62
    counts = prof.columns["x"].counts
    assert counts.shape == (12, 2)
    assert counts[0].tolist() == [31, 0] and counts[6].tolist() == [0, 31]
    assert prof.start.startswith("2020-01-01") and prof.end.startswith("2020-07-31")


def test_categorical_frequencies_other_slot_and_integral_labels():
    frame = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["c", "d"], "label": [1.0, 0.0] * 5})
    prof = build_profile(frame, [], ["c", "label"], max_categories=2)
    c = prof.columns["c"]
    assert isinstance(c, CategoricalProfile)
    assert c.categories == ["a", "b", OTHER]
    assert c.counts.tolist() == [[5, 3, 2]]
    # 1.0 and 1 are the same label once stored as text.
    assert sorted(prof.columns["label"].categories) == ["0", "1"]


def test_round_trip_through_strict_json():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "t": _days("2019-01-01", 800),
            "x": rng.normal(size=800),
            "y": np.where(rng.random(800) < 0.1, np.nan, rng.random(800)),
            "c": rng.choice(["u", "v", "w"], size=800),
        }
    )
    prof = build_profile(frame, ["x", "y"], ["c"], timestamp_column="t")
    text = json.dumps(prof.to_dict(), allow_nan=False)
    back = Profile.from_dict(json.loads(text))
    assert back.to_dict() == prof.to_dict()
    assert back.numeric_columns == ["x", "y"] and back.categorical_columns == ["c"]
    np.testing.assert_array_equal(back.columns["x"].edges, prof.columns["x"].edges)


def test_unknown_profile_format_is_rejected():
    with pytest.raises(ValueError, match="unsupported profile format"):
        Profile.from_dict({"format": 99})


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho * rho) * e[i]
    return x


def test_design_effect_is_one_for_independent_rows_and_large_for_serially_dependent_ones():
    rng = np.random.default_rng(1)
    n = 3 * 365
    frame = pd.DataFrame({"t": _days("2001-01-01", n), "iid": rng.normal(size=n), "ar": _ar1(rng, n, 0.8)})
    prof = build_profile(frame, ["iid", "ar"], timestamp_column="t")
    assert prof.columns["iid"].design_effect < 1.3
    assert prof.columns["ar"].design_effect > 2.0
    # Without a timestamp there is no order to measure: rows count as independent.
    assert build_profile(frame, ["ar"]).columns["ar"].design_effect == 1.0


def test_errors_name_the_problem():
    frame = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"]})
    with pytest.raises(KeyError, match="nope"):
        build_profile(frame, ["nope"])
    with pytest.raises(TypeError, match="'s'"):
        build_profile(frame, ["s"])
    with pytest.raises(ValueError, match="empty"):
        build_profile(frame.iloc[:0], ["x"])
    with pytest.raises(ValueError, match="both numeric and categorical"):
        build_profile(frame, ["x"], ["x"])
    with pytest.raises(ValueError, match="no non-null values"):
        build_profile(pd.DataFrame({"x": [np.nan, np.nan]}), ["x"])
