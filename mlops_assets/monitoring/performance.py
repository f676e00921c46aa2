"""The champion's metric on newly labeled data (labeled partitions now, the live prediction log later).

Feeds the performance trigger of :mod:`mlops_assets.monitoring.policy` through
:class:`~mlops_assets.monitoring.policy.PerformanceObservation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops_assets.monitoring.policy import PerformanceObservation
from mlops_assets.monitoring.settings import MetricName

# Names in sklearn.metrics: scikit-learn is imported when a metric is computed, not with this module (which
# `mlops-assets status` imports to evaluate the triggers).
THRESHOLD_METRICS = {
    "accuracy": "accuracy_score",
    "f1": "f1_score",
    "precision": "precision_score",
    "recall": "recall_score",
}


def champion_metric(
    labels: Sequence[Any] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    *,
    positive_label: Any = 1,
    metric: MetricName = "roc_auc",
    threshold: float = 0.5,
) -> float | None:
    """``metric`` of the positive-class ``probabilities`` against raw ``labels``.

    None when it is not defined: no rows, or (for ROC AUC, log loss, precision/recall/F1) only one class present —
    a month without rain says nothing about ranking rain. Threshold metrics predict positive at ``threshold``.
    """
    from sklearn import metrics

    y_raw = np.asarray(labels, dtype=object)
    p = np.asarray(probabilities, dtype=float)
    if len(y_raw) != len(p):
        raise ValueError(f"{len(y_raw)} labels but {len(p)} probabilities")
    if np.isnan(p).any():
        raise ValueError("probabilities contain NaN")
    if len(p) == 0:
        return None
    y = np.array([v == positive_label or str(v) == str(positive_label) for v in y_raw], dtype=int)
    one_class = y.min() == y.max()
    if metric == "roc_auc":
        return None if one_class else float(metrics.roc_auc_score(y, p))
    if metric == "log_loss":
        return None if one_class else float(metrics.log_loss(y, p, labels=[0, 1]))
    if metric == "brier":
        return float(metrics.brier_score_loss(y, p))
    pred = (p >= threshold).astype(int)
    if metric == "accuracy":
        return float(metrics.accuracy_score(y, pred))
    if one_class:
        return None
    return float(getattr(metrics, THRESHOLD_METRICS[metric])(y, pred, zero_division=0))


def performance_observation(
    partition: str,
    labels: Sequence[Any] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    champion_version: str | None,
    *,
    positive_label: Any = 1,
    metric: MetricName = "roc_auc",
) -> PerformanceObservation:
    """One partition's :class:`PerformanceObservation` for the policy."""
    value = champion_metric(labels, probabilities, positive_label=positive_label, metric=metric)
    return PerformanceObservation(partition, value, len(labels), champion_version)
