"""The champion as Dagster records it: a champion move made outside a run of ``deployed_model`` (``mlops-assets
rollback``, the rollback job, an alias moved by hand in MLflow) is written to the instance as a materialization
of ``deployed_model``, so the UI shows the champion that MLflow and the service have.

``deployed_model`` is the ``champion`` alias; its value is nothing a downstream asset loads (``model_performance``
only depends on it), so a materialization reported without a run describes it fully.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.config import MlopsConfig

if TYPE_CHECKING:
    from mlops_assets.registry.history import Deployment
    from mlops_assets.registry.model_registry import ModelRegistry

# The metadata key every materialization of deployed_model carries (runs of the asset and reported moves alike).
CHAMPION_KEY = "champion_version"
RECORDED_BY_KEY = "recorded_by"


def deployed_key(model_name: str) -> dg.AssetKey:
    return dg.AssetKey([model_name, "deployed_model"])


def champion_materialization(deployment: Deployment, *, recorded_by: str) -> dg.AssetMaterialization:
    """``deployment`` (a champion move) as a materialization of its model's ``deployed_model``."""
    return dg.AssetMaterialization(
        asset_key=deployed_key(deployment.model_name),
        description=f"champion moved to version {deployment.version} ({deployment.reason})",
        metadata={
            CHAMPION_KEY: deployment.version,
            "reason": deployment.reason,
            "previous": str(deployment.previous_version),
            "deployed_at": deployment.deployed_at,
            RECORDED_BY_KEY: recorded_by,
        },
    )


def record_champion(instance: dg.DagsterInstance, deployment: Deployment, *, recorded_by: str) -> None:
    """Write ``deployment`` to ``instance`` as a runless materialization of ``deployed_model``."""
    instance.report_runless_asset_event(champion_materialization(deployment, recorded_by=recorded_by))


def recorded_champion(instance: dg.DagsterInstance, model_name: str) -> str | None:
    """The champion version of the latest ``deployed_model`` materialization in ``instance`` (None without one)."""
    event = instance.get_latest_materialization_event(deployed_key(model_name))
    mat = event.asset_materialization if event is not None else None
    if mat is None or CHAMPION_KEY not in mat.metadata:
        return None
    value = mat.metadata[CHAMPION_KEY]
    return str(value.value if isinstance(value, dg.MetadataValue) else value)


# Reason recorded for a champion that moved with no entry in the deployment history (an alias set in MLflow).
OUTSIDE_REASON = "alias moved outside mlops_assets"


def unrecorded_move(
    instance: dg.DagsterInstance, registry: ModelRegistry, *, now: str | None = None
) -> Deployment | None:
    """The champion move the registry has and ``instance`` does not, or None when both name the same champion.

    The move is the deployment history's newest entry when it names the champion (a rollback or promotion whose
    recording was lost), else a move by hand (``OUTSIDE_REASON``). A promotion by a Dagster run that has not
    finished is left to that run, which records it as it materializes ``deployed_model``."""
    from mlops_assets.registry.history import Deployment
    from mlops_assets.registry.model_registry import CHAMPION

    current = registry.aliases().get(CHAMPION)
    recorded = recorded_champion(instance, registry.model_name)
    if current is None or current == recorded:
        return None
    newest = registry.history(limit=1)
    if newest and newest[-1].version == current:
        run = instance.get_run_by_id(newest[-1].run_id) if newest[-1].run_id else None
        if run is not None and not run.is_finished:
            return None
        return newest[-1]
    return Deployment(
        model_name=registry.model_name,
        version=current,
        previous_version=recorded,
        deployed_at=now or datetime.now(UTC).isoformat(),
        reason=OUTSIDE_REASON,
        run_id=None,
    )


def champion_sensor_name(model_name: str) -> str:
    return f"{model_name}_champion_sensor"


def build_champion_sensor(cfg: MlopsConfig) -> dg.SensorDefinition:
    """Records in Dagster a champion that moved outside a run of ``deployed_model`` (an alias set by hand in the
    MLflow UI, a rollback whose recording was lost), so the asset shows the champion MLflow serves."""

    @dg.sensor(
        name=champion_sensor_name(cfg.model.name),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"project"},
        description="Compares MLflow's 'champion' alias with the champion deployed_model last recorded; when "
        "they differ (an alias moved by hand, a rollback made elsewhere) it records the move as a materialization "
        "of deployed_model.",
    )
    def champion_sensor(context: dg.SensorEvaluationContext):
        from mlops_assets.registry.model_registry import ModelRegistry

        project = context.resources.project
        # Aliases read straight from the tracking database where it allows it: no MLflow import per tick.
        registry = ModelRegistry.from_config(cfg, project.storage, light=True)
        move = unrecorded_move(context.instance, registry)
        if move is None:
            return dg.SkipReason("deployed_model already names MLflow's champion")
        context.log.info(f"champion version {move.version} recorded ({move.reason})")
        return dg.SensorResult(
            asset_events=[champion_materialization(move, recorded_by=champion_sensor_name(cfg.model.name))]
        )

    return champion_sensor
