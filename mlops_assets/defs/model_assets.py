"""features, trained_model (with the release gates as blocking checks) and deployed_model."""

import json
from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets import progress
from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import key_window, row_keys, split_by_partition
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.lineage import combined_version, content_version

REASON_TAG = "mlops/reason"
REASONS = ("initial", "drift", "performance", "freshness", "manual")
PROMOTION_POOL = "mlops_promotion"
RELEASE_GATES = {
    "sanity": "Probabilities in [0, 1], no NaN, one prediction per row, input schema equal to the feature schema.",
    "metric_floors": "Holdout ROC AUC, accuracy, F1, precision and recall at or above their floors.",
    "no_regression": "Holdout metric no worse than the champion's on the same holdout, within the tolerance.",
    "latency": "p95 single-row and 1,000-row batch prediction time within limits and beside the champion's.",
    "robustness": "Predictions agree under small input noise.",
    "fairness": "Largest between-group difference of the chosen rate under the threshold.",
}


def release_gate_names(cfg: MlopsConfig) -> list[str]:
    names = ["sanity"]
    if any(v is not None for v in cfg.gates.floors.model_dump().values()):
        names.append("metric_floors")
    names += ["no_regression", "latency", "robustness"]
    if cfg.fairness.enabled:
        names.append("fairness")
    return names


def release_check_name(gate: str) -> str:
    return f"trained_model_passes_{gate}"


def build_model_assets(cfg: MlopsConfig, partitions_def: dg.PartitionsDefinition, prefix: list[str]):
    from mlops_assets.features import features_code_version

    validated_key = dg.AssetKey([*prefix, "validated_data"])
    features_key = dg.AssetKey([*prefix, "features"])
    trained_key = dg.AssetKey([*prefix, "trained_model"])
    deployed_key = dg.AssetKey([*prefix, "deployed_model"])
    feature_version = features_code_version(cfg)
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
        from mlops_assets.data.staging import group_keys
        from mlops_assets.features import compute_features, lookback
        from mlops_assets.features.definitions import online_retention
        from mlops_assets.features.stores import offline_store, online_store

        keys = context.partition_keys
        freq, ts_col = cfg.partitions.freq, cfg.dataset.timestamp_column
        progress.step("features", f"{len(keys)} partition(s)")
        stored = project.stores.validated
        missing = [k for k in keys if not stored.exists(k)]
        if missing:
            raise dg.Failure(f"validated_data has not been materialized for partition(s) {missing[:10]}")
        # Each stored partition's [start, end), parsed once for every group's history look-up.
        windows = {k: key_window(k, freq) for k in stored.keys()}
        offline = offline_store(cfg, project.storage)
        versions, rows, columns, newest = [], 0, [], None
        sizes = {k: stored.row_count(k) for k in keys}
        reach_back = lookback(cfg)
        for group in group_keys(keys, sizes, cfg.partitions.rows_per_batch):
            start = windows[group[0]][0]
            events = stored.read(group)
            # The stored partitions before the group that its windows reach: [start - lookback, start).
            since = start - reach_back
            reach = [k for k, (_, end) in windows.items() if since < end <= start]
            computed = compute_features(cfg, events, stored.read(reach) if reach else None)
            parts = split_by_partition(computed, ts_col, freq)
            for key in group:
                part = parts.get(key, computed.iloc[:0])
                offline.write_partition(key, part)
                versions.append(content_version(part))
            rows += len(computed)
            columns = list(computed.columns)
            if len(events):
                newest = events[ts_col].max()
        # The online store keeps only the newest events (its retention); older rows of a long backfill would be
        # inserted only to be dropped again.
        start, end = windows[keys[0]][0], windows[keys[-1]][1]
        if newest is not None:
            start = max(start, newest - online_retention(cfg))
        recent = stored.read([k for k in keys if windows[k][1] > start])
        if len(recent):
            recent = recent[recent[ts_col] >= start]
        online_counts = online_store(cfg, project.storage).materialize(cfg, recent, start=start, end=end)
        return dg.MaterializeResult(
            metadata={
                "rows": rows,
                "features": dg.MetadataValue.json(columns),
                "feature_code_version": feature_version,
                "online_store": dg.MetadataValue.json(json.loads(json.dumps(online_counts, default=str))),
                "dagster/row_count": rows,
            },
            data_version=dg.DataVersion(combined_version(versions)),
        )

    gates = release_gate_names(cfg)

    @dg.asset(
        key=trained_key,
        deps=[features_key],
        required_resource_keys={"mlflow", "project"},
        check_specs=[
            dg.AssetCheckSpec(
                release_check_name(g), asset=trained_key, blocking=True, description=RELEASE_GATES[g]
            )
            for g in gates
        ],
        group_name=prefix[-1],
        kinds={"scikit-learn", "mlflow"},
        automation_condition=dg.AutomationCondition.all_deps_blocking_checks_passed()
        & dg.AutomationCondition.on_missing(),
        description="A scikit-learn pipeline (preprocessing inside) trained on the offline store's training "
        "window, evaluated on the newest partitions (the holdout, never fitted), logged to MLflow and registered "
        "as a new version with alias 'challenger'. The release gates are blocking checks: a challenger that fails "
        "one never reaches deployed_model.",
    )
    def trained_model(context: dg.AssetExecutionContext):
        import mlflow

        project: MlopsProject = context.resources.project
        try:
            yield from _train_and_gate(context, project, cfg, gates, trained_key, feature_version)
        except BaseException:
            if mlflow.active_run() is not None:
                mlflow.end_run(status="FAILED")
            raise

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
        "database lock).",
    )
    def deployed_model(context: dg.AssetExecutionContext, trained_model: dict):
        from mlops_assets.registry.model_registry import ModelRegistry

        progress.step("deployed_model", f"promoting version {trained_model['version']}")
        registry = ModelRegistry(cfg.model.name)
        version = trained_model["version"]
        record = registry.latest_gate_results(version)
        failed = [g["gate"] for g in (record.results if record else []) if not g["passed"]]
        if record is None or failed:
            # Defense in depth: a deployed_model run launched on its own must not bypass the gates.
            raise dg.Failure(
                f"version {version} cannot be promoted: "
                + (f"release gates failed: {failed}" if failed else "no gate results recorded for it")
            )
        reason = context.run.tags.get(REASON_TAG) or ("initial" if registry.champion() is None else "manual")
        deployment = registry.promote(
            version, reason=reason, run_id=context.run_id, metrics=trained_model["metrics"]
        )
        return dg.Output(
            {"version": version, "reason": reason, "at": deployment.deployed_at},
            metadata={
                "champion_version": version,
                "reason": reason,
                "previous": str(deployment.previous_version),
            },
        )

    return [features, trained_model, deployed_model]


def _train_and_gate(context, project: MlopsProject, cfg: MlopsConfig, gates, trained_key, feature_version):
    from mlops_assets.features import model_feature_columns
    from mlops_assets.features.stores import offline_store
    from mlops_assets.monitoring import state as monitoring_state
    from mlops_assets.registry.model_registry import TAG_FEATURE_VERSION, ModelRegistry
    from mlops_assets.training.gates import evaluate_gates
    from mlops_assets.training.model_card import render_model_card
    from mlops_assets.training.pipeline import binary_labels, evaluate, fit, time_split
    from mlops_assets.training.plots import release_plots

    progress.step("trained_model", "reading the offline store")
    store = offline_store(cfg, project.storage)
    ts_col, label = cfg.dataset.timestamp_column, cfg.dataset.label_column
    # Which partitions hold labeled rows, from two columns; then only the split's windows are read whole.
    labels = store.read(columns=[ts_col, label])
    if labels.empty:
        raise dg.Failure("the offline store is empty: materialize features first")
    row_partitions = row_keys(labels[ts_col], cfg.partitions.freq)
    newest_data = monitoring_state.data_version(row_partitions.unique())
    split = time_split(row_partitions[labels[label].notna()].unique().tolist(), cfg)
    del labels, row_partitions
    frame = store.read([*split.train, *split.validation, *split.holdout])
    frame = frame.assign(__partition__=row_keys(frame[ts_col], cfg.partitions.freq))
    # The partition key is bookkeeping, not a model input.
    columns = model_feature_columns(cfg, [c for c in frame.columns if c != "__partition__"])
    numeric = [
        c
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    categorical = [c for c in columns if c not in numeric]
    progress.step("trained_model", f"fitting on {frame['__partition__'].nunique()} partition(s)")
    model = fit(cfg, frame, "__partition__", numeric, categorical, split=split)
    holdout = frame[frame["__partition__"].isin(model.split.holdout) & frame[label].notna()]
    X_hold, y_hold = holdout[model.feature_columns], holdout[label]

    registry = ModelRegistry(cfg.model.name)
    champion_info = registry.champion()
    # A champion built on other feature definitions cannot score this holdout: it is not comparable, and the
    # no-regression gate says so instead of comparing (a feature change is a deliberate, reviewed release).
    comparable = champion_info is not None and champion_info.tags.get(TAG_FEATURE_VERSION) == feature_version
    champion = registry.load(alias="champion").model if comparable else None
    progress.step("trained_model", "release gates")
    sensitive = holdout[cfg.fairness.sensitive_column] if cfg.fairness.enabled else None
    results = evaluate_gates(
        model.pipeline,
        X_hold,
        pd.Series(binary_labels(y_hold, cfg.dataset.positive_label)),
        cfg.gates,
        cfg.fairness,
        champion=champion,
        champion_version=champion_info.version if comparable else None,
        sensitive=sensitive,
        expected_schema=model.feature_columns,
        positive_label=1,
    )
    if champion_info is not None and not comparable:
        results = [
            replace(
                r,
                message=f"champion version {champion_info.version} was trained on feature version "
                f"{champion_info.tags.get(TAG_FEATURE_VERSION)}, this challenger on {feature_version}: "
                "not comparable on the same holdout",
                metadata={**r.metadata, "champion_version": champion_info.version, "comparable": False},
            )
            if r.gate == "no_regression"
            else r
            for r in results
        ]
    y_bin = binary_labels(y_hold, cfg.dataset.positive_label)
    plots = (
        release_plots(
            model.pipeline,
            X_hold,
            y_bin,
            threshold=cfg.gates.decision_threshold,
            champion=champion,
            champion_version=champion_info.version if comparable else None,
        )
        if len(np.unique(y_bin)) == 2
        else {}
    )
    metrics = {k: v for k, v in model.holdout_metrics.items() if isinstance(v, int | float)}
    train_keys = model.split.train
    # The reference profile for drift checks: the training window's features, predictions and labels.
    from datetime import UTC, datetime

    train_rows = frame[frame["__partition__"].isin(train_keys) & frame[label].notna()]
    profile = monitoring_state.reference_profile(
        cfg,
        train_rows,
        numeric,
        categorical,
        model.pipeline.predict_proba(train_rows[model.feature_columns])[:, 1],
    )
    registered = registry.register(
        model.pipeline,
        input_example=X_hold.head(5) if len(X_hold) else frame[model.feature_columns].head(5),
        metrics={f"holdout_{k}": v for k, v in metrics.items()}
        | {
            f"validation_{k}": v
            for k, v in model.metrics.get("validation", {}).items()
            if isinstance(v, int | float)
        },
        partitions=train_keys,
        feature_version=feature_version,
        dagster_run_id=context.run_id,
        tags={
            "mlops.holdout_window": f"{model.split.holdout[0]}..{model.split.holdout[-1]}",
            monitoring_state.TAG_DATA_VERSION: newest_data,
            monitoring_state.TAG_TRAINED_AT: datetime.now(UTC).isoformat(),
        },
        json_artifacts={
            monitoring_state.PROFILE_ARTIFACT: profile.to_dict(),
            "split": model.split.to_dict(),
            "gates": [r.to_dict() for r in results],
            "feature_columns": {"numeric": numeric, "categorical": categorical},
        },
        file_artifacts=plots,
    )
    registry.record_gate_results(registered.version, results, run_id=context.run_id)
    champion_metrics = None
    if champion is not None:
        champion_metrics = {
            k: v
            for k, v in evaluate(champion, X_hold, y_bin).items()
            if isinstance(v, int | float) and k != "n"
        }
    card = render_model_card(
        model_name=cfg.model.name,
        version=registered.version,
        metrics={k: v for k, v in metrics.items() if k != "n"},
        champion_metrics=champion_metrics,
        champion_version=champion_info.version if champion_info else None,
        gate_results=results,
        data_window=f"{train_keys[0]}..{train_keys[-1]}",
        partition_count=len(train_keys),
        feature_version=feature_version,
        estimator=cfg.model.estimator,
        params=dict(cfg.model.params),
        training_rows=model.n_train,
        holdout_rows=len(X_hold),
        dagster_run_id=context.run_id,
    )
    registry.set_model_card(registered.version, card)
    value = {
        "version": registered.version,
        "run_id": registered.run_id,
        "metrics": metrics,
        "split": model.split.to_dict(),
        "feature_version": feature_version,
        "champion_version": champion_info.version if champion_info else None,
    }
    yield dg.Output(
        value,
        metadata={
            "version": registered.version,
            "mlflow_run_id": registered.run_id,
            "holdout_metrics": dg.MetadataValue.json(metrics),
            "split": dg.MetadataValue.json(model.split.to_dict()),
            "feature_code_version": feature_version,
            "training_data_version": content_version(frame[frame["__partition__"].isin(train_keys)]),
            "sha256": registered.sha256,
            "model_card": dg.MetadataValue.md(card),
        },
        data_version=dg.DataVersion(registered.sha256[:20]),
    )
    by_gate = {r.gate: r for r in results}
    for g in gates:
        r = by_gate[g]
        md = {
            "message": r.message,
            "details": dg.MetadataValue.json(json.loads(json.dumps(r.metadata, default=str))),
        }
        if r.value is not None:
            md["measured"] = dg.MetadataValue.float(float(r.value))
        if r.threshold is not None:
            md["threshold"] = dg.MetadataValue.float(float(r.threshold))
        yield dg.AssetCheckResult(
            asset_key=trained_key,
            check_name=release_check_name(g),
            passed=bool(r.passed),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=md,
        )
