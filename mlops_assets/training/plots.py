"""ROC curve and confusion matrix as PNG bytes, for MLflow artifacts and the model card.

Uses matplotlib's object API (``Figure`` + the Agg canvas) rather than ``pyplot``: no global state, no GUI backend,
safe in threads and in the Dagster run worker.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def roc_curve_png(
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    title: str = "ROC curve",
    baseline: tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray, str] | None = None,
) -> bytes:
    """ROC curve of ``scores`` against binary ``y_true`` (0/1), optionally with a second model's curve
    (``baseline`` = ``(y_true, scores, label)``, e.g. the champion on the same holdout)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) != 2:
        raise ValueError("a ROC curve needs both classes in y_true")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    curves = [(y_true, np.asarray(scores), "model")]
    if baseline is not None:
        curves.append((np.asarray(baseline[0]), np.asarray(baseline[1]), baseline[2]))
    for yt, s, label in curves:
        fpr, tpr, _ = roc_curve(yt, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(yt, s):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _png(fig)


def confusion_matrix_png(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    *,
    labels: Sequence[str] = ("negative", "positive"),
    title: str = "Confusion matrix",
) -> bytes:
    """Confusion matrix of binary (0/1) ``y_pred`` against ``y_true``, counts annotated in each cell."""
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=[0, 1])
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks([0, 1], [f"predicted {labels[0]}", f"predicted {labels[1]}"])
    ax.set_yticks([0, 1], [f"actual {labels[0]}", f"actual {labels[1]}"])
    threshold = cm.max() / 2 if cm.max() else 0
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > threshold else "black",
            )
    ax.set_title(title)
    return _png(fig)


def release_plots(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    *,
    positive_label: Any = 1,
    threshold: float = 0.5,
    champion: Any | None = None,
    champion_version: str | None = None,
) -> dict[str, bytes]:
    """The PNGs to log with a challenger, keyed by artifact path: its ROC curve on the holdout (with the
    champion's on the same rows when given) and its confusion matrix at ``threshold``. Pass the result as
    ``file_artifacts`` to :meth:`ModelRegistry.register <mlops_assets.registry.model_registry.ModelRegistry.register>`.
    """
    from mlops_assets.training.gates import positive_proba

    y_true = (np.asarray(y) == positive_label).astype(int)
    scores = positive_proba(model, X, positive_label)
    baseline = None
    if champion is not None:
        label = f"champion v{champion_version}" if champion_version else "champion"
        baseline = (y_true, positive_proba(champion, X, positive_label), label)
    return {
        "plots/roc_curve.png": roc_curve_png(y_true, scores, title="ROC curve (holdout)", baseline=baseline),
        "plots/confusion_matrix.png": confusion_matrix_png(
            y_true,
            (scores >= threshold).astype(int),
            title=f"Confusion matrix (holdout, threshold {threshold:.3f})",
        ),
    }
