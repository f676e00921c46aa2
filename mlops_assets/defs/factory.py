"""Build one model's Dagster definitions from its configuration.

Asset keys are prefixed with the model name (``mlops_model/raw_data`` ...), so one project can hold several models
side by side; nothing here assumes there is only one.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import Stores
from mlops_assets.data.partitions import frequency, period_end, period_start
from mlops_assets.data.source_state import known_range
from mlops_assets.settings import storage_from_env


def time_partitions(cfg: MlopsConfig) -> dg.TimeWindowPartitionsDefinition:
    """Partitions over the data's own range: first to last timestamp, the last one possibly partial.

    The range is what ingestion last recorded (before the first ingestion, the source's cheapest probe): loading
    the definitions reads no data.
    """
    rng = known_range(cfg, storage_from_env().home)
    f = frequency(cfg.partitions.freq)
    start = period_start(rng.start, cfg.partitions.freq)
    end = period_end(period_start(rng.end, cfg.partitions.freq), cfg.partitions.freq)
    return dg.TimeWindowPartitionsDefinition(
        start=start.to_pydatetime(),
        end=end.to_pydatetime(),
        cron_schedule=f.cron,
        fmt=f.fmt,
        timezone="UTC",
    )


# What `mlops-assets run` materializes: the main chain. model_performance follows the prediction service's feedback,
# not the data.
CHAIN = ("raw_data", "validated_data", "features", "trained_model", "deployed_model")


def run_job_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_run_job"


def run_job(cfg: MlopsConfig) -> dg.UnresolvedAssetJobDefinition:
    """The job ``mlops-assets run`` executes, loaded in the UI too so a run can be re-executed there."""
    return dg.define_asset_job(
        run_job_name(cfg),
        selection=[dg.AssetKey([cfg.model.name, name]) for name in CHAIN],
        # Five steps in sequence over one range: a process per step would only import the stack five times.
        executor_def=dg.in_process_executor,
        description="The whole chain over a partition range: ingest, gate, features, train, gate, deploy (what "
        "`mlops-assets run` executes).",
    )


def build_model_defs(cfg: MlopsConfig, config_path: str | None = None) -> dg.Definitions:
    from mlops_assets.defs.data_assets import build_data_assets
    from mlops_assets.defs.deployment_jobs import build_deployment_jobs
    from mlops_assets.defs.model_assets import build_model_assets
    from mlops_assets.defs.performance_assets import build_performance_assets
    from mlops_assets.defs.resources import (
        PARTITION_IO,
        MlopsProject,
        PartitionedParquetIOManager,
        mlflow_tracking,
    )
    from mlops_assets.defs.retraining import build_retraining_defs

    prefix = [cfg.model.name]
    partitions_def = time_partitions(cfg)
    project = MlopsProject(config_path=config_path)
    assets = [
        *build_data_assets(cfg, partitions_def, prefix, Stores.at(storage_from_env().home, cfg.model.name)),
        *build_model_assets(cfg, partitions_def, prefix),
        *build_performance_assets(cfg, partitions_def, prefix),
    ]
    retraining = build_retraining_defs(cfg, prefix)
    return dg.Definitions(
        assets=assets,
        asset_checks=retraining.asset_checks,
        jobs=[run_job(cfg), *retraining.jobs, *build_deployment_jobs(cfg, prefix)],
        sensors=retraining.sensors,
        resources={
            "project": project,
            PARTITION_IO: PartitionedParquetIOManager(project=project),
            "mlflow": mlflow_tracking.configured({"experiment_name": f"mlops_assets/{cfg.model.name}"}),
        },
    )
