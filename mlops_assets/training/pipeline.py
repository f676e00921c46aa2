"""The model: a scikit-learn pipeline with its preprocessing inside, a time-based split, and evaluation.

Nothing here knows about Dagster or MLflow. The split is by partition, counted back from the newest labeled
partition: the newest ``model.holdout_partitions`` are the holdout (never fitted by the evaluated model), the
``model.validation_partitions`` before them the validation window (the decision threshold is chosen there), and the
training window is what precedes them (the newest ``model.train_window_partitions`` of it, or all). The refit
window (:func:`refit_window`) is the training window moved forward to end at the newest labeled partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops_assets.config import MlopsConfig
from mlops_assets.metrics import classification_metrics


class TrainingError(ValueError):
    """Training cannot proceed on this data (too few partitions, one class only, ...)."""


@dataclass(frozen=True)
class Split:
    train: list[str]
    validation: list[str]
    holdout: list[str]

    def to_dict(self) -> dict[str, Any]:
        def window(keys: list[str]) -> dict[str, Any]:
            return {
                "first": keys[0] if keys else None,
                "last": keys[-1] if keys else None,
                "count": len(keys),
            }

        return {
            "train": window(self.train),
            "validation": window(self.validation),
            "holdout": window(self.holdout),
        }


def time_split(partition_keys: list[str], cfg: MlopsConfig) -> Split:
    """Split labeled partition keys (any order) into train / validation / holdout windows, counted back from the
    newest one."""
    keys = sorted(partition_keys)
    n = len(keys)
    m = cfg.model
    n_hold, n_val = m.holdout_partitions, m.validation_partitions
    if n < n_hold + n_val + 1:
        raise TrainingError(
            f"{n} labeled partition(s); the windows need at least {n_hold + n_val + 1}: "
            f"model.holdout_partitions ({n_hold}) + model.validation_partitions ({n_val}) + one to train on"
        )
    n_train = n - n_hold - n_val
    train = keys[:n_train]
    if m.train_window_partitions is not None:
        train = train[-m.train_window_partitions :]
    return Split(train=train, validation=keys[n_train : n_train + n_val], holdout=keys[n_train:][n_val:])


def refit_window(partition_keys: list[str], cfg: MlopsConfig) -> list[str]:
    """The partitions a refit is fitted on: the newest ``model.train_window_partitions`` labeled partitions, up to
    and including the newest (all of them when the window is null)."""
    keys = sorted(partition_keys)
    window = cfg.model.train_window_partitions
    return keys[-window:] if window is not None else keys


def binary_labels(labels: pd.Series, positive_label: Any) -> np.ndarray:
    """1 where the label is the positive class (compared as given, or as text when types differ)."""
    hit = labels == positive_label
    if not hit.any() and labels.notna().any():
        hit = labels.astype(str) == str(positive_label)
    return hit.to_numpy(dtype=np.int64)


def build_pipeline(cfg: MlopsConfig, numeric: list[str], categorical: list[str]) -> Pipeline:
    """Preprocessing and estimator in one pipeline, so serving applies exactly what training fitted."""
    m = cfg.model
    params = dict(m.params)
    if m.estimator == "hist_gradient_boosting":
        # Native missing-value and categorical support: categories become ordinal codes, unknown ones missing.
        pre = ColumnTransformer(
            [
                ("num", "passthrough", numeric),
                (
                    "cat",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=np.nan,
                        encoded_missing_value=np.nan,
                        # HistGradientBoosting takes at most 255 categories; rarer ones share a code.
                        max_categories=250,
                    ),
                    categorical,
                ),
            ],
            verbose_feature_names_out=False,
        )
        params.setdefault("random_state", m.random_state)
        params.setdefault("early_stopping", False)
        est = HistGradientBoostingClassifier(
            categorical_features=[len(numeric) + i for i in range(len(categorical))] or None, **params
        )
    else:
        pre = ColumnTransformer(
            [
                ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
                (
                    "cat",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="most_frequent")),
                            ("onehot", OneHotEncoder(handle_unknown="ignore")),
                        ]
                    ),
                    categorical,
                ),
            ],
            verbose_feature_names_out=False,
        )
        if m.estimator == "random_forest":
            params.setdefault("random_state", m.random_state)
            params.setdefault("n_jobs", 1)
            est = RandomForestClassifier(**params)
        else:
            params.setdefault("max_iter", 1000)
            est = LogisticRegression(**params)
    return Pipeline([("preprocess", pre), ("model", est)])


def evaluate(
    pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, *, threshold: float = 0.5
) -> dict[str, float | None]:
    """Metrics of one slice, label metrics at ``threshold``; ``roc_auc`` and ``pr_auc`` are None when the slice
    holds one class only."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y)
    if len(X) == 0:
        return classification_metrics(y, np.zeros(0)) | {"pr_auc": None}
    proba = pipeline.predict_proba(X)[:, 1]
    metrics = classification_metrics(y, proba, threshold=threshold)
    both = len(np.unique(y)) == 2
    return metrics | {"pr_auc": float(average_precision_score(y, proba)) if both else None}


@dataclass
class TrainedModel:
    pipeline: Pipeline
    feature_columns: list[str]
    numeric: list[str]
    categorical: list[str]
    split: Split
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    n_train: int = 0

    @property
    def holdout_metrics(self) -> dict[str, float | None]:
        return self.metrics.get("holdout", {})


@dataclass
class BacktestFold:
    holdout: list[str]  # the holdout partitions this fold predicts
    model: TrainedModel  # the recipe fitted on the training window ending right before them


class Backtest:
    """The training recipe judged as it is deployed (a rolling-origin backtest): each fold of the holdout is
    predicted by the recipe fitted on the training window that ends right before the fold, so the gates measure a
    model as fresh, relative to the rows it predicts, as the refit that gets deployed.

    It predicts like a fitted classifier on the holdout's rows, routed to their fold by the row's position (the
    holdout frame's index is ``0..n-1``); any other row (a latency probe's copy, a perturbed row with another index)
    goes to the newest fold's model.
    """

    def __init__(self, folds: list[BacktestFold], fold_of_row: np.ndarray) -> None:
        if not folds:
            raise ValueError("a backtest needs at least one fold")
        self.folds = folds
        self.fold_of_row = np.asarray(fold_of_row, dtype=np.int64)
        self.classes_ = folds[-1].model.pipeline.classes_

    @property
    def newest(self) -> TrainedModel:
        """The newest fold's model: the one fitted nearest to the refit, so the one the refit is compared with."""
        return self.folds[-1].model

    def _fold_positions(self, X: pd.DataFrame) -> np.ndarray:
        newest = len(self.folds) - 1
        index = X.index.to_numpy()
        if not pd.api.types.is_integer_dtype(index.dtype):
            return np.full(len(X), newest)
        inside = (index >= 0) & (index < len(self.fold_of_row))
        return np.where(inside, self.fold_of_row[np.clip(index, 0, len(self.fold_of_row) - 1)], newest)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        positions = self._fold_positions(X)
        out = np.empty((len(X), len(self.classes_)), dtype=float)
        for i, fold in enumerate(self.folds):
            rows = positions == i
            if rows.any():
                out[rows] = fold.model.pipeline.predict_proba(X[rows])
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def describe(self) -> list[dict[str, str]]:
        """Per fold: the partitions predicted and the window the model that predicted them was fitted on."""
        return [
            {
                "holdout": f"{f.holdout[0]}..{f.holdout[-1]}",
                "fitted": f"{f.model.split.train[0]}..{f.model.split.train[-1]}",
            }
            for f in self.folds
        ]


def backtest_folds(holdout: list[str], folds: int) -> list[list[str]]:
    """``holdout`` (in time order) cut into at most ``folds`` contiguous runs of partitions, as even as can be."""
    n = min(folds, len(holdout))
    bounds = np.linspace(0, len(holdout), n + 1).round().astype(int)
    return [holdout[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def fit(
    cfg: MlopsConfig,
    frame: pd.DataFrame,
    partition_column: str,
    numeric: list[str],
    categorical: list[str],
    *,
    split: Split | None = None,
) -> TrainedModel:
    """Fit on the training window of ``frame`` (rows tagged with their partition key) and evaluate every slice."""
    label = cfg.dataset.label_column
    labeled = frame[frame[label].notna()]
    split = split or time_split(labeled[partition_column].unique().tolist(), cfg)
    columns = [*numeric, *categorical]
    slices = {name: labeled[labeled[partition_column].isin(keys)] for name, keys in split.__dict__.items()}
    train = slices["train"]
    y_train = binary_labels(train[label], cfg.dataset.positive_label)
    if len(np.unique(y_train)) < 2:
        raise TrainingError(
            f"training window {split.train[0]}..{split.train[-1]} holds one class only; cannot train a classifier"
        )
    pipeline = build_pipeline(cfg, numeric, categorical)
    pipeline.fit(train[columns], y_train)
    model = TrainedModel(pipeline, columns, list(numeric), list(categorical), split, n_train=len(train))
    for name, part in slices.items():
        model.metrics[name] = evaluate(
            pipeline, part[columns], binary_labels(part[label], cfg.dataset.positive_label)
        )
    return model
