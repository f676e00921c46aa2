"""Build one model's Dagster definitions from its configuration.

Asset keys are prefixed with the model name (``mlops_model/raw_data`` ...), so one project can hold several models
side by side; nothing here assumes there is only one.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from mlops_assets.config import MlopsConfig
from mlops_assets.storage import storage_from_env


def period_partitions(cfg: MlopsConfig) -> dg.DynamicPartitionsDefinition:
    """One partition per period of the data (``partitions.freq``), keyed like ``1998-09`` (see
    :mod:`mlops_assets.data.partitions`).

    Partitions are added as data arrives (by ingestion: ``mlops-assets run`` and the new-data sensor), not fixed
    when the definitions load: loading reads no data, and a growing source gets new partitions without a reload.
    """
    return dg.DynamicPartitionsDefinition(name=f"{cfg.model.name}_periods")


def add_periods(
    instance: dg.DagsterInstance, partitions_def: dg.DynamicPartitionsDefinition, keys: list[str]
) -> list[str]:
    """Add the partition keys not known yet, keeping every key in time order; returns those added.

    Dynamic partitions are ordered by insertion, and a partition range (a single-run backfill) is taken in that
    order: a period older than the newest known one (history arriving late) is inserted by re-adding the keys after
    it. Materializations are recorded by key, so nothing of their history is lost.
    """
    name = partitions_def.name
    assert name is not None  # period_partitions names it
    known = instance.get_dynamic_partitions(name)
    new = sorted(set(keys) - set(known))
    if not new:
        return []
    later = [k for k in known if k > new[0]]
    for key in later:
        instance.delete_dynamic_partition(name, key)
    instance.add_dynamic_partitions(name, sorted({*new, *later}))
    return new


# What `mlops-assets run` materializes: the main chain. model_performance follows the prediction service's feedback,
# not the data.
CHAIN = ("raw_data", "validated_data", "features", "trained_model", "deployed_model")


def run_job_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_run_job"


def run_job(cfg: MlopsConfig) -> UnresolvedAssetJobDefinition:
    """The job ``mlops-assets run`` executes, loaded in the UI too so a run can be re-executed there."""
    from mlops_assets.defs.shadow import without_shadow_check

    return dg.define_asset_job(
        run_job_name(cfg),
        selection=without_shadow_check(
            cfg, dg.AssetSelection.assets(*[dg.AssetKey([cfg.model.name, name]) for name in CHAIN])
        ),
        # Five steps in sequence over one range: a process per step would only import the stack five times.
        executor_def=dg.in_process_executor,
        description="The whole chain over a partition range: ingest, gate, features, train, gate, deploy (what "
        "`mlops-assets run` executes).",
    )


def ingest_job_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_ingest_job"


def ingest_job(cfg: MlopsConfig) -> UnresolvedAssetJobDefinition:
    """New partitions through the data steps (and the drift check): what the new-data sensor launches once a
    champion exists; the retraining triggers decide on a retrain afterwards."""
    return dg.define_asset_job(
        ingest_job_name(cfg),
        selection=[dg.AssetKey([cfg.model.name, name]) for name in CHAIN[:3]],
        executor_def=dg.in_process_executor,
        description="Ingest, validate and featurize a partition range; the drift check runs on the new features.",
    )


def build_model_defs(cfg: MlopsConfig, config_path: str | None = None) -> dg.Definitions:
    from mlops_assets.defs.alerting import build_alert_sensors
    from mlops_assets.defs.champion import build_champion_sensor
    from mlops_assets.defs.data_assets import build_data_assets
    from mlops_assets.defs.deployment_jobs import build_deployment_jobs
    from mlops_assets.defs.ingestion import build_new_data_sensor
    from mlops_assets.defs.last_run_sensor import build_last_run_sensors
    from mlops_assets.defs.model_assets import build_model_assets
    from mlops_assets.defs.performance_assets import build_performance_assets
    from mlops_assets.defs.resources import (
        HANDOFF_IO,
        PARTITION_IO,
        MlopsProject,
        PartitionedParquetIOManager,
        RunHandoffIOManager,
        mlflow_tracking,
    )
    from mlops_assets.defs.retraining import build_retraining_defs
    from mlops_assets.defs.shadow import build_shadow_defs

    prefix = [cfg.model.name]
    partitions_def = period_partitions(cfg)
    project = MlopsProject(config_path=config_path)
    assets = [
        *build_data_assets(cfg, partitions_def, prefix, storage_from_env().home),
        *build_model_assets(cfg, partitions_def, prefix),
        *build_performance_assets(cfg, partitions_def, prefix),
    ]
    retraining = build_retraining_defs(cfg, prefix)
    shadow = build_shadow_defs(cfg, prefix)
    whole, data = run_job(cfg), ingest_job(cfg)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*(retraining.asset_checks or []), *(shadow.asset_checks or [])],
        jobs=[
            whole,
            data,
            *(retraining.jobs or []),
            *(shadow.jobs or []),
            *build_deployment_jobs(cfg, prefix),
        ],
        sensors=[
            build_new_data_sensor(cfg, partitions_def, whole, data),
            build_champion_sensor(cfg),
            *(retraining.sensors or []),
            *(shadow.sensors or []),
            *build_alert_sensors(cfg, prefix),
            *build_last_run_sensors(cfg, [whole, data, *_retrain_jobs(retraining)]),
        ],
        resources={
            "project": project,
            PARTITION_IO: PartitionedParquetIOManager(project=project),
            HANDOFF_IO: RunHandoffIOManager(project=project),
            "mlflow": mlflow_tracking.configured({"experiment_name": f"mlops_assets/{cfg.model.name}"}),
        },
    )


def _retrain_jobs(retraining: dg.Definitions) -> list[UnresolvedAssetJobDefinition]:
    return [j for j in retraining.jobs or [] if isinstance(j, UnresolvedAssetJobDefinition)]
