"""The decision threshold: which positive-class probability makes a prediction positive.

Chosen on the validation window (never the holdout, which judges the model), by ``model.threshold``: the best F1
by default, or the threshold reaching a target precision (recall) with the best recall (precision). A fixed 0.5 is
right only for balanced, calibrated data: on 5 % positives it predicts almost nothing positive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlops_assets.config import ThresholdConfig


class ThresholdError(ValueError):
    """No threshold can be chosen on these labels (no rows, or one class only)."""


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold, how it was chosen, and its precision / recall / F1 on the window it was chosen on."""

    value: float
    objective: str
    target: float | None
    reached: bool  # False when no threshold reaches the target: the closest one was taken
    window: str  # "validation", "training" (validation had one class) or "fixed" (gates.decision_threshold)
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        how = (
            "fixed by gates.decision_threshold"
            if self.window == "fixed"
            else f"chosen on the {self.window} window"
        )
        goal = "best F1" if self.objective == "f1" else f"{self.objective} >= {self.target}"
        if self.window != "fixed" and not self.reached:
            goal += " (not reachable: closest taken)"
        return f"{self.value:.4f} ({goal}, {how})"


def choose_threshold(
    y: np.ndarray, proba: np.ndarray, cfg: ThresholdConfig, *, window: str = "validation"
) -> ThresholdChoice:
    """The threshold on ``proba`` (predict positive when ``proba >= threshold``) that best meets ``cfg`` on 0/1
    labels ``y``."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise ThresholdError(
            f"choosing a threshold needs both classes, the {window} window has {np.unique(y)}"
        )
    precision, recall, thresholds = precision_recall_curve(y, np.asarray(proba, dtype=float))
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    reached = True
    if cfg.objective == "f1":
        i = int(np.argmax(f1))
    else:
        hit, other = (precision, recall) if cfg.objective == "precision" else (recall, precision)
        ok = hit >= cfg.target
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(other[ok])])
        else:
            i, reached = int(np.argmax(hit)), False
    return ThresholdChoice(
        value=float(thresholds[i]),
        objective=cfg.objective,
        target=cfg.target,
        reached=reached,
        window=window,
        precision=float(precision[i]),
        recall=float(recall[i]),
        f1=float(f1[i]),
    )


def fixed_threshold(value: float) -> ThresholdChoice:
    """A threshold set in the configuration (``gates.decision_threshold``), not chosen."""
    return ThresholdChoice(value=value, objective="fixed", target=None, reached=True, window="fixed")
