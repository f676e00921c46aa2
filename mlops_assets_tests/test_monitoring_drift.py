"""Drift tests: sound statistics, practical significance, seasons, nulls, categories, labels, predictions, plot."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_assets.monitoring.drift import _adjust, detect_drift, drift_plot
from mlops_assets.monitoring.profile import build_profile
from mlops_assets.monitoring.settings import DriftConfig

CFG = DriftConfig()


def normal_frame(rng: np.random.Generator, n: int, cols: int = 20) -> pd.DataFrame:
    return pd.DataFrame(rng.standard_normal((n, cols)), columns=[f"x{i}" for i in range(cols)])


def mixed_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Assorted shapes: the tests must hold for skewed, heavy-tailed, discrete and binary columns alike."""
    d: dict[str, np.ndarray] = {}
    for i in range(4):
        d[f"normal{i}"] = rng.normal(size=n)
        d[f"lognormal{i}"] = rng.lognormal(size=n)
        d[f"t3_{i}"] = rng.standard_t(3, size=n)
    for i in range(3):
        d[f"poisson{i}"] = rng.poisson(2, size=n).astype(float)
        d[f"binary{i}"] = (rng.random(n) < 0.3).astype(float)
    d["cat_small"] = rng.choice(list("abcde"), p=[0.4, 0.3, 0.2, 0.07, 0.03], size=n)
    d["cat_wide"] = rng.choice([f"v{i}" for i in range(30)], size=n)
    return pd.DataFrame(d)


@pytest.fixture(scope="module")
def normal_profile():
    return build_profile(normal_frame(np.random.default_rng(10), 100_000), [f"x{i}" for i in range(20)])


def test_binned_wasserstein_matches_the_exact_distance():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=50_000)})
    prof = build_profile(ref, ["x"])
    for cur_x in (rng.normal(0.3, 1, 20_000), rng.normal(0, 1.5, 20_000), rng.lognormal(size=20_000)):
        rep = detect_drift(prof, pd.DataFrame({"x": cur_x}), CFG)
        exact = stats.wasserstein_distance(ref["x"], cur_x) / prof.columns["x"].scale
        assert rep.feature("x").distance == pytest.approx(exact, rel=0.03)


def test_holm_correction_matches_the_textbook_procedure():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, then made monotone.
    np.testing.assert_allclose(_adjust(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(_adjust(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])


@pytest.mark.parametrize(
    ("ref_rows", "rows", "partitions"), [(500, 50, 300), (20_000, 100, 300), (20_000, 5_000, 60)]
)
def test_false_alarm_rate_on_no_drift_streams_is_at_most_one_percent(ref_rows, rows, partitions):
    rng = np.random.default_rng(ref_rows + rows)
    ref = mixed_frame(rng, ref_rows)
    numeric = [c for c in ref.columns if not c.startswith("cat")]
    prof = build_profile(ref, numeric, ["cat_small", "cat_wide"])
    alarms = sum(detect_drift(prof, mixed_frame(rng, rows), CFG).drifted for _ in range(partitions))
    assert alarms / partitions <= 0.01


def test_a_two_tenths_std_shift_in_one_of_twenty_columns_is_flagged_at_10k_rows(normal_profile):
    rng = np.random.default_rng(1)
    for _ in range(5):
        cur = normal_frame(rng, 10_000)
        cur["x7"] += 0.2
        rep = detect_drift(normal_profile, cur, CFG)
        assert rep.drifted_features == ["x7"]
        feat = rep.feature("x7")
        assert feat.test == "ks" and feat.p_value_adjusted < CFG.alpha
        assert feat.distance == pytest.approx(0.2, abs=0.05) and feat.threshold == CFG.wasserstein_threshold


def test_a_two_hundredths_std_shift_is_not_flagged_even_at_a_million_rows(normal_profile):
    cur = normal_frame(np.random.default_rng(2), 1_000_000)
    cur["x7"] += 0.02
    rep = detect_drift(normal_profile, cur, CFG)
    feat = rep.feature("x7")
    # Statistically significant (a million rows see everything) but below the practical floor.
    assert feat.p_value_adjusted < CFG.alpha
    assert feat.distance < CFG.wasserstein_threshold
    assert not rep.drifted and not feat.drifted


def test_seasonal_profile_does_not_alarm_on_winter_but_pooled_would():
    rng = np.random.default_rng(3)
    ts = pd.Series(pd.date_range("2010-01-01", "2014-12-31", freq="D", tz="UTC"))
    season = np.cos(2 * np.pi * (ts.dt.dayofyear.to_numpy() - 15) / 365.25)  # high in January
    frame = pd.DataFrame({"t": ts, "temp": 2 * season + rng.normal(size=len(ts))})
    ref, live = frame[frame.t < "2013-01-01"], frame[frame.t >= "2013-01-01"]
    seasonal = build_profile(ref, ["temp"], timestamp_column="t")
    pooled = build_profile(ref, ["temp"])
    months = [g for _, g in live.groupby(live.t.dt.strftime("%Y-%m"))]
    assert sum(detect_drift(seasonal, m, CFG).drifted for m in months) <= 1
    assert sum(detect_drift(pooled, m, CFG).drifted for m in months) >= 12
    # A real change is still seen within one month: January four degrees colder than the reference Januaries.
    jan = months[12].assign(temp=months[12]["temp"] - 4)
    rep = detect_drift(seasonal, jan, CFG)
    assert rep.drifted and rep.strong


def test_null_rate_drift_is_flagged_on_its_own():
    rng = np.random.default_rng(4)
    prof = build_profile(pd.DataFrame({"x": rng.normal(size=20_000)}), ["x"])
    cur = pd.DataFrame({"x": rng.normal(size=5_000)})
    cur.loc[cur.sample(frac=0.3, random_state=0).index, "x"] = np.nan
    feat = detect_drift(prof, cur, CFG).feature("x")
    assert feat.null_drifted and feat.drifted
    assert feat.null_rate_reference == 0.0 and feat.null_rate_current == pytest.approx(0.3)
    assert feat.distance < CFG.wasserstein_threshold  # the values that are present did not move


def test_categorical_drift_uses_chi_squared_and_jensen_shannon():
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"c": rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=20_000)})
    prof = build_profile(ref, [], ["c"])
    same = detect_drift(
        prof, pd.DataFrame({"c": rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=5_000)}), CFG
    )
    assert not same.drifted
    moved = pd.DataFrame({"c": rng.choice(["a", "b", "c", "new"], p=[0.3, 0.3, 0.2, 0.2], size=5_000)})
    feat = detect_drift(prof, moved, CFG).feature("c")
    assert feat.test == "chi2" and feat.distance_name == "jensen_shannon"
    assert feat.drifted and feat.distance > CFG.jensen_shannon_threshold
    assert "not in the reference" in feat.note


def test_label_and_prediction_drift_through_the_same_machinery():
    rng = np.random.default_rng(6)
    train = pd.DataFrame({"label": (rng.random(10_000) < 0.3).astype(int), "proba": rng.beta(2, 5, 10_000)})
    prof = build_profile(train, ["proba"], ["label"])
    later = pd.DataFrame({"label": (rng.random(2_000) < 0.6).astype(int), "proba": rng.beta(2, 5, 2_000)})
    label = detect_drift(prof, later, CFG, columns=["label"])
    assert [f.column for f in label.features] == ["label"] and label.drifted
    preds = detect_drift(prof, later.assign(proba=rng.beta(5, 2, 2_000)), CFG, columns=["proba"])
    assert preds.drifted_features == ["proba"]
    assert not detect_drift(prof, later, CFG, columns=["proba"]).drifted


def test_report_is_json_ready_and_the_plot_is_a_png():
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=5_000), "c": rng.choice(["a", "b"], size=5_000)})
    prof = build_profile(ref, ["x"], ["c"])
    cur = pd.DataFrame({"x": rng.normal(1, 1, 1_000), "c": rng.choice(["a", "b"], size=1_000)})
    rep = detect_drift(prof, cur, CFG)
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert doc["drifted_features"] == ["x"] and doc["tests"] == 2
    assert {"test", "statistic", "p_value", "distance", "threshold", "drifted"} <= set(doc["features"][0])
    png = drift_plot(prof, cur, rep)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 300


def test_errors_name_the_problem():
    ts = pd.Series(pd.date_range("2020-01-01", periods=400, freq="D", tz="UTC"))
    prof = build_profile(pd.DataFrame({"t": ts, "x": np.arange(400.0)}), ["x"], timestamp_column="t")
    with pytest.raises(KeyError, match="timestamp column 't'"):
        detect_drift(prof, pd.DataFrame({"x": [1.0]}), CFG)
    with pytest.raises(KeyError, match="not in the reference profile"):
        detect_drift(prof, pd.DataFrame({"t": ts, "x": 1.0}), CFG, columns=["y"])
    with pytest.raises(KeyError, match="missing from the current frame"):
        detect_drift(prof, pd.DataFrame({"t": ts}), CFG)
    with pytest.raises(ValueError, match="empty"):
        detect_drift(prof, pd.DataFrame({"t": ts, "x": 1.0}).iloc[:0], CFG)


def test_config_rejects_a_strong_level_looser_than_alpha():
    with pytest.raises(ValueError, match="strong_alpha"):
        DriftConfig(alpha=0.01, strong_alpha=0.05)
