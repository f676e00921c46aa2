"""A snapshot of the loaded definitions: an accidental change to the graph shows up here in review."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlops_assets.config import load_config
from mlops_assets.defs.factory import build_model_defs

EXPECTED_ASSETS = {
    "mlops_model/raw_data": [],
    "mlops_model/validated_data": ["mlops_model/raw_data"],
    "mlops_model/features": ["mlops_model/validated_data"],
    "mlops_model/trained_model": ["mlops_model/features"],
    "mlops_model/deployed_model": ["mlops_model/trained_model"],
    "mlops_model/model_performance": ["mlops_model/deployed_model"],
}

EXPECTED_BLOCKING_CHECKS = {
    "mlops_model/raw_data": {
        "raw_data_has_expected_columns",
        "raw_data_has_expected_dtypes",
        "raw_data_null_fraction_within_limit",
        "raw_data_values_plausible",
        "raw_data_labels_known",
        "raw_data_no_duplicate_rows",
        "raw_data_has_min_rows",
    },
    "mlops_model/trained_model": {
        "trained_model_passes_sanity",
        "trained_model_passes_metric_floors",
        "trained_model_passes_no_regression",
        "trained_model_passes_latency",
        "trained_model_passes_robustness",
        "trained_model_passes_refit_agrees",
    },
}


def test_the_module_loads_a_definitions_object():
    from mlops_assets.definitions import defs

    assert isinstance(defs, dg.Definitions)
    defs.resolve_asset_graph()  # resolvable: what `dagster dev -m mlops_assets.definitions` does


def test_asset_graph_snapshot():
    graph = build_model_defs(load_config()).resolve_asset_graph()
    five = {
        k.to_user_string(): sorted(d.to_user_string() for d in graph.get(k).parent_keys)
        for k in graph.get_all_asset_keys()
        if k.to_user_string() in EXPECTED_ASSETS
    }
    assert five == EXPECTED_ASSETS
    blocking: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        spec = graph.get(key)
        if spec.blocking:
            blocking.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    for asset, checks in EXPECTED_BLOCKING_CHECKS.items():
        assert blocking[asset] >= checks, asset
    # fairness is absent unless configured, the category gate without categorical columns; the duplicate-row gate
    # exists for every dataset (a file ingested twice can happen anywhere)
    names = {k.name for k in graph.asset_check_keys}
    assert "trained_model_passes_fairness" not in names
    assert "raw_data_categories_known" not in names and "raw_data_no_duplicate_rows" in names
    # Periods are added as data arrives (ingestion), not read from the source when the definitions load.
    partitions = graph.get(dg.AssetKey(["mlops_model", "raw_data"])).partitions_def
    assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "mlops_model_periods"
    for name in ("raw_data", "validated_data", "features"):
        assert graph.get(dg.AssetKey(["mlops_model", name])).partitions_def == partitions
    assert graph.get(dg.AssetKey(["mlops_model", "trained_model"])).partitions_def is None


# Every check, job, sensor and resource of the bundled config's definitions, compared exactly: adding, removing or
# renaming one is a reviewed change of this file.
EXPECTED_CHECKS = {
    ("mlops_model/features", "features_match_champion_profile", False),
    ("mlops_model/raw_data", "raw_data_has_expected_columns", True),
    ("mlops_model/raw_data", "raw_data_has_expected_dtypes", True),
    ("mlops_model/raw_data", "raw_data_has_min_rows", True),
    ("mlops_model/raw_data", "raw_data_labels_known", True),
    ("mlops_model/raw_data", "raw_data_no_duplicate_rows", True),
    ("mlops_model/raw_data", "raw_data_null_fraction_within_limit", True),
    ("mlops_model/raw_data", "raw_data_values_plausible", True),
    ("mlops_model/trained_model", "trained_model_passes_latency", True),
    ("mlops_model/trained_model", "trained_model_passes_metric_floors", True),
    ("mlops_model/trained_model", "trained_model_passes_no_regression", True),
    ("mlops_model/trained_model", "trained_model_passes_refit_agrees", True),
    ("mlops_model/trained_model", "trained_model_passes_robustness", True),
    ("mlops_model/trained_model", "trained_model_passes_sanity", True),
}
EXPECTED_JOBS = {
    "mlops_model_run_job": [
        "mlops_model/raw_data",
        "mlops_model/validated_data",
        "mlops_model/features",
        "mlops_model/trained_model",
        "mlops_model/deployed_model",
    ],
    "mlops_model_ingest_job": ["mlops_model/raw_data", "mlops_model/validated_data", "mlops_model/features"],
    "mlops_model_retrain_job": ["mlops_model/trained_model", "mlops_model/deployed_model"],
    "mlops_model_rollback_job": [],
}
EXPECTED_SENSORS = {
    ("mlops_model_new_data_sensor", None, 15, "RUNNING"),
    ("mlops_model_champion_sensor", None, 60, "RUNNING"),
    ("mlops_model_drift_retrain_sensor", "mlops_model_retrain_job", 15, "RUNNING"),
    ("mlops_model_performance_retrain_sensor", "mlops_model_retrain_job", 60, "RUNNING"),
    ("mlops_model_freshness_retrain_sensor", "mlops_model_retrain_job", 3600, "RUNNING"),
    ("mlops_model_check_alerts_sensor", None, 30, "RUNNING"),
    ("mlops_model_run_failure_alert_sensor", None, 30, "RUNNING"),
    ("mlops_model_last_run_success_sensor", None, 30, "RUNNING"),
    ("mlops_model_last_run_failure_sensor", None, 30, "RUNNING"),
}


def test_checks_jobs_sensors_and_resources_exactly():
    defs = build_model_defs(load_config())
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name, graph.get(k).blocking) for k in graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS
    jobs = {}
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job
        keys = job.asset_layer.executable_asset_keys if job.asset_layer else set()
        order = {k: i for i, k in enumerate(EXPECTED_JOBS.get(job.name, []))}
        jobs[job.name] = sorted((k.to_user_string() for k in keys), key=lambda k: order.get(k, 99))
    assert jobs == EXPECTED_JOBS
    sensors = {
        (
            s.name,
            s.job_name if len(s.targets) == 1 else None,
            s.minimum_interval_seconds,
            s.default_status.value,
        )
        for s in defs.sensors or []
    }
    assert sensors == EXPECTED_SENSORS
    arrivals = next(s for s in defs.sensors if s.name == "mlops_model_new_data_sensor")
    assert sorted(t.job_name for t in arrivals.targets) == ["mlops_model_ingest_job", "mlops_model_run_job"]
    assert not list(defs.schedules or [])
    assert set(defs.resources or {}) == {"project", "partition_io", "run_handoff_io", "mlflow"}


def _labels(cond) -> set[str]:
    found = {cond.get_label()} if cond.get_label() else set()
    for child in getattr(cond, "operands", None) or (
        [cond.operand] if getattr(cond, "operand", None) else []
    ):
        found |= _labels(child)
    return found


def test_automation_respects_the_gates():
    """A gate that failed in one run is never bypassed by a later automatic run."""
    graph = build_model_defs(load_config()).resolve_asset_graph()
    for name in ("validated_data", "features", "trained_model", "deployed_model"):
        cond = graph.get(dg.AssetKey(["mlops_model", name])).automation_condition
        assert "all_deps_blocking_checks_passed" in _labels(cond), name


def test_the_mlflow_resource_schema_is_dagster_mlflows():
    """Spelled out so the definitions load without importing MLflow; it must stay dagster-mlflow's own."""
    from dagster_mlflow.resources import CONFIG_SCHEMA

    from mlops_assets.defs.resources import MLFLOW_CONFIG_SCHEMA

    def shape(schema):
        return {
            k: (f.is_required, f.default_provided and f.default_value, type(f.config_type).__name__)
            for k, f in schema.items()
        }

    assert shape(MLFLOW_CONFIG_SCHEMA) == shape(CONFIG_SCHEMA)


ROOT = Path(__file__).resolve().parents[1]


def _dg(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """`dg` (dagster-dg-cli) as a user runs it in the repository, on fresh storage and no DAGSTER_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(home), VIRTUAL_ENV=sys.prefix)
    dg_bin = Path(sys.executable).parent / "dg"
    return subprocess.run(
        [str(dg_bin), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_dg_checks_and_lists_the_project_definitions(tmp_path):
    checked = _dg(["check", "defs"], tmp_path / "home")
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = _dg(["list", "defs", "--json"], tmp_path / "home")
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assert {a["asset_key"] for a in defs["assets"]} == set(EXPECTED_ASSETS)
    assert {s["name"] for s in defs["sensors"]} >= {name for name, *_ in EXPECTED_SENSORS}
    assert {j["name"] for j in defs["jobs"]} == set(EXPECTED_JOBS)
    assert not list(ROOT.glob(".tmp_dagster_home_*"))  # dg's temporary instance is gone
