"""The champion's metric on newly labeled data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from mlops_assets.monitoring.performance import champion_metric, performance_observation


def test_roc_auc_matches_sklearn_and_is_none_for_one_class():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    assert champion_metric(y, p) == pytest.approx(metrics.roc_auc_score(y, p))
    assert champion_metric(np.zeros(30, dtype=int), rng.random(30)) is None
    assert champion_metric([], []) is None


def test_positive_label_is_matched_on_raw_labels():
    y = ["rain", "dry", "rain", "dry"]
    p = [0.9, 0.1, 0.8, 0.3]
    assert champion_metric(y, p, positive_label="rain") == 1.0
    assert champion_metric(y, p, positive_label="dry") == 0.0
    assert champion_metric([1.0, 0.0, 1.0], [0.9, 0.2, 0.7], positive_label=1) == 1.0


def test_threshold_and_probability_metrics():
    y = [1, 0, 1, 0]
    p = [0.9, 0.6, 0.4, 0.1]
    assert champion_metric(y, p, metric="accuracy") == 0.5
    assert champion_metric(y, p, metric="precision") == 0.5
    assert champion_metric(y, p, metric="recall") == 0.5
    assert champion_metric(y, p, metric="brier") == pytest.approx(metrics.brier_score_loss(y, p))
    assert champion_metric(y, p, metric="log_loss") == pytest.approx(metrics.log_loss(y, p))
    assert champion_metric([0, 0], [0.2, 0.7], metric="accuracy") == 0.5
    assert champion_metric([0, 0], [0.2, 0.7], metric="f1") is None


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 3 probabilities"):
        champion_metric([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        champion_metric([0, 1], [0.1, float("nan")])


def test_observation_carries_rows_and_version():
    obs = performance_observation("1982-01", [1, 0, 1], [0.2, 0.9, 0.1], "4")
    assert obs.partition == "1982-01" and obs.n_rows == 3 and obs.champion_version == "4"
    assert obs.value == 0.0
