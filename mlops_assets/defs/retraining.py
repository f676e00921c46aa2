"""Retraining triggers: the drift check on new feature batches, the retrain job, and the drift,
performance and freshness sensors.

Thin wiring over :mod:`mlops_assets.steps.drift` and :mod:`mlops_assets.monitoring`: the check calls
:func:`~mlops_assets.steps.drift.assess_drift` (over :func:`~mlops_assets.monitoring.state.assess_partition`, the
function the replay uses), which appends to the monitoring log; every sensor builds the same
``PolicyState`` with :func:`~mlops_assets.monitoring.state.current_decision` and acts only when
:func:`~mlops_assets.monitoring.policy.decide_retrain` names its own reason, so two sensors never request the same
retrain. Storm control (cooldown, cap, failed challenger, no new data) is the policy's; on top, a sensor never
requests a retrain while one is in flight, and its run key (reason, champion, newest partition) makes a repeated
request a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.tags import PARTITION_NAME_TAG

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.ingestion import RANGE_END, RANGE_START
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.run_liveness import live_runs
from mlops_assets.images import png_markdown
from mlops_assets.monitoring.replay import DRIFT_CHECK

DECISION_TAG = "mlops/decision"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def retrain_job_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_retrain_job"


def sensor_name(cfg: MlopsConfig, trigger: str) -> str:
    return f"{cfg.model.name}_{trigger}_retrain_sensor"


def _run_partitions(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """The partition range a run materialized, from its tags (single-run backfill or one partition)."""
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start and end:
        return start, end
    key = tags.get(PARTITION_NAME_TAG)
    return (key, key) if key else None


def build_retraining_defs(cfg: MlopsConfig, prefix: list[str]) -> dg.Definitions:
    """The drift check on ``features``, ``<model>_retrain_job`` and the three trigger sensors."""
    from mlops_assets.defs.shadow import without_shadow_check

    features_key = dg.AssetKey([*prefix, "features"])
    trained_key = dg.AssetKey([*prefix, "trained_model"])
    deployed_key = dg.AssetKey([*prefix, "deployed_model"])

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                DRIFT_CHECK,
                asset=features_key,
                blocking=False,
                description="The run's new feature partitions (newer than the champion's training data) against "
                "the champion's reference profile: covariate drift per feature (KS / chi-squared, corrected "
                "for the number of features, with an effect-size floor), prediction drift and label drift. "
                "Fails with severity WARN when a partition's features drifted. Skipped (no result) when there "
                "is no champion, no reference profile or no new partition.",
            )
        ],
        can_subset=True,  # a skipped check yields nothing rather than a pass
        required_resource_keys={"project"},
        name=f"{prefix[-1]}_{DRIFT_CHECK}",
    )
    def features_drift_check(context):
        yield from _drift_check(context, cfg, features_key)

    retrain_job = dg.define_asset_job(
        retrain_job_name(cfg),
        selection=without_shadow_check(cfg, dg.AssetSelection.assets(trained_key, deployed_key)),
        tags={REASON_TAG: "manual"},
        description="Retrain on the offline store, gate, promote. Launched from the UI it is a manual retrain; "
        "the trigger sensors launch it with their own reason tag.",
        # Two steps in sequence, one model in memory: a process per step would only import the stack twice.
        executor_def=dg.in_process_executor,
    )

    def make_sensor(trigger: str, interval: int, description: str):
        @dg.sensor(
            name=sensor_name(cfg, trigger),
            job=retrain_job,
            minimum_interval_seconds=interval,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=description,
            required_resource_keys={"project"},
        )
        def _sensor(context):
            return _evaluate(context, cfg, trigger, retrain_job.name)

        return _sensor

    sensors = [
        make_sensor(
            "drift",
            cfg.retraining.sensor_interval_seconds,
            "Requests a retrain when the drift check's results for the live champion satisfy the drift policy "
            "(persistence over consecutive partitions, or one strong signal). Evaluates when new drift results "
            "arrive (cursor: monitoring log lines seen).",
        ),
        make_sensor(
            "performance",
            cfg.retraining.performance_interval_seconds,
            "Requests a retrain when the champion's metric on newly labeled data (new partitions of the offline "
            "store and the live prediction log) falls below the configured threshold or drop. Evaluates when "
            "new results or new labels arrive.",
        ),
        make_sensor(
            "freshness",
            cfg.retraining.freshness_interval_seconds,
            "Requests a retrain when the champion is older than retraining.max_model_age_days.",
        ),
    ]
    return dg.Definitions(asset_checks=[features_drift_check], jobs=[retrain_job], sensors=sensors)


# ----------------------------------------------------------------------------------------------------------------
# The check


def _drift_check(context: dg.AssetCheckExecutionContext, cfg: MlopsConfig, features_key: dg.AssetKey):
    from mlops_assets.steps.drift import assess_drift

    project = context.resources.project
    outcome = assess_drift(cfg, project.registry(), project.storage, _run_partitions(context.run.tags))
    if outcome.skipped:
        context.log.info(f"{DRIFT_CHECK} skipped: {outcome.skipped}")
        return
    assert outcome.focus is not None and outcome.plot_path is not None
    assessments, drifted, focus = outcome.assessments, outcome.drifted, outcome.focus
    per_feature = outcome.per_feature()

    def one(report):
        if report is None:
            return None
        f = report.features[0]
        return {
            "drifted": f.drifted,
            "test": f.test,
            "statistic": round(f.statistic, 6),
            "p_value_adjusted": f.p_value_adjusted,
            "distance_name": f.distance_name,
            "distance": round(f.distance, 6),
            "threshold": f.threshold,
        }

    md = {
        "champion_version": outcome.champion_version,
        "reference_window": outcome.reference_window,
        "partitions_checked": len(assessments),
        "drifted_partitions": dg.MetadataValue.json(drifted),
        "strong_signal_partitions": dg.MetadataValue.json(outcome.strong),
        "partition": focus.partition,
        "features": dg.MetadataValue.md(_table(per_feature)),
        "per_feature": dg.MetadataValue.json(per_feature),
        "drifted_features": dg.MetadataValue.json(focus.covariate.drifted_features),
        "prediction_drift": dg.MetadataValue.json(
            {a.partition: one(a.prediction) for a in assessments if a.prediction is not None}
        ),
        "label_drift": dg.MetadataValue.json(
            {a.partition: one(a.label) for a in assessments if a.label is not None}
        ),
        f"champion_{cfg.retraining.performance_metric}": dg.MetadataValue.json(
            {a.partition: a.metric for a in assessments}
        ),
        "alpha": focus.covariate.alpha,
        "correction": focus.covariate.correction,
        "drift_plot": dg.MetadataValue.path(str(outcome.plot_path)),
        # The same plot shown in the UI: Markdown with an embedded thumbnail (Dagster has no image type).
        "drift_plot_image": dg.MetadataValue.md(png_markdown(outcome.plot_path.read_bytes(), "drift plot")),
        "measured": dg.MetadataValue.float(float(len(drifted))),
        "threshold": dg.MetadataValue.float(0.0),
    }
    yield dg.AssetCheckResult(
        asset_key=features_key,
        check_name=DRIFT_CHECK,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(drifted)} of {len(assessments)} new partition(s) drifted from champion version "
            f"{outcome.champion_version}'s reference" + (f": {', '.join(drifted[:12])}" if drifted else "")
        ),
        metadata=md,
    )


def _table(rows: list[dict]) -> str:
    head = "| feature | test | statistic | p (adjusted) | distance | threshold | drifted |\n|---|---|---|---|---|---|---|"
    body = [
        f"| {r['column']} | {r['test']} | {r['statistic']:.4g} | {r['p_value_adjusted']:.3g} | "
        f"{r['distance_name']} {r['distance']:.4g} | {r['threshold']:g} | {'**yes**' if r['drifted'] else 'no'} |"
        for r in rows
    ]
    return "\n".join([head, *body])


# ----------------------------------------------------------------------------------------------------------------
# The sensors


def _cursor(context: dg.SensorEvaluationContext) -> dict:
    return json.loads(context.cursor) if context.cursor else {}


def _evaluate(context: dg.SensorEvaluationContext, cfg: MlopsConfig, trigger: str, job_name: str):
    from mlops_assets.monitoring.state import (
        MonitoringLog,
        current_decision,
        live_observations,
        registry_facts,
    )

    storage = context.resources.project.storage
    cursor = _cursor(context)
    new_cursor = dict(cursor)
    if trigger in ("drift", "performance"):
        # Evaluate only when there is something new to look at: new check results (and, for performance, new
        # labels in the prediction log).
        lines = len(MonitoringLog.from_storage(cfg.model.name, storage))
        new_cursor["log_lines"] = lines
        fresh = lines > cursor.get("log_lines", 0)
        if trigger == "performance":
            champ = registry_facts(context.resources.project.registry()).champion_version
            labeled = sum(o.n_rows for o in live_observations(cfg, champ, storage.prediction_log_url))
            new_cursor["live_labels"] = labeled
            new_cursor["champion"] = champ
            fresh = fresh or labeled != cursor.get("live_labels", 0) or champ != cursor.get("champion")
        if not fresh:
            context.update_cursor(json.dumps(new_cursor))
            return dg.SkipReason(f"no new {trigger} results since the last evaluation")
    now = datetime.now(UTC)
    new_cursor["evaluated_at"] = now.isoformat()
    # A retrain whose process was killed stays STARTED on the embedded instance: it is marked failed here (its
    # slots freed) rather than holding every later evaluation hostage.
    in_flight = live_runs(
        context.instance,
        context.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=10
        ),
        found_by=f"the {trigger} retrain sensor",
    )
    if in_flight:
        context.update_cursor(json.dumps(new_cursor))
        return dg.SkipReason(
            f"a retrain is in flight (run {in_flight[0].dagster_run.run_id}); not evaluating"
        )
    state, decision = current_decision(
        cfg,
        now,
        storage=storage,
        registry=context.resources.project.registry(),
        extra_retrain_times=_unregistered_retrains(context, job_name, storage, cfg),
    )
    context.update_cursor(json.dumps(new_cursor))
    if not decision.retrain:
        return dg.SkipReason(decision.detail)
    if decision.reason != trigger:
        # The decision belongs to another trigger's sensor (or to `mlops-assets run` for an initial model).
        return dg.SkipReason(
            f"the policy would retrain for {decision.reason}, not {trigger}: {decision.detail}"
        )
    run_key = f"{trigger}:{state.champion_version}:{state.latest_partition}"
    _alert_retrain(context, cfg, trigger, run_key, decision.detail, state.champion_version)
    return dg.RunRequest(run_key=run_key, tags={REASON_TAG: trigger, DECISION_TAG: decision.detail[:1000]})


def _alert_retrain(context, cfg: MlopsConfig, trigger: str, run_key: str, detail: str, champion: str | None):
    """Alert on a retrain request once (a repeated request with the same run key launches nothing)."""
    from mlops_assets.alerts.checks import retrain_events

    alerter = context.resources.project.registry().alerter
    seen = context.instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    if alerter is None or seen:
        return
    for event in retrain_events(cfg.model.name, trigger, detail, champion, run_key):
        alerter.notify(event)


def _unregistered_retrains(context, job_name: str, storage, cfg: MlopsConfig) -> list[datetime]:
    """Start times of retrain runs that registered no version (failed before it): storm control counts them."""
    from mlops_assets.monitoring.state import registry_facts

    registered = set(registry_facts(context.resources.project.registry()).run_ids)
    records = context.instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=50)
    return [
        datetime.fromtimestamp(r.create_timestamp.timestamp(), UTC)
        for r in records
        if r.dagster_run.run_id not in registered
    ]
