"""The Dagster instance names the champion MLflow has after every move: ``mlops-assets rollback`` (a real
subprocess), the rollback job, and an alias moved by hand in MLflow (the champion sensor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops_assets.config import load_config
from mlops_assets.defs.champion import (
    OUTSIDE_REASON,
    champion_sensor_name,
    deployed_key,
    recorded_champion,
)
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.registry.model_registry import CHAMPION, ModelRegistry
from mlops_assets.runner import instance_for
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import gate_passed, rainfall_xy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg():
    return load_config()  # the bundled config: model "mlops_model"


@pytest.fixture
def deployed(cfg, isolated_storage):
    """Two registered versions, v1 then v2 promoted: v2 is champion, v1 previous."""
    storage = storage_from_env()
    reg = ModelRegistry.from_config(cfg, storage)
    X, y = rainfall_xy()
    versions = []
    for rows in (400, 900):
        model = Pipeline([("model", LogisticRegression(max_iter=200))]).fit(X.iloc[:rows], y.iloc[:rows])
        versions.append(
            reg.register(model, input_example=X.head(3), feature_version=reg.feature_version).version
        )
    gate_passed(reg, *versions)  # the champion guard moves only versions the gates cleared
    reg.promote(versions[0], reason="initial", run_id=None)
    reg.promote(versions[1], reason="drift", run_id=None)
    return storage, reg, versions


def _metadata(instance: dg.DagsterInstance, model_name: str) -> dict:
    event = instance.get_latest_materialization_event(deployed_key(model_name))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_cli_rollback_records_the_new_champion_on_deployed_model(cfg, deployed):
    storage, reg, (v1, v2) = deployed
    instance_for(storage).dispose()  # the instance a run would have made
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(storage.home), PYTHONPATH=str(ROOT))

    proc = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "rollback"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    with dg.DagsterInstance.from_config(str(storage.dagster_home)) as instance:
        meta = _metadata(instance, cfg.model.name)
    assert meta["champion_version"] == v1
    assert meta["previous"] == v2 and meta["reason"] == "rollback"
    assert meta["recorded_by"] == "mlops-assets rollback"
    assert reg.client.get_model_version_by_alias(reg.model_name, CHAMPION).version == int(v1)


def test_rollback_job_records_the_new_champion_on_deployed_model(cfg, deployed):
    storage, _, (v1, _v2) = deployed
    defs = build_model_defs(cfg)
    with dg.instance_for_test() as instance:
        result = defs.get_job_def(f"{cfg.model.name}_rollback_job").execute_in_process(instance=instance)
        assert result.success
        assert recorded_champion(instance, cfg.model.name) == v1
        assert _metadata(instance, cfg.model.name)["recorded_by"] == f"{cfg.model.name}_rollback_job"


def test_champion_sensor_records_an_alias_moved_by_hand_once(cfg, deployed):
    storage, reg, (v1, v2) = deployed
    sensor = build_model_defs(cfg).get_sensor_def(champion_sensor_name(cfg.model.name))
    project = MlopsProject()
    with dg.instance_for_test() as instance:

        def tick():
            ctx = dg.build_sensor_context(instance=instance, resources={"project": project})
            result = sensor.evaluate_tick(ctx)
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
            return result

        # Nothing recorded yet: the history's newest move (v2, drift) is recorded.
        first = tick()
        assert len(first.asset_events) == 1
        assert _metadata(instance, cfg.model.name)["champion_version"] == v2
        assert _metadata(instance, cfg.model.name)["reason"] == "drift"
        assert tick().asset_events == []  # in agreement: nothing more

        # A person sets the alias in MLflow, bypassing mlops_assets and its history.
        reg.client.set_registered_model_alias(reg.model_name, CHAMPION, v1)
        moved = tick()
        assert len(moved.asset_events) == 1
        meta = _metadata(instance, cfg.model.name)
        assert meta["champion_version"] == v1 and meta["previous"] == v2
        assert meta["reason"] == OUTSIDE_REASON
        assert tick().asset_events == []
