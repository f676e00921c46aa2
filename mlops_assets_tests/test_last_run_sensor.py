"""The last-run sensors: a run of the model's jobs that `mlops-assets run` did not execute (the daemon's ingest or
retrain, a run launched from the UI) is what `status` shows as the last run once it ends, a data gate that blocked
it included; a run that ended earlier never replaces the one recorded, and `run`'s own runs are left to `run`.

Each test executes the ingest job in process on an instance, as the daemon's run worker would (with the tag the
daemon gives a sensor's run), and evaluates the sensors the definitions hold with a run-status sensor context.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import SENSOR_NAME_TAG

from mlops_assets.commands.status import render_text, status
from mlops_assets.config import MlopsConfig, load_config
from mlops_assets.defs.factory import add_periods, build_model_defs, ingest_job_name, period_partitions
from mlops_assets.defs.ingestion import RANGE_END, RANGE_START, new_data_sensor_name
from mlops_assets.defs.last_run_sensor import RECORDED_BY_TAG
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.last_run import read_last_run, record_last_run
from mlops_assets.storage import storage_from_env

NULL_GATE = "raw_data_null_fraction_within_limit"


def _corrupt_last_month(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest month's temperatures lost: the null-fraction gate blocks it."""
    return frame.assign(
        temperature=np.where(
            frame["date"] >= pd.Timestamp("1950-12-01", tz="UTC"), np.nan, frame["temperature"]
        )
    )


class Model:
    """One model's definitions on an instance, with its ingest job run in process as the new-data sensor's run."""

    def __init__(self, path: Path, years: int = 2):
        self.path = path
        self.cfg: MlopsConfig = load_config(path)
        self.defs = build_model_defs(self.cfg, config_path=str(path))
        self.instance = dg.DagsterInstance.ephemeral()
        self.project = MlopsProject(config_path=str(path))
        self.keys = [f"{y}-{m:02d}" for y in range(1949, 1949 + years) for m in range(1, 13)]
        add_periods(self.instance, period_partitions(self.cfg), self.keys)

    def ingest(self, by_sensor: bool = True, run_id: str | None = None, **tags: str) -> dg.DagsterRun:
        """The ingest job over every month, launched by the new-data sensor (its tag) or by hand."""
        job = self.defs.resolve_job_def(ingest_job_name(self.cfg))
        if by_sensor:
            tags[SENSOR_NAME_TAG] = new_data_sensor_name(self.cfg)
        result = job.execute_in_process(
            instance=self.instance,
            tags={RANGE_START: self.keys[0], RANGE_END: self.keys[-1], **tags},
            raise_on_error=False,
            run_id=run_id,
        )
        run = self.instance.get_run_by_id(result.run_id)
        assert run is not None
        return run

    def sense(self, run: dg.DagsterRun) -> None:
        """Evaluate the last-run sensor for ``run``'s end, as the daemon does."""
        failed = run.status == dg.DagsterRunStatus.FAILURE
        kind = "failure" if failed else "success"
        name = f"{self.cfg.model.name}_last_run_{kind}_sensor"
        [sensor] = [s for s in self.defs.sensors or [] if s.name == name]
        event_type = DagsterEventType.RUN_FAILURE if failed else DagsterEventType.RUN_SUCCESS
        [entry] = self.instance.all_logs(run.run_id, of_type=event_type)
        assert entry.dagster_event is not None
        ctx = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=entry.dagster_event,
            dagster_instance=self.instance,
            dagster_run=run,
            resources={"project": self.project},
        )
        sensor(ctx.for_run_failure() if failed else ctx)

    def status_text(self) -> str:
        return render_text(status(self.cfg, storage_from_env(), triggers=False))


def test_a_daemon_ingest_blocked_by_a_data_gate_is_the_last_run_status_shows(rainfall_slice, capsys):
    path, _ = rainfall_slice(years=2, name="sensed", mutate=_corrupt_last_month)
    model = Model(path)
    home = storage_from_env().ensure().home
    # An earlier `mlops-assets run` that went well: what status showed before the daemon's run.
    earlier = datetime.now(UTC) - timedelta(hours=1)
    record_last_run(
        home, "sensed", {"status": "ok", "checks": []}, finished_at=earlier, trigger="mlops-assets run"
    )

    run = model.ingest()
    assert run.status == dg.DagsterRunStatus.FAILURE  # the gate stops the run
    model.sense(run)

    last = read_last_run(home, "sensed")
    assert last is not None
    assert (last["status"], last["run_id"], last["job"]) == ("blocked", run.run_id, "sensed_ingest_job")
    assert last["trigger"] == "sensor sensed_new_data_sensor"
    assert (last["partitions"], last["partition_range"]) == (24, ["1949-01", "1950-12"])
    assert [c["check"] for c in last["failed_checks"]] == [NULL_GATE]
    assert last["failed_checks"][0]["blocking"] and "1950-12" in last["failed_checks"][0]["metadata"].get(
        "failing_partitions", []
    )
    assert last["trained_version"] is None and last["error"] is None
    assert datetime.fromisoformat(last["finished_at"]) > earlier

    lines = model.status_text().splitlines()
    assert lines[1].startswith(
        "last run (ingest, by the daemon (sensor sensed_new_data_sensor)): BLOCKED at "
    ), lines
    assert "24 partitions 1949-01..1950-12" in lines[1]
    assert any(line.strip().startswith(f"BLOCKED {NULL_GATE}") and "1950-12" in line for line in lines)

    # The command line says the same.
    from mlops_assets.cli import main

    assert main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "last run (ingest, by the daemon (sensor sensed_new_data_sensor)): BLOCKED" in out
    assert f"BLOCKED {NULL_GATE}" in out


def test_a_successful_run_is_recorded_and_an_older_one_never_replaces_it(rainfall_slice, rainfall):
    path, frame = rainfall_slice(years=2, name="sensed", mutate=_corrupt_last_month)
    model = Model(path)
    home = storage_from_env().ensure().home
    blocked = model.ingest()
    assert blocked.status == dg.DagsterRunStatus.FAILURE
    # The source is put right; the next ingest (launched by hand in the UI) passes every gate.
    clean = rainfall[rainfall["date"] < pd.Timestamp("1951-01-01", tz="UTC")]
    clean.assign(date=clean["date"].dt.strftime("%Y-%m-%d")).to_csv(path.parent / "sensed.csv", index=False)
    ok = model.ingest(by_sensor=False)
    assert ok.status == dg.DagsterRunStatus.SUCCESS

    model.sense(ok)
    last = read_last_run(home, "sensed")
    assert last is not None
    assert (last["status"], last["run_id"], last["trigger"], last["failed_checks"]) == (
        "ok",
        ok.run_id,
        "manual",
        [],
    )
    assert last["checks_passed"] > 0 and last["partitions"] == 24
    assert (
        model.status_text()
        .splitlines()[1]
        .startswith("last run (ingest, launched by hand in Dagster): OK at ")
    )

    # The daemon catching up on the blocked run, which ended first: the newer record stays.
    model.sense(blocked)
    assert read_last_run(home, "sensed") == last

    # A run `mlops-assets run` executes (and records itself) carries its own id in a tag: left alone, however
    # recent.
    run_id = str(uuid.uuid4())
    own = model.ingest(by_sensor=False, run_id=run_id, **{RECORDED_BY_TAG: run_id})
    assert own.status == dg.DagsterRunStatus.SUCCESS
    model.sense(own)
    assert read_last_run(home, "sensed") == last


@pytest.mark.slow
def test_a_drift_retrain_by_the_daemon_is_recorded_with_the_version_it_trained(rainfall_slice):
    from mlops_assets.defs.model_assets import REASON_TAG
    from mlops_assets.defs.retraining import retrain_job_name, sensor_name
    from mlops_assets.registry.model_registry import ModelRegistry

    path, _ = rainfall_slice(years=3, name="sensed")
    model = Model(path, years=3)
    assert model.ingest().status == dg.DagsterRunStatus.SUCCESS
    # The retrain the drift sensor launches: its reason and its sensor's name as tags.
    result = model.defs.resolve_job_def(retrain_job_name(model.cfg)).execute_in_process(
        instance=model.instance,
        tags={REASON_TAG: "drift", SENSOR_NAME_TAG: sensor_name(model.cfg, "drift")},
        raise_on_error=False,
    )
    run = model.instance.get_run_by_id(result.run_id)
    assert run is not None
    model.sense(run)

    registry = ModelRegistry("sensed", storage_from_env())
    [version] = [str(v.version) for v in registry.client.search_model_versions("name='sensed'")]
    last = read_last_run(storage_from_env().home, "sensed")
    assert last is not None
    assert (last["run_id"], last["job"], last["reason"], last["trained_version"]) == (
        run.run_id,
        "sensed_retrain_job",
        "drift",
        version,
    )
    assert last["status"] == ("ok" if result.success else "blocked"), last
    assert last["partitions"] is None and last["checks_passed"] > 0
    lines = model.status_text().splitlines()
    assert lines[1].startswith(
        f"last run (drift retrain, by the daemon (sensor sensed_drift_retrain_sensor)): {last['status'].upper()} at "
    ), lines
    assert f"  trained version {version}" in lines
