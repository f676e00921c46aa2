"""Alert sensors: the event log's check results and failed runs, fed to :mod:`mlops_assets.alerts`.

Thin on purpose: each sensor turns Dagster events into the plain rows of :mod:`mlops_assets.alerts.checks` and
calls it; routing, delivery, retries and one-alert-per-incident are the alerts package's. The check sensor reads
``ASSET_CHECK_EVALUATION`` events, so a failed non-blocking check (the drift check), which fails no run and so
reaches no run-failure sensor (dagster#29896), is alerted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.resources import MlopsProject

# Events read per tick: a backfill writes one check evaluation per check and run, not per partition.
BATCH = 500


def check_rows(records: Sequence[Any], prefix: list[str]) -> dict[str | None, list[dict[str, Any]]]:
    """The check evaluations of ``prefix``'s assets in ``records``, as plain rows grouped by run id."""
    by_run: dict[str | None, list[dict[str, Any]]] = {}
    for rec in records:
        event = rec.event_log_entry.dagster_event
        ev = event.asset_check_evaluation_data if event is not None else None
        if ev is None or list(ev.asset_key.path[: len(prefix)]) != prefix:
            continue
        md = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
        by_run.setdefault(rec.event_log_entry.run_id, []).append(
            {
                "asset": ev.asset_key.path[-1],
                "check": ev.check_name,
                "passed": bool(ev.passed),
                "blocking": bool(ev.blocking),
                "metadata": md,
            }
        )
    return by_run


def build_alert_sensors(cfg: MlopsConfig, prefix: list[str]) -> list[dg.SensorDefinition]:
    model = cfg.model.name

    @dg.sensor(
        name=f"{model}_check_alerts_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on failed data gates, release gates and the drift check (one per incident, resolved "
        "when the check passes again), read from the event log since the last tick.",
    )
    def check_alerts_sensor(context: dg.SensorEvaluationContext, project: MlopsProject):
        from mlops_assets.alerts.checks import alert_on_checks

        records = context.instance.get_event_records(
            dg.EventRecordsFilter(
                event_type=DagsterEventType.ASSET_CHECK_EVALUATION,
                after_cursor=int(context.cursor) if context.cursor else None,
            ),
            limit=BATCH,
            ascending=True,
        )
        if not records:
            return dg.SkipReason("no new check results")
        context.update_cursor(str(records[-1].storage_id))
        alerter = project.registry().alerter
        if alerter is None:
            return dg.SkipReason("alerts are not configured")
        sent = 0
        for run_id, rows in check_rows(records, prefix).items():
            run = context.instance.get_run_by_id(run_id) if run_id else None
            reason = run.tags.get(REASON_TAG) if run is not None else None
            records_ = alert_on_checks(alerter, model, rows, run_id, retrain_reason=reason)
            sent += sum(r.state in ("sent", "failed") for r in records_)
        return dg.SkipReason(f"{len(records)} check result(s) read, {sent} alert(s) sent")

    @dg.run_failure_sensor(
        name=f"{model}_run_failure_alert_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a run of this model's jobs fails (one incident per job).",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, project: MlopsProject):
        from mlops_assets.alerts.checks import run_failed_event

        job = context.dagster_run.job_name
        alerter = project.registry().alerter
        if not job.startswith(f"{model}_") or alerter is None:
            return
        alerter.notify(
            run_failed_event(model, job, context.dagster_run.run_id, context.failure_event.message)
        )

    return [check_alerts_sensor, run_failure_alert_sensor]
