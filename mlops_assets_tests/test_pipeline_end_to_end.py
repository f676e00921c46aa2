"""The whole graph in-process on a slice of the real data: a clean run deploys; corrupt batches stop early."""

import json
import subprocess
import sys

import dagster as dg
import numpy as np
import pytest

from mlops_assets.config import load_config
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import build_report, execute
from mlops_assets.storage import storage_from_env


def materialized(instance, name, model):
    return instance.get_latest_materialization_event(dg.AssetKey([model, name])) is not None


def run(config_path, **kw):
    cfg = load_config(config_path)
    storage = storage_from_env().ensure()
    instance = dg.DagsterInstance.ephemeral()
    outcome = execute(cfg, config_file=str(config_path), storage=storage, instance=instance, **kw)
    return cfg, instance, outcome


@pytest.mark.slow
def test_clean_run_trains_gates_and_deploys_then_a_rerun_is_safe(rainfall_slice):
    path, frame = rainfall_slice(years=3)
    cfg, instance, outcome = run(path)
    assert outcome.status == "ok", outcome.error
    assert outcome.partitions == 36
    names = {c["check"] for c in outcome.checks}
    assert {"raw_data_has_expected_columns", "trained_model_passes_metric_floors"} <= names
    assert all(c["passed"] for c in outcome.checks)
    report = build_report(cfg, outcome, ModelRegistry(cfg.model.name, storage_from_env()))
    assert report["champion"]["version"] == "1"
    assert 0.6 < report["champion"]["metrics"]["roc_auc"] <= 1.0
    # The champion is the refit on the newest data: 36 months (the training window) up to the newest labeled month,
    # although the gates judged the recipe fitted before the validation and holdout windows.
    assert report["champion"]["trained_window"] == {"start": "1949-01", "end": "1951-12"}
    assert 0 < report["champion"]["threshold"] < 1
    assert [d["reason"] for d in report["deployments"]] == ["initial"]
    assert report["retrains"][0]["reason"] == "initial"
    json.dumps(report)
    registry = ModelRegistry(cfg.model.name, storage_from_env())
    version = registry.client.get_model_version(cfg.model.name, "1")
    assert version.description.startswith("# Model card: rain_slice version 1")
    assert "- Data window: 1949-01..1951-12 (data up to 1952-01-01" in version.description
    assert float(version.tags["mlops.decision_threshold"]) == report["champion"]["threshold"]
    artifacts = {a.path for a in registry.client.list_artifacts(version.run_id, "plots")}
    assert {"plots/roc_curve.png", "plots/confusion_matrix.png"} <= artifacts
    assert registry.client.get_run(version.run_id).info.status == "FINISHED"  # not left RUNNING
    # Running again on unchanged data: partitions replaced, nothing to learn, so no version and no promotion.
    cfg, instance2, again = run(path)
    assert again.status == "ok", again.error
    report = build_report(cfg, again, registry)
    assert (report["unchanged_champion_version"], report["retrains"]) == ("1", [])
    assert [d["version"] for d in report["deployments"]] == ["1"]
    assert [str(v.version) for v in registry.client.search_model_versions(f"name='{cfg.model.name}'")] == [
        "1"
    ]
    # Forced: a new challenger, promoted only through the gates.
    cfg, instance2, second = run(path, force=True)
    assert second.status == "ok", second.error
    report = build_report(cfg, second, registry)
    assert report["champion"]["version"] == "2"
    assert [d["version"] for d in report["deployments"]] == ["1", "2"]
    assert any(c["check"] == "trained_model_passes_no_regression" and c["passed"] for c in second.checks)
    # Once a champion exists, the data contract is learned from its training window.
    contract = json.loads((storage_from_env().home / cfg.model.name / "data_contract.json").read_text())
    assert contract["reference"]["source"] == "champion training window"
    assert contract["reference"]["first"] == "1949-01"


def _rename(frame):
    return frame.rename(columns={"dew point": "dewPoint"})


def _as_text(frame):
    frame = frame.copy()
    frame["temperature"] = [f"{v:.2f} C" for v in frame["temperature"]]
    return frame


def _outliers(frame):
    frame = frame.copy()
    frame.loc[frame.index[-200::2], "visibility"] = 999_999_999.0
    return frame


def _nulls(frame):
    frame = frame.copy()
    mask = np.random.default_rng(1).random(len(frame)) < 0.8
    frame.loc[mask & (frame.index > len(frame) - 120), "dew point"] = np.nan
    return frame


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (_rename, "raw_data_has_expected_columns"),
        (_as_text, "raw_data_has_expected_dtypes"),
        (_outliers, "raw_data_values_plausible"),
        (_nulls, "raw_data_null_fraction_within_limit"),
    ],
)
def test_corrupt_batch_is_blocked_before_anything_downstream(rainfall_slice, mutate, check):
    # A healthy history first, then the source turns bad (the four stories of the requirements document).
    path, frame = rainfall_slice(years=3, name="corrupt")
    cfg, _, first = run(path)
    assert first.status == "ok", first.error
    from mlops_assets.registry.model_registry import ModelRegistry

    champion = ModelRegistry(cfg.model.name, storage_from_env()).champion().version
    corrupt = mutate(frame)
    corrupt.assign(date=corrupt["date"].dt.strftime("%Y-%m-%d")).to_csv(
        path.parent / "corrupt.csv", index=False
    )
    cfg, _, outcome = run(path)
    assert outcome.status == "blocked", outcome.error
    failed = [c["check"] for c in outcome.checks if not c["passed"]]
    assert check in failed
    assert all(name.startswith("raw_data") for name in failed)
    assert outcome.materialized == ["raw_data"]  # kept for inspection; nothing downstream
    assert ModelRegistry(cfg.model.name, storage_from_env()).champion().version == champion


@pytest.mark.slow
def test_cli_run_writes_the_report_and_config_errors_exit_2(rainfall_slice, tmp_path, isolated_storage):
    path, _ = rainfall_slice(years=3, name="cli")
    report = tmp_path / "out" / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_assets.cli",
            "run",
            "--config",
            str(path),
            "--report",
            str(report),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["status"] == "ok", proc.stdout
    assert data["partitions"] == 36
    assert data["champion"]["model_name"] == "cli"
    assert "champion: cli version 1" in proc.stdout
    assert (isolated_storage / "dagster").is_dir()  # the instance lives under MLOPS_HOME
    assert not (tmp_path / "mlruns").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("label_column: rain", "label_column: rain\n  colour: blue"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "unknown key 'dataset.colour'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    missing = tmp_path / "missing.yaml"
    missing.write_text(path.read_text().replace("cli.csv", "nowhere.csv"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "run", "--config", str(missing)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "nowhere.csv" in proc.stderr and "file not found" in proc.stderr


@pytest.mark.slow
def test_rollback_job_moves_the_champion_back(rainfall_slice):
    path, _ = rainfall_slice(years=3, name="rb")
    cfg, instance, first = run(path)
    assert first.status == "ok", first.error
    from mlops_assets.defs.factory import build_model_defs
    from mlops_assets.registry.model_registry import ModelRegistry

    defs = build_model_defs(cfg, config_path=str(path))
    job = defs.resolve_job_def("rb_rollback_job")
    failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success  # nothing to roll back to yet: a clear failure, champion untouched
    assert "no previous champion" in str(failed.all_events)
    assert ModelRegistry("rb", storage_from_env()).champion().version == "1"
    _, _, second = run(path, force=True)  # a second version on purpose (the data is unchanged)
    assert second.status == "ok", second.error
    assert ModelRegistry("rb", storage_from_env()).champion().version == "2"
    ok = job.execute_in_process(instance=instance)
    assert ok.success
    registry = ModelRegistry("rb", storage_from_env())
    assert registry.champion().version == "1"
    assert [(d.version, d.reason) for d in registry.history()] == [
        ("1", "initial"),
        ("2", "manual"),
        ("1", "rollback"),
    ]
