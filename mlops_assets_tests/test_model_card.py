"""Model card Markdown and the ROC / confusion-matrix PNGs."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from mlops_assets.catalogue import GateResult
from mlops_assets.training.model_card import render_model_card
from mlops_assets.training.plots import confusion_matrix_png, release_plots, roc_curve_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_model_card_shows_window_metrics_beside_champion_gates_and_feature_version():
    gates = [
        GateResult("metric_floors", True, 0.05, 0.0, "all metric floors hold"),
        GateResult("latency", False, 72.5, 50.0, "p95 single-row 72.5 ms > limit 50.0 ms"),
        {"gate": "fairness", "passed": True, "value": 0.03, "threshold": 0.1, "message": "gap | small"},
    ]
    card = render_model_card(
        model_name="mlops_model",
        version="7",
        metrics={"roc_auc": 0.8012, "accuracy": 0.7, "brier": 0.2},
        champion_metrics={"roc_auc": 0.79, "accuracy": 0.71},
        champion_version="6",
        gate_results=gates,
        data_window="1949-01..1998-10",
        partition_count=598,
        feature_version="feat-1a2b",
        estimator="hist_gradient_boosting",
        params={"max_iter": 100},
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert card.startswith("# Model card: mlops_model version 7")
    assert "- Data window: 1949-01..1998-10" in card
    assert "- Partitions: 598" in card
    assert "- Feature code version: feat-1a2b" in card
    assert "| roc_auc | 0.8012 | 0.7900 | +0.0112 |" in card
    assert "| accuracy | 0.7000 | 0.7100 | -0.0100 |" in card
    assert "| brier | 0.2000 | — | — |" in card  # no champion value: shown as missing, not as zero
    assert "champion (v6)" in card
    assert "| latency | **FAIL** | 72.5000 | 50.0000 | p95 single-row 72.5 ms > limit 50.0 ms |" in card
    assert "gap \\| small" in card  # a pipe in a message does not break the table
    assert "Blocked by: latency." in card


def test_model_card_first_deployment_and_no_gates():
    card = render_model_card(model_name="m", version=None, metrics={"roc_auc": float("nan")})
    assert "| roc_auc | n/a | — | — |" in card
    assert "first deployment" in card
    assert "No gate results recorded." in card
    assert "Data window: not recorded" in card


def test_plots_are_real_pngs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    roc = roc_curve_png(y, scores, baseline=(y, rng.random(300), "champion"))
    cm = confusion_matrix_png(y, (scores >= 0.5).astype(int))
    for png in (roc, cm):
        assert png.startswith(PNG_MAGIC)
        img = imread(io.BytesIO(png), format="png")
        assert img.shape[0] > 200 and img.shape[1] > 200
        assert img.std() > 0.05  # something was drawn
    with pytest.raises(ValueError, match="both classes"):
        roc_curve_png(np.zeros(10), np.linspace(0, 1, 10))


def test_release_plots_for_a_model_and_its_champion():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = np.where(X["a"] + rng.normal(scale=0.5, size=400) > 0, "yes", "no")
    model = LogisticRegression().fit(X, y)
    champion = LogisticRegression().fit(X[["a"]].assign(b=0.0), y)
    plots = release_plots(model, X, y, positive_label="yes", champion=champion, champion_version="4")
    assert set(plots) == {"plots/roc_curve.png", "plots/confusion_matrix.png"}
    assert all(png.startswith(PNG_MAGIC) for png in plots.values())


def test_model_card_shows_the_fitted_window_its_age_the_refit_and_the_threshold():
    card = render_model_card(
        model_name="m",
        version="3",
        metrics={"roc_auc": 0.8, "pr_auc": 0.6},
        data_window="1995-10..1998-09",
        window_end=datetime(1998, 10, 1, tzinfo=UTC),
        backtest=[
            {"holdout": "1998-07..1998-07", "fitted": "1995-07..1998-06"},
            {"holdout": "1998-08..1998-08", "fitted": "1995-08..1998-07"},
        ],
        holdout_window="1998-07..1998-09",
        threshold="0.2384 (best F1, chosen on the validation window)",
        created_at=datetime(1998, 10, 11, tzinfo=UTC),
    )
    assert "- Data window: 1995-10..1998-09 (data up to 1998-10-01, 10 days old at creation)" in card
    assert (
        "rolling-origin backtest over the holdout (1998-07..1998-07 predicted by the recipe fitted on "
        "1995-07..1998-06; 1998-08..1998-08 predicted by the recipe fitted on 1995-08..1998-07)" in card
    )
    assert "- Holdout window: 1998-07..1998-09" in card
    assert "## Decision threshold" in card and "at least 0.2384 (best F1" in card
    assert card.index("| roc_auc |") < card.index("| pr_auc |")
