"""Assess new feature partitions against the champion's reference profile, and log what was found.

The same :func:`~mlops_assets.monitoring.state.assess_partition` the replay calls per simulated partition; here it
runs over the stored partitions of a range that are newer than the champion's training data, one partition in
memory at a time, and appends to the monitoring log the retraining sensors read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.monitoring.state import PartitionAssessment
    from mlops_assets.registry.model_registry import ModelRegistry


@dataclass
class DriftOutcome:
    """``skipped`` says why nothing was assessed (no champion, no profile, no new partition); otherwise the
    assessments, the partition shown in detail and its plot."""

    champion_version: str | None = None
    skipped: str | None = None
    assessments: list[PartitionAssessment] = field(default_factory=list)
    reference_window: str | None = None
    focus: PartitionAssessment | None = None
    plot_path: Path | None = None

    @property
    def drifted(self) -> list[str]:
        return [a.partition for a in self.assessments if a.drifted]

    @property
    def strong(self) -> list[str]:
        return [a.partition for a in self.assessments if a.strong]

    def per_feature(self) -> list[dict[str, Any]]:
        """The focus partition's per-feature table."""
        if self.focus is None:
            return []
        return [
            {
                "column": f.column,
                "test": f.test,
                "statistic": round(f.statistic, 6),
                "p_value": f.p_value,
                "p_value_adjusted": f.p_value_adjusted,
                "distance_name": f.distance_name,
                "distance": round(f.distance, 6),
                "threshold": f.threshold,
                "drifted": f.drifted,
                "strong": f.strong,
                "null_rate_reference": round(f.null_rate_reference, 6),
                "null_rate_current": round(f.null_rate_current, 6),
            }
            for f in self.focus.covariate.features
        ]


def assess_drift(
    cfg: MlopsConfig,
    registry: ModelRegistry,
    storage: Storage,
    partition_range: tuple[str, str] | None,
) -> DriftOutcome:
    """Assess the stored feature partitions in ``partition_range`` (all when None) that are newer than the
    champion's training data; append the assessments to the monitoring log and draw the focus partition."""
    from mlflow.exceptions import MlflowException

    from mlops_assets.features.stores import offline_store
    from mlops_assets.monitoring.drift import drift_plot
    from mlops_assets.monitoring.profile import Profile
    from mlops_assets.monitoring.state import (
        PROFILE_ARTIFACT,
        TAG_DATA_THROUGH,
        MonitoringLog,
        assess_partition,
    )
    from mlops_assets.registry.errors import UnknownVersionError

    champion = registry.champion()
    if champion is None:
        return DriftOutcome(skipped="no champion yet to compare with")
    try:
        profile = Profile.from_dict(registry.load_json(champion.version, PROFILE_ARTIFACT))
    except (UnknownVersionError, MlflowException, OSError) as err:
        return DriftOutcome(
            champion.version, skipped=f"champion version {champion.version} has no reference profile ({err})"
        )
    seen = champion.tags.get(TAG_DATA_THROUGH) or ""
    offline = offline_store(cfg, storage)
    stored = offline.partitions()
    rng = partition_range
    keys = [k for k in stored if (rng is None or rng[0] <= k <= rng[1]) and k > seen]
    if not keys:
        return DriftOutcome(
            champion.version,
            skipped=f"no stored partition of this run ({rng[0] + '..' + rng[1] if rng else 'all'}) is newer "
            f"than the champion's training data (version {champion.version}, data up to {seen or 'unknown'}; "
            f"stored {stored[:1]}..{stored[-1:]})",
        )
    loaded = registry.load(champion.version)
    columns = registry.load_json(champion.version, "feature_columns")
    feature_columns = [*columns["numeric"], *columns["categorical"]]
    assessments = []
    for key in keys:
        frame = offline.read([key])
        if len(frame) == 0:
            continue
        assessments.append(
            assess_partition(
                cfg,
                key,
                frame,
                profile,
                model=loaded.model,
                feature_columns=feature_columns,
                champion_version=champion.version,
            )
        )
    if not assessments:
        return DriftOutcome(champion.version, skipped="the run's new partitions hold no rows")
    MonitoringLog.from_storage(cfg.model.name, storage).append(assessments, datetime.now(UTC))
    # Details (per-feature table, plot) for the newest drifted partition, else the newest one.
    focus = next((a for a in reversed(assessments) if a.drifted), assessments[-1])
    plot_dir = storage.home / cfg.model.name / "monitoring" / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plot_path = plot_dir / f"{focus.partition}_champion_v{champion.version}.png"
    plot_path.write_bytes(drift_plot(profile, offline.read([focus.partition]), focus.covariate, cfg.drift))
    return DriftOutcome(
        champion_version=champion.version,
        assessments=assessments,
        reference_window=f"{profile.start} .. {profile.end}",
        focus=focus,
        plot_path=plot_path,
    )
