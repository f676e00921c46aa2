"""Build one model's Dagster definitions from its configuration.

Asset keys are prefixed with the model name (``mlops_model/raw_data`` ...), so one project can hold several models
side by side; nothing here assumes there is only one.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.config import MlopsConfig
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


def build_model_defs(cfg: MlopsConfig, config_path: str | None = None) -> dg.Definitions:
    from mlops_assets.defs.data_assets import build_data_assets
    from mlops_assets.defs.deployment_jobs import build_deployment_jobs
    from mlops_assets.defs.model_assets import build_model_assets
    from mlops_assets.defs.monitoring import build_monitoring_defs
    from mlops_assets.defs.performance_assets import build_performance_assets
    from mlops_assets.defs.resources import (
        PARTITION_IO,
        MlopsProject,
        PartitionedParquetIOManager,
        mlflow_tracking,
    )

    prefix = [cfg.model.name]
    partitions_def = time_partitions(cfg)
    project = MlopsProject(config_path=config_path)
    assets = [
        *build_data_assets(cfg, partitions_def, prefix),
        *build_model_assets(cfg, partitions_def, prefix),
        *build_performance_assets(cfg, partitions_def, prefix),
    ]
    monitoring = build_monitoring_defs(cfg, prefix)
    return dg.Definitions(
        assets=assets,
        asset_checks=monitoring.asset_checks,
        jobs=[*monitoring.jobs, *build_deployment_jobs(cfg, prefix)],
        sensors=monitoring.sensors,
        resources={
            "project": project,
            PARTITION_IO: PartitionedParquetIOManager(project=project),
            "mlflow": mlflow_tracking.configured({"experiment_name": f"mlops_assets/{cfg.model.name}"}),
        },
    )
