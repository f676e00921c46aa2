"""The last-run sensors: when a run of the model's pipeline jobs (the whole chain, the ingest job, the retrain job)
ends, record its outcome in ``$MLOPS_HOME/<model>/last_run.json`` for ``status``, as ``mlops-assets run`` records
its own.

A run the daemon launched (the new-data sensor's ingest, a trigger's retrain) or one launched from the UI is thus
what ``status`` shows as the last run, a data gate that blocked it included. The outcome is read from the run's
events with :func:`mlops_assets.runner.read_events`, the function ``mlops-assets run`` reads its own with, so
both writers say the same of the same run. A run ``mlops-assets run`` executes carries its own run id in
:data:`RECORDED_BY_TAG` and is left to it (a daemon's sensors do not see such in-process runs anyway, unless they
monitor all code locations); a run that finished before the recorded one is not recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import (
    BACKFILL_ID_TAG,
    PARENT_RUN_ID_TAG,
    PARTITION_NAME_TAG,
    SCHEDULE_NAME_TAG,
    SENSOR_NAME_TAG,
)

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.ingestion import RANGE_END, RANGE_START
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.resources import MlopsProject

# Set by `mlops-assets run` to the id of the run it executes and records itself.
RECORDED_BY_TAG = "mlops/last_run_recorded_by"
# The events the outcome is read from (see mlops_assets.runner.read_events).
OUTCOME_EVENTS = {
    DagsterEventType.ASSET_CHECK_EVALUATION,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.ASSET_OBSERVATION,
    DagsterEventType.ASSET_MATERIALIZATION,
}


def trigger_of(tags: dict[str, str] | Any) -> str:
    """What launched a run, from its tags: ``sensor <name>``, ``schedule <name>``, ``backfill <id>``,
    ``re-execution of <run id>``, or ``manual`` (the UI, or ``dagster job launch``)."""
    if tags.get(SENSOR_NAME_TAG):
        return f"sensor {tags[SENSOR_NAME_TAG]}"
    if tags.get(SCHEDULE_NAME_TAG):
        return f"schedule {tags[SCHEDULE_NAME_TAG]}"
    if tags.get(BACKFILL_ID_TAG):
        return f"backfill {tags[BACKFILL_ID_TAG]}"
    if tags.get(PARENT_RUN_ID_TAG):
        return f"re-execution of {tags[PARENT_RUN_ID_TAG]}"
    return "manual"


def record_run(
    cfg: MlopsConfig,
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    home: Path,
    failure_message: str | None = None,
) -> str:
    """Record how ``run`` ended in ``home``'s last-run file, unless ``mlops-assets run`` records it or a later run
    is recorded already; returns what was done, in words (for the sensor's log)."""
    from mlops_assets.last_run import record_last_run
    from mlops_assets.runner import RunOutcome, read_events

    if run.tags.get(RECORDED_BY_TAG) == run.run_id:
        return f"run {run.run_id} is recorded by mlops-assets run"
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record is not None else None
    started = record.start_time if record is not None else None
    finished_at = datetime.fromtimestamp(ended, UTC) if ended else datetime.now(UTC)
    span = _partition_range(run.tags)
    outcome = RunOutcome(
        status="ok",
        run_id=run.run_id,
        partitions=0,
        seconds=(ended - started) if ended and started else 0.0,
        first_partition=span[0] if span else None,
        last_partition=span[1] if span else None,
    )
    events = [
        entry.dagster_event
        for entry in instance.all_logs(run.run_id, of_type=OUTCOME_EVENTS)
        if entry.dagster_event is not None
    ]
    read_events(
        outcome,
        events,
        success=run.status == dg.DagsterRunStatus.SUCCESS,
        failure_message=failure_message,
    )
    report = {
        "status": outcome.status,
        "run_id": run.run_id,
        "partitions": _count(cfg, instance, span),
        "seconds": round(outcome.seconds, 2),
        "error": outcome.error,
        "checks": outcome.checks,
        # As the report of `mlops-assets run` has it: the version this run registered, if any.
        "retrains": [{"version": outcome.trained_version}] if outcome.trained_version is not None else [],
        "unchanged_champion_version": outcome.unchanged_champion_version,
    }
    written = record_last_run(
        home,
        cfg.model.name,
        report,
        finished_at=finished_at,
        job=run.job_name,
        trigger=trigger_of(run.tags),
        reason=run.tags.get(REASON_TAG),
        partition_range=span,
    )
    if written is None:
        return f"run {run.run_id} ({outcome.status}) finished before the run recorded last: not recorded"
    return f"run {run.run_id} recorded as the last run: {outcome.status}"


def _partition_range(tags: Any) -> tuple[str, str] | None:
    """The partition range a run materialized, from its tags (single-run backfill or one partition)."""
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start and end:
        return start, end
    key = tags.get(PARTITION_NAME_TAG)
    return (key, key) if key else None


def _count(cfg: MlopsConfig, instance: dg.DagsterInstance, span: tuple[str, str] | None) -> int | None:
    """How many partitions the range spans, in the model's partitions (kept in time order); None without one."""
    from mlops_assets.defs.factory import period_partitions

    if span is None:
        return None
    name = period_partitions(cfg).name
    assert name is not None
    keys = instance.get_dynamic_partitions(name)
    if span[0] not in keys or span[1] not in keys:
        return None
    return keys.index(span[1]) - keys.index(span[0]) + 1


def build_last_run_sensors(
    cfg: MlopsConfig, jobs: list[UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """One sensor for the runs of ``jobs`` that succeeded, one for those that failed (a run-status sensor follows
    one status); both record the run for ``status``."""
    model = cfg.model.name

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=f"{model}_last_run_success_sensor",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records a run of this model's pipeline jobs that succeeded as the last run "
        "`mlops-assets status` shows.",
    )
    def last_run_success_sensor(context: dg.RunStatusSensorContext, project: MlopsProject):
        context.log.info(record_run(cfg, context.instance, context.dagster_run, project.storage.home))

    @dg.run_failure_sensor(
        name=f"{model}_last_run_failure_sensor",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records a failed run of this model's pipeline jobs (blocked by a gate, or failed) as the "
        "last run `mlops-assets status` shows.",
    )
    def last_run_failure_sensor(context: dg.RunFailureSensorContext, project: MlopsProject):
        message = context.failure_event.message if context.failure_event is not None else None
        context.log.info(
            record_run(cfg, context.instance, context.dagster_run, project.storage.home, message)
        )

    return [last_run_success_sensor, last_run_failure_sensor]
