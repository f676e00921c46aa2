"""The pipeline's use-cases called directly, on the bundled data, without building or running the Dagster graph."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.catalogue import DATA_GATES, RELEASE_GATES, DatasetShape, data_gates, release_gates
from mlops_assets.config import load_config
from mlops_assets.data.batches import BlockedPartitionError, Stores
from mlops_assets.data.partitions import row_keys
from mlops_assets.data.source_state import recorded_state
from mlops_assets.features.stores import offline_store
from mlops_assets.registry.model_registry import TAG_DATA_WINDOW, ModelRegistry
from mlops_assets.steps.drift import assess_drift
from mlops_assets.steps.features import FeaturesError, build_features
from mlops_assets.steps.ingest import contract_path, ingest, publish_validated
from mlops_assets.steps.promote import PromotionRefused, promote
from mlops_assets.steps.train import TAG_DECISION_THRESHOLD, TAG_TRAINED_WINDOW, train_and_gate
from mlops_assets.storage import storage_from_env


def _keys(frame: pd.DataFrame) -> list[str]:
    return sorted(row_keys(frame["date"], "month").unique())


@pytest.fixture
def slice_setup(rainfall_slice, tmp_path):
    def make(years: int = 3, **kw):
        path, frame = rainfall_slice(years, **kw)
        cfg = load_config(path)
        storage = storage_from_env().ensure()
        return cfg, storage, Stores.at(storage.home, cfg.model.name), frame

    return make


def _ingest(cfg, stores, keys, tmp_path):
    names = [g.name for g in data_gates(DatasetShape.of(cfg, {}))]
    return ingest(
        cfg, stores, keys, gate_names=names, scratch=tmp_path / "scratch", home=stores.raw.root.parents[1]
    )


def test_ingest_stores_every_partition_with_its_verdict_and_the_contract(slice_setup, tmp_path):
    cfg, _, stores, frame = slice_setup(2)
    keys = _keys(frame)
    outcome = _ingest(cfg, stores, keys, tmp_path)
    assert not outcome.blocked and [g.gate for g in outcome.gates] == [
        "has_expected_columns",
        "has_expected_dtypes",
        "null_fraction_within_limit",
        "values_plausible",
        "labels_known",
        "no_duplicate_rows",
        "has_min_rows",
    ]
    assert outcome.rows == len(frame) and stores.raw.keys() == keys
    assert set(outcome.partition_versions) == set(keys)
    assert json.loads(contract_path(stores).read_text())["label_column"] == "rain"
    # What the definitions and the new-data sensor answer from: the range of every row read, and the kinds.
    recorded = recorded_state(stores.raw.root.parents[1], cfg.model.name)
    assert (recorded.time_range.start, recorded.time_range.end) == (frame["date"].min(), frame["date"].max())
    assert recorded.kinds["temperature"] == "numeric"
    assert not (tmp_path / "scratch").exists()  # the scratch folder is removed
    published = publish_validated(cfg, stores, keys)
    assert published.rows == len(frame) and stores.validated.keys() == keys
    # Same data, same versions: the data version is a content hash.
    again = _ingest(cfg, stores, keys, tmp_path)
    assert again.data_version == outcome.data_version


def test_a_corrupt_month_is_blocked_and_never_published(slice_setup, tmp_path):
    def corrupt(f):
        f = f.copy()
        f.loc[f["date"].dt.strftime("%Y-%m") == "1950-03", "visibility"] = 999_999_999.0
        return f

    cfg, _, stores, frame = slice_setup(2, mutate=corrupt)
    keys = _keys(frame)
    outcome = _ingest(cfg, stores, keys, tmp_path)
    failed = {g.gate: g for g in outcome.gates if not g.passed}
    assert set(failed) == {"values_plausible"}
    assert failed["values_plausible"].failing_columns == ["visibility"]
    assert failed["values_plausible"].failing_partitions == ["1950-03"]
    assert failed["values_plausible"].sample[0]["visibility"] == 999_999_999.0
    with pytest.raises(BlockedPartitionError, match="1950-03"):
        publish_validated(cfg, stores, keys)
    assert stores.validated.keys() == []  # refused before anything was written
    # The months before the corrupt one publish on their own.
    assert publish_validated(cfg, stores, keys[:14]).rows > 0


def test_train_gate_promote_then_assess_drift(slice_setup, tmp_path):
    cfg, storage, stores, frame = slice_setup(4)
    keys = _keys(frame)
    with pytest.raises(FeaturesError, match="validated_data has not been materialized"):
        build_features(cfg, stores, storage, keys)
    _ingest(cfg, stores, keys, tmp_path)
    publish_validated(cfg, stores, keys)
    features = build_features(cfg, stores, storage, keys[:36])
    assert features.rows > 1000 and "rain" in features.columns
    assert offline_store(cfg, storage).partitions() == keys[:36]

    registry = ModelRegistry.from_config(cfg, storage)
    trained = train_and_gate(cfg, offline_store(cfg, storage), registry, run_id="test-run")
    assert trained.version == "1" and trained.passed, [g for g in trained.gates if not g.passed]
    assert [g.gate for g in trained.gates] == [g.name for g in release_gates(cfg)]
    assert registry.latest_gate_results("1").results[0]["gate"] == "sanity"
    # MLflow as its users expect: a run named after the model, its trigger and its data; an MLflow 3 logged model
    # that is the run's output and the version's source; the training rows and the holdout as dataset inputs.
    run = registry.client.get_run(trained.mlflow_run_id)
    assert run.info.run_name == f"{cfg.model.name}-initial-{keys[35]}"
    version = registry.client.get_model_version(cfg.model.name, "1")
    assert version.source.startswith("models:/m-")
    logged = registry.client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == run.info.run_id and str(logged.status) == "READY"
    assert registry.client.get_model_version_download_uri(cfg.model.name, "1") == logged.artifact_location
    assert [o.model_id for o in run.outputs.model_outputs] == [logged.model_id]
    assert {m.key for m in logged.metrics} >= {"holdout_roc_auc"}
    inputs = {
        {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "holdout"}
    assert all(len(d.digest) >= 8 for d in inputs.values())
    assert inputs["training"].digest != inputs["holdout"].digest
    holdout_metric = next(m for m in logged.metrics if m.key == "holdout_roc_auc")
    assert holdout_metric.dataset_digest == inputs["holdout"].digest
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()  # nothing in the working directory
    deployed = promote(registry, trained.version, reason=None, run_id="test-run")
    assert (deployed.version, deployed.reason, deployed.previous_version) == ("1", "initial", None)
    # The threshold was chosen by the recipe fitted before the validation and holdout windows; the champion is the
    # recipe's refit on the 36 months up to the newest labeled one, and records that window and its threshold.
    tags = registry.champion().tags
    assert trained.split["train"]["last"] == keys[29] and trained.split["holdout"]["last"] == keys[35]
    assert tags[TAG_TRAINED_WINDOW] == tags[TAG_DATA_WINDOW] == f"{keys[0]}..{keys[35]}"
    assert tags["mlops.evaluated_window"] == f"{keys[0]}..{keys[29]}"
    # The gates judged the recipe by a backtest: each holdout month predicted by the recipe fitted right before it.
    assert (
        f"{keys[33]}..{keys[33]} predicted by the recipe fitted on {keys[0]}..{keys[32]}"
        in trained.model_card
    )
    assert (
        f"{keys[35]}..{keys[35]} predicted by the recipe fitted on {keys[0]}..{keys[34]}"
        in trained.model_card
    )
    assert 0 < float(tags[TAG_DECISION_THRESHOLD]) < 1
    assert f"Data window: {keys[0]}..{keys[35]} (data up to 1952-01-01" in trained.model_card
    assert "## Decision threshold" in trained.model_card

    # A version whose recorded gates failed is refused, and the champion stays.
    failing = [{**g.to_dict(), "passed": g.gate != "latency"} for g in trained.gates]
    registry.record_gate_results("1", failing, run_id="forged")
    with pytest.raises(PromotionRefused, match="latency"):
        promote(registry, "1", reason="manual", run_id="x")
    assert registry.champion().version == "1"

    # Drift: the champion (data up to its training) against the next year's partitions.
    none_new = assess_drift(cfg, registry, storage, (keys[0], keys[35]))
    assert none_new.skipped and "newer than the champion's training data" in none_new.skipped
    build_features(cfg, stores, storage, keys[36:])
    drift = assess_drift(cfg, registry, storage, (keys[36], keys[-1]))
    assert drift.skipped is None and [a.partition for a in drift.assessments] == keys[36:]
    assert drift.plot_path.is_file() and drift.per_feature()


def test_the_catalogues_and_the_check_specs_agree():
    from mlops_assets.defs.factory import build_model_defs

    cfg = load_config()
    graph = build_model_defs(cfg).resolve_asset_graph()
    checks = {k.name: graph.get(k) for k in graph.asset_check_keys}
    for spec in data_gates(DatasetShape.of(cfg, {"x": "numeric"})):
        assert checks[spec.check_name].description == spec.description
        assert checks[spec.check_name].blocking
    for spec in release_gates(cfg):
        assert checks[spec.check_name].description == spec.description
    declared = {n for n in checks if n.startswith(("raw_data_", "trained_model_passes_"))}
    assert declared <= {g.check_name for g in (*DATA_GATES, *RELEASE_GATES)}
    assert dg.AssetKey(["mlops_model", "raw_data"]) in {k.asset_key for k in graph.asset_check_keys}


def test_definitions_load_with_the_source_gone_after_ingestion(slice_setup, tmp_path):
    from mlops_assets.defs.factory import build_model_defs

    cfg, _, stores, frame = slice_setup(1)
    _ingest(cfg, stores, _keys(frame), tmp_path)
    before = build_model_defs(cfg).resolve_asset_graph()
    source = cfg.source_dir / cfg.dataset.source
    source.unlink()  # what ingestion recorded is all the definitions need
    after = build_model_defs(cfg).resolve_asset_graph()
    assert {k.name for k in after.asset_check_keys} == {k.name for k in before.asset_check_keys}
    assert "raw_data_values_plausible" in {k.name for k in after.asset_check_keys}


def test_the_plain_packages_and_the_steps_load_without_dagster():
    """The wall the README's code layout promises: only defs/ (and the run and check-report commands that execute
    it) import Dagster."""
    import subprocess
    import sys

    plain = [
        "mlops_assets.steps.ingest",
        "mlops_assets.steps.features",
        "mlops_assets.steps.train",
        "mlops_assets.steps.promote",
        "mlops_assets.steps.drift",
        "mlops_assets.steps.arrivals",
        "mlops_assets.steps.repair",
        "mlops_assets.processes",
        "mlops_assets.catalogue",
        "mlops_assets.data.sources",
        "mlops_assets.data.source_state",
        "mlops_assets.features.engine",
        "mlops_assets.features.online",
        "mlops_assets.monitoring.state",
        "mlops_assets.monitoring.replay",
        "mlops_assets.registry.model_registry",
        "mlops_assets.registry.reachability",
        "mlops_assets.serving.service",
        "mlops_assets.commands.rollback",
        "mlops_assets.commands.status",
        "mlops_assets.feature_store",
    ]
    code = f"import importlib, sys\nfor m in {plain!r}: importlib.import_module(m)\nprint('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
