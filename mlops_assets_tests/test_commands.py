"""The typed command functions (``rollback``, ``status``) on a real SQLite MLflow store, without argparse; the
MLflow-free alias path against MLflow's own client; and ``mlops-assets rollback`` as a real subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops_assets.commands.rollback import RollbackOutcome, rollback
from mlops_assets.commands.status import render_text, status
from mlops_assets.config import load_config
from mlops_assets.registry import ArtifactIntegrityError, NothingToRollBackError, UnknownVersionError
from mlops_assets.registry.model_registry import CHAMPION, PREVIOUS, TAG_SHA256, ModelRegistry
from mlops_assets.registry.sql_aliases import SCHEMA_REVISION, SqlAliasStore, sql_alias_store
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import gate_passed, rainfall_xy

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=2)
def _model(rows: int) -> Pipeline:
    X, y = rainfall_xy()
    return Pipeline([("model", LogisticRegression(max_iter=200))]).fit(X.iloc[:rows], y.iloc[:rows])


@pytest.fixture
def cfg():
    return load_config()  # the bundled config: model "mlops_model"


@pytest.fixture
def storage(isolated_storage):
    return storage_from_env()


def _two_deployed(cfg, storage) -> tuple[ModelRegistry, str, str]:
    reg = ModelRegistry.from_config(cfg, storage)
    X, _ = rainfall_xy()
    fv = reg.feature_version
    v1 = reg.register(
        _model(400), input_example=X.head(3), metrics={"roc_auc": 0.61}, feature_version=fv
    ).version
    v2 = reg.register(
        _model(900), input_example=X.head(3), metrics={"roc_auc": 0.72}, feature_version=fv
    ).version
    gate_passed(reg, v1, v2)  # the champion guard moves only gated versions
    reg.promote(v1, reason="initial", run_id="run-a")
    reg.promote(v2, reason="drift", run_id="run-b")
    return reg, v1, v2


# ------------------------------------------------------------------------------------------------ typed functions


def test_rollback_moves_champion_and_records_it(cfg, storage):
    reg, v1, v2 = _two_deployed(cfg, storage)

    out = rollback(cfg, storage, reason="bad latency")

    assert out == RollbackOutcome(
        model_name="mlops_model",
        version=v1,
        previous_version=v2,
        deployed_at=out.deployed_at,
        reason="bad latency",
        moved_by=out.moved_by,
    )
    assert out.moved_by.startswith("cli:")
    assert reg.aliases()[CHAMPION] == v1 and reg.aliases()[PREVIOUS] == v2
    last = reg.history()[-1]
    assert (last.version, last.previous_version, last.reason) == (v1, v2, "bad latency")
    # The metrics recorded with the move are the target's MLflow run metrics.
    assert last.metrics == {"roc_auc": 0.61}
    # A second rollback without --to undoes the first.
    assert rollback(cfg, storage).version == v2
    assert reg.champion().version == v2


def test_rollback_refusals(cfg, storage):
    with pytest.raises(NothingToRollBackError, match="no previous champion"):
        rollback(cfg, storage)
    reg, v1, v2 = _two_deployed(cfg, storage)
    with pytest.raises(UnknownVersionError, match=rf"no version 77 \(registered versions: {v1}, {v2}\)"):
        rollback(cfg, storage, to="77")
    # A version not registered through mlops_assets (no sha256 tag) never becomes champion.
    source = reg.client.get_model_version_download_uri(reg.model_name, v1)
    foreign = reg.client.create_model_version(reg.model_name, source, run_id=reg.get_version(v1).run_id)
    with pytest.raises(ArtifactIntegrityError, match="no recorded sha256"):
        rollback(cfg, storage, to=str(foreign.version))
    assert reg.champion().version == v2 and len(reg.history()) == 2


def test_status_reports_champion_history_gates_and_triggers(cfg, storage):
    reg, v1, v2 = _two_deployed(cfg, storage)
    reg.record_gate_results(v2, [{"gate": "latency", "passed": False, "message": "p99 120 ms > 50 ms"}])
    rollback(cfg, storage)
    now = datetime(2030, 1, 1, tzinfo=UTC)

    report = status(cfg, storage, now=now)

    assert report.model_name == "mlops_model"
    assert report.champion["version"] == v1 and report.champion["metrics"] == {"roc_auc": 0.61}
    assert report.aliases[CHAMPION] == v1 and report.aliases[PREVIOUS] == v2
    assert [d["reason"] for d in report.deployments] == ["initial", "drift", "rollback"]
    assert report.latest_gate_results["version"] == v2
    assert report.triggers.evaluated_at == "2030-01-01T00:00:00+00:00"
    assert isinstance(report.triggers.would_retrain, bool)
    assert report.to_dict()["triggers"]["detail"] == report.triggers.detail
    text = render_text(report)
    assert f"champion: version {v1} (roc_auc 0.6100)" in text
    assert "FAIL  latency: p99 120 ms > 50 ms" in text
    assert "triggers now:" in text

    assert status(cfg, storage, history_limit=1, triggers=False).deployments[0]["reason"] == "rollback"
    assert "triggers now:" not in render_text(status(cfg, storage, triggers=False))


# ------------------------------------------------------------------------------------------------ MLflow-free path


def test_sql_alias_store_reads_what_mlflow_reads(cfg, storage):
    reg, v1, v2 = _two_deployed(cfg, storage)
    store = sql_alias_store(storage.mlflow_tracking_uri)
    assert store is not None

    assert store.aliases(reg.model_name) == reg.aliases()
    assert store.aliases("no_such_model") == {}
    for v in (v1, v2):
        mv, row = reg.client.get_model_version(reg.model_name, v), store.model_version(reg.model_name, v)
        assert (row.version, row.run_id, row.source, row.tags) == (
            str(mv.version),
            mv.run_id,
            mv.source,
            mv.tags,
        )
        assert store.run_metrics(mv.run_id) == reg.client.get_run(mv.run_id).data.metrics
    assert store.model_version(reg.model_name, "99") is None
    assert store.versions(reg.model_name) == [v1, v2]

    # An alias moved here is what MLflow's client sees.
    assert store.set_alias(reg.model_name, "challenger", v1) is True
    assert reg.client.get_model_version_by_alias(reg.model_name, "challenger").version == int(v1)
    assert store.set_alias(reg.model_name, "challenger", "99") is False
    assert reg.client.get_model_version_by_alias(reg.model_name, "challenger").version == int(v1)


def test_light_registry_rolls_back_like_the_full_one(cfg, storage):
    reg, v1, v2 = _two_deployed(cfg, storage)
    light = ModelRegistry.from_config(cfg, storage, light=True)
    assert "client" not in light.__dict__  # built lazily: no MlflowClient yet

    d = light.rollback()

    assert "client" not in light.__dict__  # the whole rollback ran without it
    assert reg.client.get_registered_model(reg.model_name).aliases == {
        CHAMPION: int(v1),
        PREVIOUS: int(v2),
        "challenger": int(v2),
    }
    assert (d.version, d.previous_version, d.metrics) == (v1, v2, {"roc_auc": 0.61})
    assert light.champion() == reg.champion()
    assert light.get_version(v2).tags[TAG_SHA256] == reg.get_version(v2).tags[TAG_SHA256]


@pytest.mark.postgres
def test_light_rollback_on_a_postgresql_tracking_store(cfg, isolated_storage, pg_database):
    storage = storage_from_env({"MLOPS_HOME": str(isolated_storage), "MLFLOW_TRACKING_URI": pg_database})
    reg, v1, v2 = _two_deployed(cfg, storage)
    assert sql_alias_store(pg_database) is not None
    light = ModelRegistry.from_config(cfg, storage, light=True)

    d = light.rollback(reason="rollback")

    assert "client" not in light.__dict__
    assert (d.version, d.previous_version, d.metrics) == (v1, v2, {"roc_auc": 0.61})
    assert reg.client.get_model_version_by_alias(reg.model_name, CHAMPION).version == int(v1)
    assert reg.client.get_model_version_by_alias(reg.model_name, PREVIOUS).version == int(v2)
    assert light.champion() == reg.champion()


def test_schema_revision_is_the_installed_mlflow_head():
    """Fails on an MLflow upgrade that adds a migration: re-check sql_aliases' queries against the new schema,
    then update SCHEMA_REVISION. (Until then the registry falls back to the MLflow client, so nothing breaks.)"""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config("sqlite://"))
    assert script.get_heads() == [SCHEMA_REVISION]


def test_sql_alias_store_only_on_databases_it_knows(tmp_path, storage):
    assert sql_alias_store(storage.mlflow_tracking_uri) is not None  # the migrated store of this test
    assert sql_alias_store("http://127.0.0.1:5000") is None
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert sql_alias_store(f"sqlite:///{missing}") is None
    assert not missing.exists()  # never creates a database
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    assert sql_alias_store(f"sqlite:///{other}") is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert sql_alias_store(f"sqlite:///{empty}") is None
    assert SqlAliasStore(f"sqlite:///{empty}").path == empty


# ------------------------------------------------------------------------------------------------ the real CLI


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_"))}
    env.update(MLOPS_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlops_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def test_rollback_command_in_a_subprocess_imports_no_heavy_package(cfg, storage):
    reg, v1, v2 = _two_deployed(cfg, storage)

    proc = _cli(["rollback"], storage.home)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"mlops_model: champion is now version {v1} (was version {v2})" in proc.stdout
    assert reg.client.get_model_version_by_alias(reg.model_name, CHAMPION).version == int(v1)
    assert reg.history()[-1].reason == "rollback"
    heavy = _imported(proc.stderr) & {
        "mlflow",
        "pandas",
        "numpy",
        "sklearn",
        "scipy",
        "dagster",
        "sqlalchemy",
    }
    assert heavy == set()

    refused = _cli(["rollback", "--to", "77"], storage.home)
    assert refused.returncode == 1
    assert f"no version 77 (registered versions: {v1}, {v2})" in refused.stderr
    assert reg.client.get_model_version_by_alias(reg.model_name, CHAMPION).version == int(v1)


def test_rollback_command_without_any_state_says_so_and_creates_nothing(tmp_path):
    """A fresh MLOPS_HOME: nothing has run there, so the command says what to run instead of creating an empty
    MLflow store to report an empty registry from."""
    proc = _cli(["rollback"], tmp_path / "fresh")
    assert proc.returncode == 1
    assert "no state yet" in proc.stderr and "run `mlops-assets run` first" in proc.stderr
    assert "mlflow" not in _imported(proc.stderr)
    assert not (tmp_path / "fresh").exists()


def test_champion_fit_reads_window_threshold_and_age_from_tags():
    from datetime import UTC, datetime

    from mlops_assets.registry.tags import champion_fit

    now = datetime(2026, 12, 2, tzinfo=UTC)
    fit = champion_fit(
        {
            "mlops.trained_window": "1995-10..1998-09",
            "mlops.decision_threshold": "0.238",
            "mlops.trained_at": "2026-11-30T00:00:00+00:00",
        },
        now,
    )
    assert fit["trained_window"] == {"start": "1995-10", "end": "1998-09"} and fit["threshold"] == 0.238
    assert fit["age_days"] == 2.0
    assert fit["data_age_days"] == (now - datetime(1998, 9, 1, tzinfo=UTC)).days
    assert champion_fit({}, now) == {
        "trained_window": None,
        "threshold": None,
        "trained_at": None,
        "age_days": None,
        "data_age_days": None,
    }
