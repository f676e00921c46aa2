"""The drift check and the retraining sensors on a real run: a champion trained on four years of the rainfall data,
then half a year whose dew point and pressure shifted (the kind of change the early 1980s brought)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.defs.retraining import retrain_job_name, sensor_name
from mlops_assets.images import MAX_BYTES
from mlops_assets.monitoring.policy import DriftObservation
from mlops_assets.monitoring.replay import DRIFT_CHECK
from mlops_assets.monitoring.state import (
    PROFILE_ARTIFACT,
    TAG_DATA_THROUGH,
    LogEntry,
    MonitoringLog,
    RegistryFacts,
    latest_per_partition,
    policy_state,
)
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import execute
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import gate_passed


def _shift(start: str):
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        late = frame["date"] >= pd.Timestamp(start, tz="UTC")
        frame.loc[late, "dew point"] = frame.loc[late, "dew point"] + 1.5
        frame.loc[late, "sea-level pressure"] = frame.loc[late, "sea-level pressure"] * 0.4
        return frame

    return mutate


def _sensor_context(instance, path: Path, cursor: str | None = None):
    return dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"project": MlopsProject(config_path=str(path))}
    )


@pytest.mark.slow
def test_drift_check_feeds_the_drift_sensor_whose_run_retrains_for_drift(rainfall_slice):
    # No cooldown: the champion was trained seconds ago, and storm control is the policy's own tested business.
    path, frame = rainfall_slice(years=5, name="drifty", retraining={"cooldown_days": 0})
    csv = path.parent / "drifty.csv"
    healthy = frame[frame["date"] < pd.Timestamp("1953-01-01", tz="UTC")]
    healthy.assign(date=healthy["date"].dt.strftime("%Y-%m-%d")).to_csv(csv, index=False)
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    instance = dg.DagsterInstance.ephemeral()

    first = execute(cfg, config_file=str(path), storage=storage, instance=instance)
    assert first.status == "ok", first.error
    # No champion while the features were checked: skipped, not passed.
    assert not [c for c in first.checks if c["check"] == DRIFT_CHECK]
    registry = ModelRegistry(cfg.model.name, storage_from_env())
    champion = registry.champion()
    assert champion.tags[TAG_DATA_THROUGH] == "1952-12"
    profile = registry.load_json(champion.version, PROFILE_ARTIFACT)
    assert {"dew point", "__prediction__", "rain"} <= {c["name"] for c in profile["columns"]}

    # Half a year of new, shifted data arrives.
    drifted = _shift("1953-01-01")(frame[frame["date"] < pd.Timestamp("1953-07-01", tz="UTC")])
    drifted.assign(date=drifted["date"].dt.strftime("%Y-%m-%d")).to_csv(csv, index=False)
    cfg = load_config(path)
    second = execute(
        cfg,
        config_file=str(path),
        storage=storage,
        instance=instance,
        selection=["raw_data", "validated_data", "features"],
        partition_keys=("1953-01", "1953-06"),
    )
    assert second.status == "ok", second.error
    [check] = [c for c in second.checks if c["check"] == DRIFT_CHECK]
    assert check.pop("description").startswith("6 of 6 new partition(s) drifted from champion version 1")
    assert check == {
        "asset": "features",
        "check": DRIFT_CHECK,
        "passed": False,
        "severity": "WARN",
        "blocking": False,
        "metadata": {"measured": 6.0, "threshold": 0.0},
    }
    record = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey([cfg.model.name, "features"]), DRIFT_CHECK), limit=1
    )[0]
    md = record.event.dagster_event.event_specific_data.metadata
    per_feature = {f["column"]: f for f in md["per_feature"].value}
    assert per_feature["dew point"]["drifted"] and per_feature["dew point"]["test"] == "ks"
    assert per_feature["dew point"]["p_value_adjusted"] < 0.01
    assert per_feature["dew point"]["distance"] >= per_feature["dew point"]["threshold"]
    assert not per_feature["visibility"]["drifted"]
    plot = Path(md["drift_plot"].value)
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"
    assert plot.is_relative_to(storage.home)
    # The plot shown in the UI too: Markdown with an embedded PNG thumbnail, capped in size.
    image = md["drift_plot_image"]
    assert isinstance(image, dg.MarkdownMetadataValue)
    assert image.value.startswith("![drift plot](data:image/png;base64,")
    payload = image.value.split("base64,", 1)[1].rstrip(")")
    assert len(payload) <= MAX_BYTES and base64.b64decode(payload)[:4] == b"\x89PNG"
    assert set(md["label_drift"].value) == {f"1953-0{m}" for m in range(1, 7)}
    assert all(0.0 <= v <= 1.0 for v in md["champion_roc_auc"].value.values())
    log = MonitoringLog.from_storage(cfg.model.name, storage_from_env()).entries()
    assert [e.partition for e in log] == [f"1953-0{m}" for m in range(1, 7)]

    # The drift sensor asks for a retrain with reason "drift"; the performance sensor leaves it to it.
    defs = build_model_defs(cfg, config_path=str(path))
    drift_sensor = defs.resolve_sensor_def(sensor_name(cfg, "drift"))
    tick = drift_sensor.evaluate_tick(_sensor_context(instance, path))
    [request] = tick.run_requests
    assert request.tags[REASON_TAG] == "drift"
    assert request.run_key == "drift:1:1953-06"
    assert "drift" in request.tags["mlops/decision"]
    assert json.loads(tick.cursor)["log_lines"] == 6
    again = drift_sensor.evaluate_tick(_sensor_context(instance, path, tick.cursor))
    assert again.run_requests == [] and "no new drift results" in again.skip_message
    perf = defs.resolve_sensor_def(sensor_name(cfg, "performance")).evaluate_tick(
        _sensor_context(instance, path)
    )
    assert perf.run_requests == [] and "would retrain for drift" in perf.skip_message

    # Freshness, on the same storage under a config whose maximum model age has passed (drift trigger off).
    stale = cfg.model_copy(
        update={
            "retraining": cfg.retraining.model_copy(
                update={"max_model_age_days": 1e-6, "drift_trigger": False}
            )
        }
    )
    freshness = build_model_defs(stale, config_path=str(path)).resolve_sensor_def(
        sensor_name(cfg, "freshness")
    )
    [stale_request] = freshness.evaluate_tick(_sensor_context(instance, path)).run_requests
    assert stale_request.tags[REASON_TAG] == "freshness" and stale_request.run_key == "freshness:1:1953-06"

    # The requested run retrains and promotes, recording the reason.
    job = defs.resolve_job_def(retrain_job_name(cfg))
    assert job.tags[REASON_TAG] == "manual"  # the UI's default
    result = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
    assert result.success
    history = registry.history()
    assert [(d.version, d.reason) for d in history] == [("1", "initial"), ("2", "drift")]
    # The new champion has seen the new data: the drift of the old one no longer counts, nothing new to retrain on.
    after = drift_sensor.evaluate_tick(_sensor_context(instance, path))
    assert after.run_requests == []
    assert "no trigger fired" in after.skip_message or "newest data version" in after.skip_message
    # ... and the stale-model safety net holds back too: the champion has seen the newest data.
    held = freshness.evaluate_tick(_sensor_context(instance, path))
    assert held.run_requests == [] and "freshness trigger held back" in held.skip_message


def _entry(seq, partition, version, drifted, metric=None):
    return LogEntry(seq, partition, version, drifted, False, metric, 30, "2020-01-01T00:00:00+00:00")


def test_policy_state_keeps_the_live_champions_newest_result_per_partition_in_time_order():
    entries = [
        _entry(0, "2020-02", "1", True),
        _entry(1, "2020-01", "1", False),
        _entry(2, "2020-02", "1", False, 0.7),  # the partition rematerialized and checked again
        _entry(3, "2020-03", "2", True),  # another champion's result
    ]
    assert [(e.partition, e.drifted) for e in latest_per_partition(entries, "1")] == [
        ("2020-01", False),
        ("2020-02", False),
    ]
    facts = RegistryFacts("1", datetime(2019, 12, 31, tzinfo=UTC), "2019-12", 0.8, [], None)
    state = policy_state(
        facts, entries, latest_partition="2020-03", extra_retrain_times=[datetime(2020, 3, 2, tzinfo=UTC)]
    )
    assert state.drift_history == [
        DriftObservation("2020-01", False, False, "1", datetime(2020, 1, 1, tzinfo=UTC)),
        DriftObservation("2020-02", False, False, "1", datetime(2020, 1, 1, tzinfo=UTC)),
    ]
    assert [(o.partition, o.value) for o in state.performance] == [("2020-01", None), ("2020-02", 0.7)]
    assert state.retrain_times == [datetime(2020, 3, 2, tzinfo=UTC)]
    assert state.latest_partition == "2020-03" and state.champion_data_through == "2019-12"


def test_monitoring_log_appends_lines_a_cursor_can_count(tmp_path):
    from mlops_assets.monitoring.drift import DriftReport
    from mlops_assets.monitoring.state import PartitionAssessment

    log = MonitoringLog(tmp_path, "m")
    assert len(log) == 0 and log.entries() == []
    report = DriftReport(
        [], drifted=True, strong=False, n_current=3, alpha=0.01, correction="holm", seasonality="month"
    )
    a = PartitionAssessment("2020-01", "3", report, None, None, 0.75, "roc_auc", 3, 3)
    at = datetime(2020, 2, 1, tzinfo=UTC)
    log.append([a, a], at)
    assert len(log) == 2
    [second] = log.entries(1)
    assert (second.seq, second.partition, second.drifted, second.metric) == (1, "2020-01", True, 0.75)
    assert second.drift_observation().at == at and second.performance_observation().n_rows == 3
    assert timedelta(0) == second.drift_observation().at - at


def _toy_champion(cfg, trained_at: datetime) -> str:
    """A small registered champion trained on 2020-01 (a real pipeline through the real registry)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_assets.monitoring.state import TAG_TRAINED_AT

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200)})
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, (X["x"] > 0).astype(int))
    registry = ModelRegistry(cfg.model.name, storage_from_env())
    version = registry.register(
        model,
        input_example=X.head(3),
        tags={TAG_DATA_THROUGH: "2020-01", TAG_TRAINED_AT: trained_at.isoformat()},
    ).version
    gate_passed(registry, version)  # the champion guard moves only gated versions
    registry.promote(version, reason="initial")
    return version


@pytest.fixture
def performance_setup(rainfall_slice):
    path, _ = rainfall_slice(
        years=1,
        name="perf",
        retraining={"performance_threshold": 0.7, "performance_min_rows": 50, "cooldown_days": 30},
    )
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    version = _toy_champion(cfg, datetime.now(UTC) - timedelta(days=60))
    from mlops_assets.features.stores import offline_store

    store = offline_store(cfg, storage)
    for key in ("2020-01", "2020-02"):
        store.write_partition(
            key, pd.DataFrame({"date": [pd.Timestamp(f"{key}-03", tz="UTC")], "x": [0.1], "rain": [1]})
        )
    return path, cfg, storage, version


def _log_live_predictions(storage, cfg, version: str, n: int = 60) -> None:
    """n labeled predictions from February 2020 that rank the classes backwards (ROC AUC 0)."""
    import uuid

    from mlops_assets.serving.prediction_log import PredictionLog

    log = PredictionLog(storage.prediction_log_url)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    proba = np.linspace(0.05, 0.95, n)
    log.submit(
        [
            {
                "id": i,
                "predicted_at": datetime(2020, 2, 20, tzinfo=UTC),
                "event_time": datetime(2020, 2, 1 + k % 28, tzinfo=UTC),
                "model_name": cfg.model.name,
                "model_version": version,
                "inputs": {"x": float(p)},
                "prediction": int(p >= 0.5),
                "probability": float(p),
            }
            for k, (i, p) in enumerate(zip(ids, proba, strict=True))
        ]
    )
    log.attach_labels(ids, [int(p < 0.5) for p in proba])
    log.close()


def test_performance_sensor_acts_on_the_live_prediction_log(performance_setup):
    path, cfg, storage, version = performance_setup
    instance = dg.DagsterInstance.ephemeral()
    defs = build_model_defs(cfg, config_path=str(path))
    sensor = defs.resolve_sensor_def(sensor_name(cfg, "performance"))
    quiet = sensor.evaluate_tick(_sensor_context(instance, path))
    assert quiet.run_requests == [] and "no trigger fired" in quiet.skip_message
    assert json.loads(quiet.cursor)["live_labels"] == 0

    _log_live_predictions(storage, cfg, version)
    tick = sensor.evaluate_tick(_sensor_context(instance, path, quiet.cursor))
    [request] = tick.run_requests
    assert request.tags[REASON_TAG] == "performance"
    assert request.run_key == f"performance:{version}:2020-02"
    assert "roc_auc 0.000 on 60 labeled rows is below 0.7" in request.tags["mlops/decision"]
    assert json.loads(tick.cursor)["live_labels"] == 60
    # Nothing new since: not evaluated again. The drift sensor leaves the decision to the performance sensor.
    again = sensor.evaluate_tick(_sensor_context(instance, path, tick.cursor))
    assert again.run_requests == [] and "no new performance results" in again.skip_message
    drift = defs.resolve_sensor_def(sensor_name(cfg, "drift")).evaluate_tick(_sensor_context(instance, path))
    assert drift.run_requests == [] and "no new drift results" in drift.skip_message

    # A retrain in flight: no second request, whatever the policy says.
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    instance.add_run(
        DagsterRun(job_name=retrain_job_name(cfg), run_id="inflight", status=DagsterRunStatus.STARTED)
    )
    busy = sensor.evaluate_tick(_sensor_context(instance, path))
    assert busy.run_requests == [] and "in flight (run inflight)" in busy.skip_message
