"""The new-data sensor: a growing source gets new partitions and an ingestion run, with nobody touching it.

Thin wiring over :func:`mlops_assets.steps.arrivals.detect_arrivals`: the sensor adds the due partitions to the
dynamic partitions definition and requests one run over their range. Before any champion exists that run is the
whole chain (the first model is trained and gated); afterwards it is the data steps, whose drift check feeds the
retraining sensors (:mod:`mlops_assets.defs.retraining`), which decide on a retrain through ``decide_retrain`` and
its storm control.
"""

import json

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mlops_assets.config import MlopsConfig
from mlops_assets.data.sources import SourceError

# The run tags of a single-run backfill over a partition range (Dagster's own names).
RANGE_START = ASSET_PARTITION_RANGE_START_TAG
RANGE_END = ASSET_PARTITION_RANGE_END_TAG
ARRIVAL_TAG = "mlops/arrival"


def new_data_sensor_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_new_data_sensor"


def build_new_data_sensor(
    cfg: MlopsConfig,
    partitions_def: dg.DynamicPartitionsDefinition,
    run_job: UnresolvedAssetJobDefinition,
    ingest_job: UnresolvedAssetJobDefinition,
) -> dg.SensorDefinition:
    from mlops_assets.defs.factory import add_periods
    from mlops_assets.defs.model_assets import REASON_TAG

    @dg.sensor(
        name=new_data_sensor_name(cfg),
        jobs=[run_job, ingest_job],
        minimum_interval_seconds=cfg.ingestion.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"project"},
        description="Watches the source (new or rewritten files, new rows past the timestamp watermark), adds "
        "the new periods as partitions and ingests them: the whole chain before a champion exists, the data "
        "steps and the drift check afterwards.",
    )
    def new_data_sensor(context: dg.SensorEvaluationContext):
        from mlops_assets.data.source_state import recorded_state
        from mlops_assets.steps.arrivals import detect_arrivals

        project = context.resources.project
        previous = json.loads(context.cursor) if context.cursor else None
        try:
            recorded = recorded_state(project.storage.home, cfg.model.name) if previous is None else None
            arrivals = detect_arrivals(
                cfg, previous, recorded_fingerprint=recorded.fingerprint if recorded else None
            )
        except SourceError as err:
            # The cursor stays: what could not be read is looked at again next tick.
            return dg.SkipReason(f"the source cannot be read: {err}")
        cursor = json.dumps(arrivals.state, sort_keys=True)
        if not arrivals.keys:
            return dg.SensorResult(skip_reason=arrivals.reason, cursor=cursor)
        new = add_periods(context.instance, partitions_def, arrivals.keys)
        initial = project.registry().champion() is None
        job = run_job if initial else ingest_job
        tags = {
            RANGE_START: arrivals.keys[0],
            RANGE_END: arrivals.keys[-1],
            ARRIVAL_TAG: arrivals.reason[:200],
        }
        if initial:
            tags[REASON_TAG] = "initial"
        context.log.info(
            f"{arrivals.reason}: {len(arrivals.keys)} partition(s), {len(new)} new, via {job.name}"
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{arrivals.keys[0]}..{arrivals.keys[-1]}@{cursor_digest(cursor)}",
                    job_name=job.name,
                    tags=tags,
                )
            ],
            cursor=cursor,
        )

    return new_data_sensor


def cursor_digest(cursor: str) -> str:
    import hashlib

    return hashlib.sha256(cursor.encode()).hexdigest()[:12]
