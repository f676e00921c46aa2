"""What the retraining policy sees: per-partition monitoring results and the :class:`PolicyState` built from them.

Plain module (no Dagster). Three users share it so that they run the same code:

* the drift / performance asset check (``mlops_assets.defs.retraining``) calls :func:`assess_partition` on each
  new batch and appends the results to the :class:`MonitoringLog`;
* the sensors build a :class:`PolicyState` with :func:`policy_state` (champion and past retrains from the MLflow
  registry, drift and performance from the log, live metrics from the prediction log) and call
  :func:`~mlops_assets.monitoring.policy.decide_retrain` with the wall clock;
* ``mlops-assets replay`` calls :func:`assess_partition` on each partition and builds its ``PolicyState`` from its
  own simulated history, with a simulated clock.

The *data through* a model is the newest partition key its training could see (:func:`newest_partition`): new data is a new
partition. (Rewriting an old partition in place does not count as new data for storm control.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets.monitoring.drift import DriftReport, detect_drift
from mlops_assets.monitoring.performance import champion_metric
from mlops_assets.monitoring.policy import Decision, DriftObservation, PerformanceObservation, PolicyState
from mlops_assets.monitoring.profile import Profile, build_profile
from mlops_assets.registry.tags import TAG_TRAINED_AT

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from mlops_assets.config import MlopsConfig
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.storage import Storage

# Extra columns of the reference profile, beside the model's feature columns.
PREDICTION_COLUMN = "__prediction__"
PROFILE_ARTIFACT = "reference_profile"  # <name>.json with the model version's MLflow run
TAG_DATA_THROUGH = "mlops.data_through"  # registry tag: the newest partition the version's training could see


def newest_partition(partition_keys: Iterable[str]) -> str | None:
    """The newest partition a retrain on these partitions would see (``None`` for no data)."""
    keys = list(partition_keys)
    return max(keys) if keys else None


def feature_kinds(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) split of the model's feature columns, as training makes it."""
    numeric = [
        c
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    return numeric, [c for c in columns if c not in numeric]


def reference_profile(
    cfg: MlopsConfig,
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    probabilities: np.ndarray | None = None,
) -> Profile:
    """The profile stored with a model version: its training rows' features, the model's predicted probability
    (for prediction drift) and the label (for label drift), per season, blocks of one partition."""
    label = cfg.dataset.label_column
    ref = frame
    num, cat = list(numeric), list(categorical)
    if probabilities is not None:
        ref = ref.assign(**{PREDICTION_COLUMN: np.asarray(probabilities, dtype=float)})
        num.append(PREDICTION_COLUMN)
    if label in frame.columns and frame[label].notna().any():
        cat.append(label)
    d = cfg.drift
    return build_profile(
        ref,
        num,
        cat,
        bins=d.bins,
        timestamp_column=cfg.dataset.timestamp_column,
        seasonality=d.seasonality,
        max_categories=d.max_categories,
        block=cfg.partitions.freq,
        min_season_rows=d.min_season_rows,
    )


@dataclass(frozen=True)
class PartitionAssessment:
    """One partition against the champion: covariate drift (what the drift trigger acts on), prediction drift,
    label drift (when the partition has labels) and the champion's metric on its labeled rows."""

    partition: str
    champion_version: str | None
    covariate: DriftReport
    prediction: DriftReport | None
    label: DriftReport | None
    metric: float | None
    metric_name: str
    n_rows: int
    n_labeled: int

    @property
    def drifted(self) -> bool:
        return self.covariate.drifted

    @property
    def strong(self) -> bool:
        return self.covariate.strong

    def drift_observation(self, at: datetime | None = None) -> DriftObservation:
        return DriftObservation(self.partition, self.drifted, self.strong, self.champion_version, at)

    def performance_observation(self) -> PerformanceObservation:
        return PerformanceObservation(self.partition, self.metric, self.n_labeled, self.champion_version)


def assess_partition(
    cfg: MlopsConfig,
    partition: str,
    frame: pd.DataFrame,
    profile: Profile,
    *,
    model: Any = None,
    feature_columns: Sequence[str] | None = None,
    champion_version: str | None = None,
    probabilities: np.ndarray | None = None,
) -> PartitionAssessment:
    """Drift of ``frame`` (one partition of the offline store: features, timestamp, label) against the champion's
    ``profile``, and the champion's metric on it. ``model`` (the champion pipeline) gives prediction drift and the
    metric; pass ``probabilities`` instead when they are already computed."""
    if len(frame) == 0:
        raise ValueError(f"partition {partition!r} has no rows to assess")
    label = cfg.dataset.label_column
    features = [c for c in profile.columns if c not in (PREDICTION_COLUMN, label)]
    covariate = detect_drift(profile, frame, cfg.drift, columns=features)
    if probabilities is None and model is not None:
        cols = list(feature_columns) if feature_columns is not None else features
        probabilities = model.predict_proba(frame[cols])[:, 1]
    prediction = None
    if probabilities is not None and PREDICTION_COLUMN in profile.columns:
        scored = frame[[profile.timestamp_column]] if profile.timestamp_column else frame.iloc[:, :0]
        prediction = detect_drift(
            profile,
            scored.assign(**{PREDICTION_COLUMN: probabilities}),
            cfg.drift,
            columns=[PREDICTION_COLUMN],
        )
    labeled = frame[label].notna() if label in frame.columns else pd.Series(False, index=frame.index)
    label_report = None
    if label in profile.columns and labeled.any():
        label_report = detect_drift(profile, frame[labeled], cfg.drift, columns=[label])
    metric = None
    if probabilities is not None and labeled.any():
        mask = labeled.to_numpy()
        metric = champion_metric(
            frame.loc[labeled, label].to_numpy(),
            np.asarray(probabilities)[mask],
            positive_label=cfg.dataset.positive_label,
            metric=cfg.retraining.performance_metric,
        )
    return PartitionAssessment(
        partition=partition,
        champion_version=champion_version,
        covariate=covariate,
        prediction=prediction,
        label=label_report,
        metric=metric,
        metric_name=cfg.retraining.performance_metric,
        n_rows=len(frame),
        n_labeled=int(labeled.sum()),
    )


# ----------------------------------------------------------------------------------------------------------------
# The monitoring log: what the checks measured, for the sensors


@dataclass(frozen=True)
class LogEntry:
    """One assessed partition as the sensors read it back."""

    seq: int
    partition: str
    champion_version: str | None
    drifted: bool
    strong: bool
    metric: float | None
    n_labeled: int
    checked_at: str
    drifted_features: list[str] = field(default_factory=list)

    def drift_observation(self) -> DriftObservation:
        return DriftObservation(
            self.partition,
            self.drifted,
            self.strong,
            self.champion_version,
            datetime.fromisoformat(self.checked_at),
        )

    def performance_observation(self) -> PerformanceObservation:
        return PerformanceObservation(self.partition, self.metric, self.n_labeled, self.champion_version)


class MonitoringLog:
    """Append-only JSON lines under ``$MLOPS_HOME/<model>/monitoring/log.jsonl``: one line per assessed partition.

    ``seq`` is the line number, so a sensor cursor is simply the number of lines it has seen. One write per
    line (``O_APPEND``), so concurrent check steps do not interleave lines.
    """

    def __init__(self, home: str | os.PathLike[str], model_name: str):
        self.path = Path(home) / model_name / "monitoring" / "log.jsonl"

    @classmethod
    def from_storage(cls, model_name: str, storage: Storage) -> MonitoringLog:
        return cls(storage.home, model_name)

    def append(self, assessments: Sequence[PartitionAssessment], at: datetime) -> None:
        if not assessments:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps(
                {
                    "partition": a.partition,
                    "champion_version": a.champion_version,
                    "drifted": a.drifted,
                    "strong": a.strong,
                    "metric": a.metric,
                    "n_labeled": a.n_labeled,
                    "checked_at": at.isoformat(),
                    "drifted_features": a.covariate.drifted_features,
                },
                allow_nan=False,
            )
            + "\n"
            for a in assessments
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)

    def entries(self, start: int = 0) -> list[LogEntry]:
        """Lines from ``start`` (0-based line number) on."""
        if not self.path.exists():
            return []
        out = []
        with self.path.open() as f:
            for i, line in enumerate(f):
                if i < start or not line.strip():
                    continue
                out.append(LogEntry(seq=i, **json.loads(line)))
        return out

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open() as f:
            return sum(1 for line in f if line.strip())


def latest_per_partition(entries: Iterable[LogEntry], champion_version: str | None) -> list[LogEntry]:
    """For the live champion: the newest entry of each partition, in partition (time) order."""
    newest: dict[str, LogEntry] = {}
    for e in entries:
        if e.champion_version == champion_version:
            newest[e.partition] = e
    return [newest[k] for k in sorted(newest)]


# ----------------------------------------------------------------------------------------------------------------
# PolicyState from the registry and the logs


@dataclass(frozen=True)
class RegistryFacts:
    """What the registry says about the champion and the retrains so far."""

    champion_version: str | None
    champion_trained_at: datetime | None
    champion_data_through: str | None
    champion_metric: float | None
    retrain_times: list[datetime]
    failed_challenger_data_through: str | None
    run_ids: list[str] = field(default_factory=list)  # Dagster runs that registered a version

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["champion_trained_at"] = self.champion_trained_at.isoformat() if self.champion_trained_at else None
        d["retrain_times"] = [t.isoformat() for t in self.retrain_times]
        return d


def _ms(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts / 1000, UTC) if ts else None


def registry_facts(registry: ModelRegistry, metric: str = "roc_auc") -> RegistryFacts:
    """Champion, its training time and the newest partition it saw, its holdout ``metric``, every version's training time
    (a retrain, successful or not), and the newest partition of the newest challenger that failed its gates."""
    from mlops_assets.registry.model_registry import TAG_DAGSTER_RUN_ID

    versions = sorted(
        registry.client.search_model_versions(f"name='{registry.model_name}'"), key=lambda mv: int(mv.version)
    )
    champion = registry.champion()
    retrain_times = [t for t in (_trained_at(mv) for mv in versions) if t is not None]
    champ_mv = next((mv for mv in versions if champion and str(mv.version) == champion.version), None)
    failed = None
    for mv in reversed(versions):
        if champion is not None and int(mv.version) <= int(champion.version):
            break
        record = registry.latest_gate_results(mv.version)
        if record is not None and not all(r.get("passed") for r in record.results):
            failed = (mv.tags or {}).get(TAG_DATA_THROUGH)
            break
    return RegistryFacts(
        champion_version=champion.version if champion else None,
        champion_trained_at=_trained_at(champ_mv) if champ_mv is not None else None,
        champion_data_through=(champ_mv.tags or {}).get(TAG_DATA_THROUGH) if champ_mv is not None else None,
        champion_metric=champion.metrics.get(f"holdout_{metric}") if champion else None,
        retrain_times=retrain_times,
        failed_challenger_data_through=failed,
        run_ids=[r for r in ((mv.tags or {}).get(TAG_DAGSTER_RUN_ID) for mv in versions) if r],
    )


def _trained_at(mv: ModelVersion) -> datetime | None:
    tag = (mv.tags or {}).get(TAG_TRAINED_AT)
    return datetime.fromisoformat(tag) if tag else _ms(mv.creation_timestamp)


def live_observations(
    cfg: MlopsConfig, champion_version: str | None, log_url: str
) -> list[PerformanceObservation]:
    """The champion's metric per partition on the live prediction log's labeled predictions (the serving
    feedback loop), as policy observations. Empty without a champion or labeled predictions."""
    if champion_version is None:
        return []
    from mlops_assets.monitoring.performance_log import live_performance  # imports the serving log schema

    metric = cfg.retraining.performance_metric
    out = []
    for key, m in live_performance(cfg, log_url, model_version=champion_version).items():
        if m["n"]:
            out.append(PerformanceObservation(key, m.get(metric), int(m["n"]), champion_version))
    return out


def merge_performance(*sources: Sequence[PerformanceObservation]) -> list[PerformanceObservation]:
    """Observations of several sources in partition order; for one partition the one with more labeled rows."""
    best: dict[tuple[str, str | None], PerformanceObservation] = {}
    for src in sources:
        for o in src:
            k = (o.partition, o.champion_version)
            if k not in best or o.n_rows > best[k].n_rows:
                best[k] = o
    return [best[k] for k in sorted(best, key=lambda k: k[0])]


def policy_state(
    facts: RegistryFacts,
    log_entries: Iterable[LogEntry],
    *,
    latest_partition: str | None,
    live: Sequence[PerformanceObservation] = (),
    extra_retrain_times: Sequence[datetime] = (),
    manual_request: str | None = None,
) -> PolicyState:
    """The :class:`PolicyState` the sensors hand to ``decide_retrain``. ``extra_retrain_times``: retrains
    requested but not registered yet (runs in flight), so storm control sees them."""
    entries = latest_per_partition(log_entries, facts.champion_version)
    return PolicyState(
        champion_version=facts.champion_version,
        champion_trained_at=facts.champion_trained_at,
        champion_data_through=facts.champion_data_through,
        champion_metric=facts.champion_metric,
        latest_partition=latest_partition,
        drift_history=[e.drift_observation() for e in entries],
        performance=merge_performance([e.performance_observation() for e in entries], live),
        retrain_times=sorted([*facts.retrain_times, *extra_retrain_times]),
        failed_challenger_data_through=facts.failed_challenger_data_through,
        manual_request=manual_request,
    )


def current_decision(
    cfg: MlopsConfig,
    now: datetime,
    *,
    storage: Storage,
    registry: ModelRegistry,
    extra_retrain_times: Sequence[datetime] = (),
    manual_request: str | None = None,
) -> tuple[PolicyState, Decision]:
    """``(state, decision)`` as the sensors see it right now: the registry, the monitoring log, the offline
    store's newest partition and the live prediction log. (Also what ``mlops-assets status`` can show as "what
    the triggers would request".) ``registry`` is ``cfg``'s model's registry on ``storage``."""
    from mlops_assets.features.stores import offline_store
    from mlops_assets.monitoring.policy import decide_retrain

    facts = registry_facts(registry, cfg.retraining.performance_metric)
    latest = newest_partition(offline_store(cfg, storage).partitions())
    state = policy_state(
        facts,
        MonitoringLog.from_storage(cfg.model.name, storage).entries(),
        latest_partition=latest,
        live=live_observations(cfg, facts.champion_version, storage.prediction_log_url),
        extra_retrain_times=extra_retrain_times,
        manual_request=manual_request,
    )
    return state, decide_retrain(state, now, cfg.retraining)
