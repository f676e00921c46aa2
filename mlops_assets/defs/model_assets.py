"""features, trained_model (with the release gates as blocking checks) and deployed_model.

Thin wiring over :mod:`mlops_assets.steps`: each asset calls its step and translates the outcome.
"""

import math
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.catalogue import release_gates
from mlops_assets.config import MlopsConfig
from mlops_assets.defs.checks import check_result, check_specs
from mlops_assets.defs.resources import HANDOFF_IO, MlopsProject
from mlops_assets.images import png_markdown

if TYPE_CHECKING:
    from mlops_assets.provenance import Provenance

REASON_TAG = "mlops/reason"
REASONS = ("initial", "drift", "performance", "freshness", "manual")
PROMOTION_POOL = "mlops_promotion"
FORCE_TAG = "mlops/force"
# The newest partition a run's training may read (`mlops-assets run`: its source's newest period). Another run on the
# same storage may have written newer partitions of another slice; this run trains on the data it ingested.
TRAIN_THROUGH_TAG = "mlops/train_through"
# trained_model metadata key -> the release plot (an MLflow artifact) it shows.
PLOT_METADATA = {"roc_curve": "plots/roc_curve.png", "confusion_matrix": "plots/confusion_matrix.png"}
# Observation metadata of a trained_model that had nothing new to learn: the champion version that stays.
UNCHANGED_KEY = "unchanged_champion_version"
# A run that promotes the challenger of a shadow (the shadow's id) once its comparison passed.
SHADOW_TAG = "mlops/shadow"


def metric_metadata(metrics: dict[str, float]) -> dict[str, dg.MetadataValue]:
    """Holdout metrics as numeric metadata, ``holdout_<metric>``: floats the UI charts over materializations; the
    row count as an integer; a metric that could not be computed (None, NaN) is left out rather than shown as 0."""
    out: dict[str, dg.MetadataValue] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            continue
        if name == "n":
            out["holdout_rows"] = dg.MetadataValue.int(int(value))
        else:
            out[f"holdout_{name}"] = dg.MetadataValue.float(float(value))
    return out


def build_model_assets(cfg: MlopsConfig, partitions_def: dg.PartitionsDefinition, prefix: list[str]):
    from mlops_assets import provenance
    from mlops_assets.features import features_code_version

    validated_key = dg.AssetKey([*prefix, "validated_data"])
    features_key = dg.AssetKey([*prefix, "features"])
    trained_key = dg.AssetKey([*prefix, "trained_model"])
    deployed_key = dg.AssetKey([*prefix, "deployed_model"])
    feature_version = features_code_version(cfg)
    training_code_version = provenance.code_version(provenance.code_files())
    gated = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()

    @dg.asset(
        key=features_key,
        deps=[validated_key],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        code_version=feature_version,
        group_name=prefix[-1],
        kinds={"pandas", "parquet"},
        automation_condition=gated,
        description="Model inputs, point-in-time correct: each window feature uses only events strictly before "
        "its row. Written to the offline store (one Parquet file per partition) and to the online store (latest "
        "state per entity). The code version is the hash of the feature definitions. Computed a group of "
        "partitions at a time (partitions.rows_per_batch rows), each with the history its windows reach.",
    )
    def features(context: dg.AssetExecutionContext, project: MlopsProject):
        from mlops_assets.steps.features import FeaturesError, build_features
        from mlops_assets.steps.repair import DATA, set_aside_damaged, warning

        # validated_data whose file is damaged is moved aside: those partitions are left out of this run (recorded
        # as needing repair), the others go on.
        aside = set_aside_damaged(cfg, project.storage, stores_of=[DATA])
        for damaged in aside:
            context.log.warning(warning(damaged, rebuilt=False))
        left_out = {d.partition for d in aside if d.asset == "validated_data"}
        keys = [k for k in context.partition_keys if k not in left_out]
        if not keys:
            raise dg.Failure("; ".join(warning(d, rebuilt=False) for d in aside if d.partition in left_out))
        try:
            outcome = build_features(cfg, project.stores, project.storage, keys)
        except FeaturesError as err:
            raise dg.Failure(str(err)) from None
        return dg.MaterializeResult(
            metadata={
                "rows": outcome.rows,
                "features": dg.MetadataValue.json(outcome.columns),
                "feature_code_version": outcome.code_version,
                "online_store": dg.MetadataValue.json(outcome.online),
                "dagster/row_count": outcome.rows,
            },
            data_version=dg.DataVersion(outcome.data_version),
        )

    gates = release_gates(cfg)

    @dg.multi_asset(
        name=f"{prefix[-1]}__trained_model",  # the op (step) name an @asset would have
        outs={
            "trained_model": dg.AssetOut(
                key=trained_key,
                group_name=prefix[-1],
                kinds={"scikit-learn", "mlflow"},
                # The version, metrics and split handed to deployed_model, kept per run: each run promotes what
                # it trained and gated, whatever other runs do at the same time.
                io_manager_key=HANDOFF_IO,
                # Nothing new to learn (the champion was trained on exactly this data and recipe): no version,
                # and deployed_model is skipped.
                is_required=False,
                # The hash of the training and feature source files (mlops_assets.provenance): after an upgrade
                # that changes them, the UI shows the model as trained by other code.
                code_version=training_code_version,
                automation_condition=dg.AutomationCondition.all_deps_blocking_checks_passed()
                & dg.AutomationCondition.on_missing(),
                description="A scikit-learn pipeline (preprocessing inside) trained on the offline store's "
                "training window, evaluated on the newest partitions (the holdout, never fitted), refit on the "
                "newest labeled data, logged to MLflow and registered as a new version with alias 'challenger'. "
                "The release gates are blocking checks: a challenger that fails one never reaches deployed_model. "
                "A run on unchanged data trains nothing unless forced (a retrain job, `mlops-assets run --force`).",
            )
        },
        deps=[features_key],
        required_resource_keys={"mlflow", "project"},
        check_specs=check_specs(gates, trained_key),
        can_subset=True,
    )
    def trained_model(context: dg.AssetExecutionContext):
        import mlflow

        from mlops_assets.features.stores import offline_store
        from mlops_assets.steps.repair import FEATURES, set_aside_damaged, warning
        from mlops_assets.steps.train import TrainingDataError, Unchanged, train_and_gate

        project: MlopsProject = context.resources.project
        # A damaged offline-store file is moved aside and its partition left out of this training (recorded as
        # needing repair); the rest of the store trains.
        for damaged in set_aside_damaged(cfg, project.storage, stores_of=[FEATURES]):
            context.log.warning(warning(damaged, rebuilt=False))
        # A retrain job (a trigger's or a person's) and `run --force` train on purpose; a plain `run` does not
        # retrain what has not changed.
        forced = context.run.tags.get(FORCE_TAG) == "true" or context.run.tags.get(REASON_TAG) in REASONS
        try:
            outcome = train_and_gate(
                cfg,
                offline_store(cfg, project.storage).until(context.run.tags.get(TRAIN_THROUGH_TAG)),
                project.registry(),
                run_id=context.run_id,
                force=forced,
                trigger=context.run.tags.get(REASON_TAG) or ("forced" if forced else None),
            )
        except TrainingDataError as err:
            raise dg.Failure(str(err)) from None
        except BaseException:
            if mlflow.active_run() is not None:
                mlflow.end_run(status="FAILED")
            raise
        if isinstance(outcome, Unchanged):
            context.log.info(outcome.message)
            yield dg.AssetObservation(
                asset_key=trained_key,
                metadata={
                    UNCHANGED_KEY: outcome.champion_version,
                    "training_fingerprint": outcome.fingerprint,
                    "message": outcome.message,
                },
            )
            return
        links = (
            project.registry().ui_links(project.storage.mlflow_ui_url, outcome.mlflow_run_id, outcome.version)
            if project.storage.mlflow_ui_url
            else {}
        )
        yield dg.Output(
            {
                "version": outcome.version,
                "run_id": outcome.mlflow_run_id,
                "metrics": outcome.metrics,
                "split": outcome.split,
                "feature_version": outcome.feature_version,
                "champion_version": outcome.champion_version,
            },
            metadata={
                "version": outcome.version,
                "mlflow_run_id": outcome.mlflow_run_id,
                **{k: dg.MetadataValue.url(v) for k, v in links.items()},
                # One float per metric: the UI plots each across materializations (a JSON blob it cannot).
                **metric_metadata(outcome.metrics),
                "split": dg.MetadataValue.json(outcome.split),
                "feature_code_version": outcome.feature_version,
                "training_data_version": outcome.training_data_version,
                **provenance_metadata(outcome.provenance),
                "sha256": outcome.sha256,
                "model_card": dg.MetadataValue.md(outcome.model_card),
                # The plots themselves, shown in the UI (they are also artifacts of the MLflow run).
                **{
                    name: dg.MetadataValue.md(png_markdown(outcome.plots[artifact], name))
                    for name, artifact in PLOT_METADATA.items()
                    if artifact in outcome.plots
                },
            },
            data_version=dg.DataVersion(outcome.sha256[:20]),
            output_name="trained_model",
        )
        by_gate = {r.gate: r for r in outcome.gates}
        for spec in gates:
            yield check_result(spec, by_gate[spec.name], trained_key)

    @dg.asset(
        key=deployed_key,
        ins={"trained_model": dg.AssetIn(key=trained_key)},
        group_name=prefix[-1],
        kinds={"mlflow"},
        pool=PROMOTION_POOL,
        automation_condition=dg.AutomationCondition.all_deps_blocking_checks_passed()
        & dg.AutomationCondition.any_deps_updated(),
        description="The champion: the 'champion' alias moved to the challenger once every release gate passed, "
        "'previous' kept on the old one, and the move appended to the deployment history (serialized by a "
        "database lock), through the registry's guard. With approval.required the challenger awaits "
        "`mlops-assets approve` instead.",
    )
    def deployed_model(context: dg.AssetExecutionContext, project: MlopsProject, trained_model: dict):
        from mlops_assets import progress
        from mlops_assets.steps.promote import (
            AWAITING_APPROVAL,
            IN_SHADOW,
            PromotionRefused,
            promote_or_shadow,
            promote_shadow,
        )

        shadow_id = context.run.tags.get(SHADOW_TAG)
        try:
            if shadow_id is not None:
                # The shadow_comparison check passed in this run (it blocks this step otherwise).
                progress.step("deployed_model", f"promoting the challenger of shadow {shadow_id}")
                outcome = promote_shadow(
                    project.registry(),
                    int(shadow_id),
                    run_id=context.run_id,
                    approval_required=cfg.approval.required,
                )
            else:
                version = trained_model["version"]
                progress.step("deployed_model", f"promoting version {version}")
                outcome = promote_or_shadow(
                    project.registry(),
                    version,
                    reason=context.run.tags.get(REASON_TAG),
                    run_id=context.run_id,
                    metrics=trained_model["metrics"],
                    approval_required=cfg.approval.required,
                    rollout_mode=cfg.rollout.mode,
                )
        except PromotionRefused as err:
            raise dg.Failure(str(err)) from None
        if outcome.status == IN_SHADOW:
            context.log.info(
                f"version {outcome.version} runs in shadow of champion {outcome.previous_version}; it is promoted "
                "when its shadow comparison passes"
            )
            return dg.Output(
                {
                    "version": outcome.previous_version,
                    "shadow": outcome.version,
                    "shadow_id": outcome.shadow_id,
                },
                metadata={
                    "champion_version": str(outcome.previous_version),
                    "shadow_version": outcome.version,
                    "shadow_id": str(outcome.shadow_id),
                    "reason": outcome.reason,
                },
            )
        if outcome.status == AWAITING_APPROVAL:
            context.log.info(f"version {outcome.version} awaits approval; the champion is unchanged")
            return dg.Output(
                {"version": outcome.previous_version, "awaiting_approval": outcome.version},
                metadata={"awaiting_approval": outcome.version, "previous": str(outcome.previous_version)},
            )
        base = project.storage.mlflow_ui_url
        # The MLflow run of the version promoted (a shadow's was trained by an earlier run than this one).
        mlflow_run = trained_model.get("run_id")
        if base and shadow_id is not None:
            mlflow_run = project.registry().get_version(outcome.version).run_id
        link = (
            project.registry().ui_links(base, mlflow_run, outcome.version)["mlflow_model_version"]
            if base and mlflow_run
            else None
        )
        return dg.Output(
            {"version": outcome.version, "reason": outcome.reason, "at": outcome.deployed_at},
            metadata={
                "champion_version": outcome.version,
                "reason": outcome.reason,
                "previous": str(outcome.previous_version),
                **({"mlflow_model_version": dg.MetadataValue.url(link)} if link else {}),
            },
        )

    return [features, trained_model, deployed_model]


def provenance_metadata(made_of: "Provenance | None") -> dict[str, Any]:
    """What the version was made from, as the UI shows it (all of it is in the run's provenance.json)."""
    if made_of is None:
        return {}
    return {
        "training_code_version": made_of.code_version,
        "git_commit": str(made_of.git.get("commit")),
        "git_dirty": str(made_of.git.get("dirty")),
        "partition_data_versions": dg.MetadataValue.json(made_of.data_versions),
        "packages": dg.MetadataValue.json(made_of.packages),
        "random_state": made_of.random_state,
    }
