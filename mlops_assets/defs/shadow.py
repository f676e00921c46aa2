"""Shadow rollout in the graph (``rollout.mode: shadow``): the ``shadow_comparison`` check, the job that judges a
shadow and promotes it, and the sensor that launches that job once the shadow has scored enough live requests.

A retrain whose challenger passes every gate puts it in shadow (``deployed_model``, see
:mod:`mlops_assets.steps.promote`); the prediction service scores every request with it beside the champion. The
sensor looks at the prediction log every ``rollout.shadow.check_interval_seconds``: once ``rollout.shadow.requests``
pairs are logged (or ``max_seconds`` have passed), it launches ``<model>_shadow_job`` for that shadow. In that run
the blocking check judges the pairs (:mod:`mlops_assets.monitoring.shadow`): a pass lets ``deployed_model`` promote
the challenger with the reason of the retrain that made it; a failure ends the shadow as refused (recorded,
alerted) and ``deployed_model`` does not run, so the champion stays.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from mlops_assets.config import MlopsConfig
from mlops_assets.defs.model_assets import REASON_TAG, SHADOW_TAG

SHADOW_CHECK = "shadow_comparison"


def shadow_job_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_shadow_job"


def shadow_sensor_name(cfg: MlopsConfig) -> str:
    return f"{cfg.model.name}_shadow_sensor"


def shadow_check_key(cfg: MlopsConfig) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey([cfg.model.name, "trained_model"]), SHADOW_CHECK)


def without_shadow_check(cfg: MlopsConfig, selection: dg.AssetSelection) -> dg.AssetSelection:
    """``selection`` less the shadow check: it runs in the shadow job only (elsewhere it would judge a shadow
    that has not scored anything yet, and block the promotion it is meant to allow)."""
    if cfg.rollout.mode != "shadow":
        return selection
    return selection - dg.AssetSelection.checks(shadow_check_key(cfg))


def build_shadow_defs(cfg: MlopsConfig, prefix: list[str]) -> dg.Definitions:
    """Nothing unless ``rollout.mode`` is ``shadow``: a check that is not configured does not exist."""
    if cfg.rollout.mode != "shadow":
        return dg.Definitions()
    trained_key = dg.AssetKey([*prefix, "trained_model"])
    deployed_key = dg.AssetKey([*prefix, "deployed_model"])
    settings = cfg.rollout.shadow

    @dg.asset_check(
        asset=trained_key,
        name=SHADOW_CHECK,
        blocking=True,
        required_resource_keys={"project"},
        description="The challenger in shadow against the champion on the same live requests (rollout.shadow): "
        "agreement of their decisions, shift of its scores, its scoring errors, its p95 model-call time, and "
        "its live ROC AUC once enough labels came back. Blocks deployed_model (the promotion) unless it passes; "
        "a failure ends the shadow as refused.",
    )
    def shadow_comparison(context):
        from mlops_assets.monitoring.shadow import compare
        from mlops_assets.serving.prediction_log import read_shadow_pairs

        project = context.resources.project
        registry = project.registry()
        shadow = registry.active_shadow()
        wanted = context.run.tags.get(SHADOW_TAG)
        if shadow is None or (wanted is not None and str(shadow.id) != wanted):
            what = f"shadow {wanted}" if wanted else "a shadow"
            return dg.AssetCheckResult(
                passed=False,
                metadata={"message": f"no {what} is running: nothing to judge or promote"},
            )
        champion = registry.aliases().get("champion")
        if champion != shadow.champion_version:
            message = (
                f"the champion changed during the shadow (version {shadow.champion_version} when it started, "
                f"{champion} now): version {shadow.version} was compared with a model that no longer serves"
            )
            registry.end_shadow(shadow, "refused", {"passed": False, "message": message})
            return dg.AssetCheckResult(passed=False, metadata={"message": message, "version": shadow.version})
        since = datetime.fromisoformat(shadow.started_at)
        pairs = read_shadow_pairs(
            project.storage.prediction_log_url, cfg.model.name, shadow.version, since=since
        )
        verdict = compare(pairs, settings, shadow.version, shadow.champion_version)
        record = verdict.to_dict()
        if verdict.passed:
            registry.history_store.record_shadow_verdict(int(shadow.id or 0), record)
        else:
            registry.end_shadow(shadow, "refused", record)
        metadata: dict[str, object] = {
            "message": verdict.summary(),
            "version": shadow.version,
            "champion_version": str(shadow.champion_version),
            "pairs": verdict.pairs,
            "criteria": dg.MetadataValue.json(record["criteria"]),
        }
        for c in verdict.criteria:
            if c.measured is not None:
                metadata[f"{c.name}_measured"] = dg.MetadataValue.float(float(c.measured))
        return dg.AssetCheckResult(passed=verdict.passed, metadata=metadata)  # type: ignore[arg-type]

    job = dg.define_asset_job(
        shadow_job_name(cfg),
        selection=dg.AssetSelection.checks(shadow_check_key(cfg)) | dg.AssetSelection.assets(deployed_key),
        executor_def=dg.in_process_executor,
        description="Judge the challenger in shadow against the champion (the shadow_comparison check) and "
        "promote it if it passes. Launched by the shadow sensor with the shadow's id.",
    )

    @dg.sensor(
        name=shadow_sensor_name(cfg),
        job=job,
        minimum_interval_seconds=settings.check_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"project"},
        description="Launches the shadow job once the challenger in shadow has scored rollout.shadow.requests "
        "live rows beside the champion, or rollout.shadow.max_seconds have passed.",
    )
    def shadow_sensor(context):
        from mlops_assets.serving.prediction_log import count_shadow_rows

        project = context.resources.project
        shadow = project.registry().active_shadow()
        if shadow is None:
            return dg.SkipReason("no challenger is in shadow")
        scored = count_shadow_rows(project.storage.prediction_log_url, cfg.model.name, shadow.version)
        age = (datetime.now(UTC) - datetime.fromisoformat(shadow.started_at)).total_seconds()
        timed_out = settings.max_seconds is not None and age >= settings.max_seconds
        if scored < settings.requests and not timed_out:
            return dg.SkipReason(
                f"version {shadow.version} in shadow: {scored} of {settings.requests} rows scored"
            )
        return dg.RunRequest(
            run_key=f"shadow:{shadow.id}",
            tags={SHADOW_TAG: str(shadow.id), REASON_TAG: shadow.reason},
        )

    return dg.Definitions(asset_checks=[shadow_comparison], jobs=[job], sensors=[shadow_sensor])
