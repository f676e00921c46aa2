"""Binary classification metrics, computed one way for the holdout, the gates and live predictions."""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("roc_auc", "accuracy", "f1", "precision", "recall", "positive_rate", "mean_probability")


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, *, threshold: float = 0.5, pred: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """``n`` and the metrics of positive-class probabilities ``proba`` against 0/1 labels ``y``.

    Predictions are ``proba >= threshold`` unless ``pred`` gives them (the service logs its own). ``roc_auc`` is
    None when ``y`` holds one class only (ranking is undefined there); every metric is None with no rows.
    """
    from sklearn import metrics as skm

    y = np.asarray(y)
    proba = np.asarray(proba, dtype=float)
    n = int(len(y))
    if n == 0:
        return dict.fromkeys(METRIC_KEYS) | {"n": 0}
    pred = (proba >= threshold).astype(int) if pred is None else np.asarray(pred)
    return {
        "n": n,
        "roc_auc": float(skm.roc_auc_score(y, proba)) if len(np.unique(y)) == 2 else None,
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()),
        "mean_probability": float(proba.mean()),
    }
