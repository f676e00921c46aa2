"""Train a challenger on the offline store, put it through the release gates, and register it.

Three pieces, so each caller takes what it needs: :func:`load_training_data` (which partitions, which rows),
:func:`train_challenger` (fit, gates, reference profile, plots: no registry, no MLflow) and
:func:`register_challenger` (MLflow version, gate record, model card). :func:`train_and_gate` is the three in a row,
what ``trained_model`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets import progress
from mlops_assets.catalogue import GateResult
from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import row_keys
from mlops_assets.lineage import content_version

if TYPE_CHECKING:
    from mlops_assets.features.offline import OfflineStore
    from mlops_assets.monitoring.profile import Profile
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.training.pipeline import Split, TrainedModel

PARTITION = "__partition__"


class TrainingDataError(RuntimeError):
    """The offline store holds nothing to train on; the message says what to materialize."""


@dataclass
class TrainingData:
    """The rows of the split's windows, each with its partition key, and the columns the model reads."""

    frame: pd.DataFrame
    split: Split
    numeric: list[str]
    categorical: list[str]
    newest_partition: str | None  # the newest partition the offline store holds rows for

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


@dataclass
class Challenger:
    """A fitted challenger and everything the gates measured, before anything is registered."""

    model: TrainedModel
    gates: list[GateResult]
    metrics: dict[str, float]
    profile: Profile
    plots: dict[str, bytes]
    holdout: pd.DataFrame  # the holdout's feature columns (an input example comes from it)
    champion_version: str | None
    champion_metrics: dict[str, float] | None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class TrainOutcome:
    """A registered challenger: its MLflow version, gates and evidence."""

    version: str
    mlflow_run_id: str
    sha256: str
    metrics: dict[str, float]
    split: dict[str, Any]
    feature_version: str
    champion_version: str | None
    gates: list[GateResult]
    model_card: str
    training_data_version: str

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def load_training_data(cfg: MlopsConfig, store: OfflineStore) -> TrainingData:
    """Which partitions hold labeled rows (two columns read), the time split over them, and then whole rows for
    the split's windows only."""
    from mlops_assets.features import model_feature_columns
    from mlops_assets.monitoring.state import data_version
    from mlops_assets.training.pipeline import time_split

    progress.step("trained_model", "reading the offline store")
    ts_col, label = cfg.dataset.timestamp_column, cfg.dataset.label_column
    labels = store.read(columns=[ts_col, label])
    if labels.empty:
        raise TrainingDataError("the offline store is empty: materialize features first")
    row_partitions = row_keys(labels[ts_col], cfg.partitions.freq)
    newest = data_version(row_partitions.unique())
    split = time_split(row_partitions[labels[label].notna()].unique().tolist(), cfg)
    del labels, row_partitions
    frame = store.read([*split.train, *split.validation, *split.holdout])
    frame = frame.assign(**{PARTITION: row_keys(frame[ts_col], cfg.partitions.freq)})
    # The partition key is bookkeeping, not a model input.
    columns = model_feature_columns(cfg, [c for c in frame.columns if c != PARTITION])
    numeric = [
        c
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    categorical = [c for c in columns if c not in numeric]
    return TrainingData(frame, split, numeric, categorical, newest)


@dataclass
class ChampionForComparison:
    """The live champion, when it can score this challenger's holdout (same feature version)."""

    version: str
    model: Any | None  # None when not comparable
    feature_version: str | None

    @property
    def comparable(self) -> bool:
        return self.model is not None


def train_challenger(
    cfg: MlopsConfig,
    data: TrainingData,
    *,
    feature_version: str,
    champion: ChampionForComparison | None,
) -> Challenger:
    """Fit on the training window, evaluate every release gate on the holdout (beside ``champion`` when it is
    comparable), and compute the reference profile of the training window for drift checks."""
    from mlops_assets.training.gates import evaluate_gates
    from mlops_assets.training.pipeline import binary_labels, evaluate
    from mlops_assets.training.plots import release_plots

    label = cfg.dataset.label_column
    frame = data.frame
    progress.step("trained_model", f"fitting on {frame[PARTITION].nunique()} partition(s)")
    model, profile = fit_with_profile(cfg, frame, data.split, data.numeric, data.categorical)
    holdout = frame[frame[PARTITION].isin(model.split.holdout) & frame[label].notna()]
    X_hold = holdout[model.feature_columns]
    y_bin = binary_labels(holdout[label], cfg.dataset.positive_label)
    champion_model = champion.model if champion is not None and champion.comparable else None
    champion_version = champion.version if champion_model is not None else None
    progress.step("trained_model", "release gates")
    results = evaluate_gates(
        model.pipeline,
        X_hold,
        pd.Series(y_bin),
        cfg.gates,
        cfg.fairness,
        champion=champion_model,
        champion_version=champion_version,
        sensitive=holdout[cfg.fairness.sensitive_column] if cfg.fairness.enabled else None,
        expected_schema=model.feature_columns,
        positive_label=1,
    )
    if champion is not None and not champion.comparable:
        # A champion built on other feature definitions cannot score this holdout: the no-regression gate says so
        # instead of comparing (a feature change is a deliberate, reviewed release).
        results = [
            replace(
                r,
                message=f"champion version {champion.version} was trained on feature version "
                f"{champion.feature_version}, this challenger on {feature_version}: not comparable on the same "
                "holdout",
                details={**r.details, "champion_version": champion.version, "comparable": False},
            )
            if r.gate == "no_regression"
            else r
            for r in results
        ]
    plots = (
        release_plots(
            model.pipeline,
            X_hold,
            y_bin,
            threshold=cfg.gates.decision_threshold,
            champion=champion_model,
            champion_version=champion_version,
        )
        if len(np.unique(y_bin)) == 2
        else {}
    )
    metrics = {k: v for k, v in model.holdout_metrics.items() if isinstance(v, int | float)}
    champion_metrics = None
    if champion_model is not None:
        champion_metrics = {
            k: v
            for k, v in evaluate(champion_model, X_hold, y_bin).items()
            if isinstance(v, int | float) and k != "n"
        }
    return Challenger(
        model=model,
        gates=results,
        metrics=metrics,
        profile=profile,
        plots=plots,
        holdout=X_hold,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
    )


def fit_with_profile(
    cfg: MlopsConfig, frame: pd.DataFrame, split: Split, numeric: list[str], categorical: list[str]
) -> tuple[TrainedModel, Profile]:
    """Fit on ``split``'s training window (``frame`` carries a ``__partition__`` column) and compute the reference
    profile of the training window's labeled rows (features, predictions, labels) for the drift checks."""
    from mlops_assets.monitoring.state import reference_profile
    from mlops_assets.training.pipeline import fit

    model = fit(cfg, frame, PARTITION, numeric, categorical, split=split)
    rows = frame[frame[PARTITION].isin(model.split.train) & frame[cfg.dataset.label_column].notna()]
    probabilities = model.pipeline.predict_proba(rows[model.feature_columns])[:, 1]
    return model, reference_profile(cfg, rows, numeric, categorical, probabilities)


def champion_for_comparison(registry: ModelRegistry, feature_version: str) -> ChampionForComparison | None:
    """The registry's champion, loaded (sha256 verified) when it was trained on ``feature_version``."""
    from mlops_assets.registry.model_registry import TAG_FEATURE_VERSION

    info = registry.champion()
    if info is None:
        return None
    theirs = info.tags.get(TAG_FEATURE_VERSION)
    model = registry.load(alias="champion").model if theirs == feature_version else None
    return ChampionForComparison(info.version, model, theirs)


def register_challenger(
    cfg: MlopsConfig,
    registry: ModelRegistry,
    data: TrainingData,
    challenger: Challenger,
    *,
    feature_version: str,
    run_id: str,
    champion: ChampionForComparison | None,
) -> TrainOutcome:
    """Register the challenger as a new MLflow version (alias ``challenger``) with its profile, split, gates and
    plots; record its gate results and model card."""
    from mlops_assets.monitoring import state as monitoring_state
    from mlops_assets.training.model_card import render_model_card

    model = challenger.model
    frame = data.frame
    train_keys = model.split.train
    registered = registry.register(
        model.pipeline,
        input_example=challenger.holdout.head(5)
        if len(challenger.holdout)
        else frame[model.feature_columns].head(5),
        metrics={f"holdout_{k}": v for k, v in challenger.metrics.items()}
        | {
            f"validation_{k}": v
            for k, v in model.metrics.get("validation", {}).items()
            if isinstance(v, int | float)
        },
        partitions=train_keys,
        feature_version=feature_version,
        dagster_run_id=run_id,
        tags={
            "mlops.holdout_window": f"{model.split.holdout[0]}..{model.split.holdout[-1]}",
            monitoring_state.TAG_DATA_VERSION: data.newest_partition,
            monitoring_state.TAG_TRAINED_AT: datetime.now(UTC).isoformat(),
        },
        json_artifacts={
            monitoring_state.PROFILE_ARTIFACT: challenger.profile.to_dict(),
            "split": model.split.to_dict(),
            "gates": [r.to_dict() for r in challenger.gates],
            "feature_columns": {"numeric": data.numeric, "categorical": data.categorical},
        },
        file_artifacts=challenger.plots,
    )
    registry.record_gate_results(registered.version, challenger.gates, run_id=run_id)
    card = render_model_card(
        model_name=cfg.model.name,
        version=registered.version,
        metrics={k: v for k, v in challenger.metrics.items() if k != "n"},
        champion_metrics=challenger.champion_metrics,
        champion_version=champion.version if champion else None,
        gate_results=challenger.gates,
        data_window=f"{train_keys[0]}..{train_keys[-1]}",
        partition_count=len(train_keys),
        feature_version=feature_version,
        estimator=cfg.model.estimator,
        params=dict(cfg.model.params),
        training_rows=model.n_train,
        holdout_rows=len(challenger.holdout),
        dagster_run_id=run_id,
    )
    registry.set_model_card(registered.version, card)
    return TrainOutcome(
        version=registered.version,
        mlflow_run_id=registered.run_id,
        sha256=registered.sha256,
        metrics=challenger.metrics,
        split=model.split.to_dict(),
        feature_version=feature_version,
        champion_version=champion.version if champion else None,
        gates=challenger.gates,
        model_card=card,
        training_data_version=content_version(frame[frame[PARTITION].isin(train_keys)]),
    )


def train_and_gate(
    cfg: MlopsConfig, store: OfflineStore, registry: ModelRegistry, *, run_id: str
) -> TrainOutcome:
    """Load the training data, train a challenger beside the champion, gate it and register it."""
    from mlops_assets.features import features_code_version

    feature_version = features_code_version(cfg)
    data = load_training_data(cfg, store)
    champion = champion_for_comparison(registry, feature_version)
    challenger = train_challenger(cfg, data, feature_version=feature_version, champion=champion)
    return register_challenger(
        cfg, registry, data, challenger, feature_version=feature_version, run_id=run_id, champion=champion
    )
