"""The loop survives its own faults on the embedded default: concurrent runs on one MLOPS_HOME, runs killed while
holding the promotion slot or killed inside the champion move, a killed retrain under the sensors, a tampered
artifact at rollback, damaged stored partitions, an unreachable or stopped registry database, a full disk under the
offline store, two rollbacks at once and a one-class holdout.

Most cases are plain-function tests on real stores; the CLI runs as a real subprocess where the fault lives in the
process (signals, kill -9, two runs at once) or in what a person reads (one-line errors).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from mlops_assets.config import load_config
from mlops_assets.defs.model_assets import PROMOTION_POOL
from mlops_assets.defs.resources import MlopsProject, RunHandoffIOManager
from mlops_assets.defs.run_liveness import reap_dead_runs
from mlops_assets.processes import process_alive
from mlops_assets.registry import ArtifactIntegrityError
from mlops_assets.registry.errors import ChampionChangedError
from mlops_assets.registry.model_registry import CHAMPION, MODEL_FILE, TAG_DAGSTER_RUN_ID, ModelRegistry
from mlops_assets.runner import instance_for
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import toy_versions
from mlops_assets_tests.test_production_stack import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen[str]:
    """``mlops-assets ARGS`` as a subprocess of its own (its own session: signals reach it alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_assets.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _dead_pid() -> int:
    """The id of a process that ran and was killed with SIGKILL (and reaped)."""
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    return proc.pid


def _started_run(instance: dg.DagsterInstance, job_name: str, pid: int) -> str:
    """A run recorded as started by process ``pid``: what a run leaves when that process is killed with SIGKILL."""
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name=job_name, run_id=run_id, status=dg.DagsterRunStatus.NOT_STARTED))
    instance.report_dagster_event(
        dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name, pid=pid), run_id=run_id
    )
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    return run_id


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _toy_versions(name: str, n: int) -> tuple[ModelRegistry, list[str]]:
    """``n`` versions of model ``name`` (the bundled config's) that the champion guard clears: the faults below are
    what a move meets."""
    from mlops_assets.config import load_config

    cfg = load_config()
    assert cfg.model.name == name, (cfg.model.name, name)
    registry = ModelRegistry.from_config(cfg, storage_from_env())
    return registry, toy_versions(registry, n)


# ------------------------------------------------------------------------------------------------ liveness


def test_process_alive_tells_a_running_process_from_a_killed_one_and_a_reused_number():
    assert process_alive(os.getpid(), time.time())
    assert not process_alive(_dead_pid())
    # This process started long after the epoch: recorded then, the number belongs to someone else now.
    assert not process_alive(os.getpid(), recorded_at=0.0)
    zombie = subprocess.Popen(["sleep", "60"])
    zombie.kill()
    wait_for(lambda: not process_alive(zombie.pid), 5, "the killed child to show as gone (a zombie)")
    zombie.wait()


def test_a_killed_run_holding_the_promotion_slot_is_failed_and_its_slot_freed(isolated_storage):
    storage = storage_from_env().ensure()
    instance = instance_for(storage)  # the embedded default: SQLite, the bundled dagster.yaml's pools
    events = instance.event_log_storage
    events.initialize_concurrency_limit_to_default(PROMOTION_POOL)
    dead = _started_run(instance, "m_run_job", _dead_pid())
    assert events.claim_concurrency_slot(PROMOTION_POOL, dead, "m__deployed_model").is_claimed
    alive = _started_run(instance, "m_run_job", os.getpid())
    waiting = events.claim_concurrency_slot(PROMOTION_POOL, alive, "m__deployed_model")
    assert not waiting.is_claimed  # the pool's one slot is the dead run's

    [reaped] = reap_dead_runs(instance, found_by="the test")

    assert reaped.run_id == dead
    run = instance.get_run_by_id(dead)
    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"(pid {reaped.pid}) is gone" in failure.message and "marked failed by the test" in failure.message
    # The slot went to the live run that was waiting for it; the live run itself is untouched.
    assert events.claim_concurrency_slot(PROMOTION_POOL, alive, "m__deployed_model").is_claimed
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert dead not in events.get_concurrency_run_ids()

    # A run marked failed by someone else (the UI, a code server) keeps its slot until someone frees it.
    instance.report_run_failed(instance.get_run_by_id(alive), message="marked failed by hand")
    assert reap_dead_runs(instance, found_by="the test") == []
    assert events.get_concurrency_run_ids() == set()


def test_a_killed_retrain_does_not_hold_the_sensor_and_a_live_one_does(tmp_path, rainfall):
    from mlops_assets.defs.factory import build_model_defs
    from mlops_assets.defs.retraining import retrain_job_name, sensor_name
    from mlops_assets_tests.conftest import write_slice
    from mlops_assets_tests.test_retraining_triggers import (
        _log_live_predictions,
        _sensor_context,
        _toy_champion,
    )

    path, _ = write_slice(
        tmp_path,
        rainfall,
        years=1,
        name="perf",
        # The killed attempt counts against storm control's cap like any retrain that registered nothing.
        retraining={
            "performance_threshold": 0.7,
            "performance_min_rows": 50,
            "cooldown_days": 0,
            "max_retrains_per_window": 3,
        },
    )
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    version = _toy_champion(cfg, datetime.now(UTC) - timedelta(days=60))
    from mlops_assets.features.stores import offline_store

    for key in ("2020-01", "2020-02"):
        offline_store(cfg, storage).write_partition(
            key, pd.DataFrame({"date": [pd.Timestamp(f"{key}-03", tz="UTC")], "x": [0.1], "rain": [1]})
        )
    _log_live_predictions(storage, cfg, version)
    instance = dg.DagsterInstance.ephemeral()
    sensor = build_model_defs(cfg, config_path=str(path)).resolve_sensor_def(sensor_name(cfg, "performance"))
    killed = _started_run(instance, retrain_job_name(cfg), _dead_pid())

    tick = sensor.evaluate_tick(_sensor_context(instance, path))

    [request] = tick.run_requests
    assert request.tags["mlops/reason"] == "performance"
    assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "marked failed by the performance retrain sensor" in failure.message
    # A retrain whose process runs still holds every trigger.
    live = _started_run(instance, retrain_job_name(cfg), os.getpid())
    busy = sensor.evaluate_tick(_sensor_context(instance, path))
    assert busy.run_requests == [] and f"a retrain is in flight (run {live})" in busy.skip_message


@pytest.mark.slow
def test_concurrent_runs_promote_their_own_model_a_signal_stops_one_and_a_killed_slot_holder_is_reaped(
    tmp_path, rainfall, isolated_storage
):
    """Run A trains and waits for the promotion slot, which a live process holds; run B (a longer slice of the
    same model on the same MLOPS_HOME) trains after it and waits too. SIGTERM stops B at once; the holder is then
    killed with SIGKILL, and A, finding it dead, takes the slot and promotes the model A trained, not B's."""
    from mlops_assets_tests.conftest import write_slice

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a, _ = write_slice(
        tmp_path / "a",
        rainfall,
        years=2,
        name="twin",
        mutate=lambda f: f[f["date"] < pd.Timestamp("1950-07-01", tz="UTC")],
    )
    config_b, _ = write_slice(tmp_path / "b", rainfall, years=2, name="twin")
    instance = instance_for(storage_from_env().ensure())  # the embedded default, as `run` makes it

    def pool():
        return instance.event_log_storage.get_concurrency_info(PROMOTION_POOL)

    # A run holding the promotion slot, whose process runs until the test kills it.
    holder = subprocess.Popen(["sleep", "600"])
    held = _started_run(instance, "slot_holder_job", holder.pid)
    instance.event_log_storage.initialize_concurrency_limit_to_default(PROMOTION_POOL)
    assert instance.event_log_storage.claim_concurrency_slot(PROMOTION_POOL, held, "hold").is_claimed
    try:
        a = _cli("run", "--config", str(config_a), "--report", str(tmp_path / "a.json"), "--no-progress")
        [a_run] = wait_for(lambda: pool().pending_run_ids, 120, "run A to train and wait for the slot", 0.5)
        cpu_before, wall_before = _cpu_seconds(a.pid), time.monotonic()
        b = _cli("run", "--config", str(config_b), "--no-progress")
        wait_for(lambda: len(pool().pending_run_ids) == 2, 120, "run B to train and wait for the slot", 0.5)
        [b_run] = pool().pending_run_ids - {a_run}
        # Waiting for the slot is sleeping, not spinning (Dagster's in-process executor spun at 100% CPU).
        waited = time.monotonic() - wall_before
        assert _cpu_seconds(a.pid) - cpu_before < 0.2 * waited, (_cpu_seconds(a.pid) - cpu_before, waited)

        stopped_at = time.monotonic()
        b.send_signal(signal.SIGTERM)
        code, _, err = _finish(b, 30)
        assert code == 128 + signal.SIGTERM, err[-2000:]
        assert time.monotonic() - stopped_at < 15
        assert f"run {b_run} stopped by SIGTERM (recorded as canceled, its concurrency slots freed" in err
        assert instance.get_run_by_id(b_run).status == dg.DagsterRunStatus.CANCELED
        assert pool().pending_run_ids == {a_run}

        holder.kill()  # kill -9 while it holds the slot: its run stays STARTED
        holder.wait()
        killed_at = time.monotonic()
        code, out, err = _finish(a, 90)
        assert code == 0, err[-3000:]
        assert time.monotonic() - killed_at < 60
    finally:
        for proc in (holder, locals().get("a"), locals().get("b")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    assert instance.get_run_by_id(held).status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(held, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "is gone" in failure.message and "marked failed by mlops-assets run" in failure.message
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["status"] == "ok" and report["run_id"] == a_run
    [retrain] = report["retrains"]
    registry = ModelRegistry("twin", storage_from_env())
    trained = {registry.get_version(v).tags[TAG_DAGSTER_RUN_ID]: v for v in ("1", "2")}
    assert set(trained) == {a_run, b_run}  # both trained and registered a version
    # A promoted what A trained and gated; B's model never became champion.
    assert retrain["version"] == trained[a_run] and retrain["promoted"]
    assert [(d.version, d.run_id) for d in registry.history()] == [(trained[a_run], a_run)]
    assert registry.aliases()[CHAMPION] == trained[a_run]
    # Each run trained on its own slice, as far as its source reaches.
    assert registry.get_version(trained[a_run]).tags["mlops.data_window"].endswith("1950-06")
    assert registry.get_version(trained[b_run]).tags["mlops.data_window"].endswith("1950-12")


@pytest.mark.postgres
@pytest.mark.slow
def test_a_run_killed_with_sigkill_while_promoting_is_failed_and_the_next_run_promotes_within_a_bound(
    rainfall_slice, isolated_storage, pg_database, monkeypatch
):
    """A real `mlops-assets run` trains, claims the promotion slot and starts the champion move, which waits for
    the promotion lock this test holds; it is killed with SIGKILL there, as the OOM killer would. The next run on
    the same MLOPS_HOME marks it failed, frees its slot and promotes within 90 s; the killed run moved nothing."""
    import psycopg

    from mlops_assets.registry.history import _lock_key

    # The deployment history (and so the promotion lock) on PostgreSQL: its lock table shows the run waiting for
    # the lock, and the lock is the champion move's own (gate results and alerts do not wait for it).
    monkeypatch.setenv("MLOPS_DEPLOYMENT_HISTORY_URL", pg_database)
    path, _ = rainfall_slice(years=1, name="killed")
    storage = storage_from_env().ensure()
    instance = instance_for(storage)  # the embedded default, as `run` makes it
    registry = ModelRegistry("killed", storage_from_env())
    key = _lock_key("killed")

    def pool():
        return instance.event_log_storage.get_concurrency_info(PROMOTION_POOL)

    with psycopg.connect(pg_database, autocommit=True) as watcher:

        def waiting_for_the_lock() -> int:
            # An advisory lock's 64-bit key is split into classid (high half) and objid (low half).
            return watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND (classid::bigint << 32 | objid::bigint) = %s",
                (key & 0xFFFFFFFFFFFFFFFF,),
            ).fetchone()[0]

        with registry.history_store.locked("killed"):
            first = _cli("run", "--config", str(path), "--report", "first.json")
            try:
                wait_for(waiting_for_the_lock, 120, "the run to wait for the promotion lock", 0.2)
                [holder] = pool().claimed_slots
                assert first.poll() is None
                first.kill()  # SIGKILL, inside the champion move
                code, _, first_err = _finish(first, 30)
            finally:
                if first.poll() is None:
                    first.kill()
                    first.wait()
    assert code == -signal.SIGKILL
    killed_run = holder.run_id
    assert holder.step_key == "killed__deployed_model"
    # Its last progress line: the deploy step had begun promoting the version it trained.
    steps = [line.split(" s  ", 1)[1] for line in first_err.splitlines() if line.startswith("run: ")]
    assert steps[-1] == "deployed_model: promoting version 1", first_err[-2000:]
    assert not Path("first.json").exists()
    assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.STARTED  # nobody reported its end
    started_steps = {
        e.step_key for e in instance.all_logs(killed_run, of_type=dg.DagsterEventType.STEP_START)
    }
    done = {e.step_key for e in instance.all_logs(killed_run, of_type=dg.DagsterEventType.STEP_SUCCESS)}
    assert "killed__deployed_model" in started_steps - done
    assert registry.history() == [] and CHAMPION not in registry.aliases()

    started = time.monotonic()
    second = _cli("run", "--config", str(path), "--report", "second.json", "--no-progress")
    code, out, err = _finish(second, 90)
    assert code == 0, err[-3000:]
    assert time.monotonic() - started < 90

    run = instance.get_run_by_id(killed_run)
    assert run.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(killed_run, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"(pid {first.pid}) is gone" in failure.message
    assert f"marked failed by mlops-assets (pid {second.pid})" in failure.message
    assert killed_run not in instance.event_log_storage.get_concurrency_run_ids()
    assert pool().claimed_slots == [] and pool().pending_run_ids == set()
    report = json.loads(Path("second.json").read_text())
    assert report["status"] == "ok", report["error"]
    # The killed run had registered version 1 and gated it; it never became champion. The next run, finding no
    # champion, trained again and promoted its own version 2: the history's one row is that move.
    assert registry.get_version("1").tags[TAG_DAGSTER_RUN_ID] == killed_run
    [retrain] = report["retrains"]
    assert (retrain["version"], retrain["promoted"]) == ("2", True)
    assert registry.get_version("2").tags[TAG_DAGSTER_RUN_ID] == report["run_id"] != killed_run
    assert [(d.version, d.previous_version, d.run_id) for d in registry.history()] == [
        ("2", None, report["run_id"])
    ]
    assert registry.aliases()[CHAMPION] == "2"


# ------------------------------------------------------------------------------------------------ run-scoped hand-off


def test_the_hand_off_to_deployed_model_is_the_producing_runs_own(isolated_storage):
    project = MlopsProject()
    io = RunHandoffIOManager(project=project)
    key = dg.AssetKey(["mlops_model", "trained_model"])
    for run_id, version in (("run-a", "2"), ("run-b", "3")):
        io.handle_output(dg.build_output_context(asset_key=key, run_id=run_id), {"version": version})
    # Run A's deploy step reads what run A trained, though run B wrote its own after it.
    upstream = dg.build_output_context(asset_key=key, run_id="run-a")
    assert io.load_input(dg.build_input_context(asset_key=key, upstream_output=upstream)) == {"version": "2"}
    handoffs = isolated_storage / "mlops_model" / "handoff"
    assert sorted(p.relative_to(handoffs).as_posix() for p in handoffs.rglob("*.json")) == [
        "run-a/trained_model.json",
        "run-b/trained_model.json",
    ]


def test_a_run_that_deploys_without_training_reads_the_newest_materializations_hand_off(isolated_storage):
    io = RunHandoffIOManager(project=MlopsProject())
    versions = iter(["7", "8"])

    @dg.asset(key=["mlops_model", "trained_model"], io_manager_key="handoff")
    def trained_model() -> dict:
        return {"version": next(versions)}

    @dg.asset(
        key=["mlops_model", "deployed_model"], ins={"trained": dg.AssetIn(["mlops_model", "trained_model"])}
    )
    def deployed_model(trained: dict) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"version": trained["version"]})

    instance = dg.DagsterInstance.ephemeral()
    assets, resources = [trained_model, deployed_model], {"handoff": io}
    dg.materialize(assets, instance=instance, resources=resources)  # version 7 deployed in its own run
    dg.materialize(assets, instance=instance, resources=resources, selection=[trained_model])  # trains 8
    alone = dg.materialize(assets, instance=instance, resources=resources, selection=[deployed_model])
    [mat] = alone.asset_materializations_for_node("mlops_model__deployed_model")
    assert mat.metadata["version"].value == "8"


def test_offline_store_seen_until_a_partition_hides_newer_ones(tmp_path):
    from mlops_assets.features.offline import OfflineStore

    store = OfflineStore(tmp_path, name="f")
    for key in ("1974-11", "1974-12", "1975-01"):
        store.write_partition(key, pd.DataFrame({"x": [int(key[-2:])]}))
    view = store.until("1974-12")
    assert view.partitions() == ["1974-11", "1974-12"]
    assert view.read()["x"].tolist() == [11, 12]
    assert store.until(None).partitions() == store.partitions() == ["1974-11", "1974-12", "1975-01"]


# ------------------------------------------------------------------------------------------------ artifacts


def _flip_a_byte(registry: ModelRegistry, version: str) -> Path:
    # The version's source is its logged model (models:/...); the registry resolved where its files are.
    location = registry.client.get_model_version_download_uri(registry.model_name, version)
    path = Path(location.removeprefix("file://")) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_rollback_refuses_a_tampered_artifact_and_leaves_the_champion(isolated_storage):
    registry, (v1, v2) = _toy_versions("mlops_model", 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
    path = _flip_a_byte(registry, v1)

    code, out, err = _finish(_cli("rollback"), 60)

    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"mlops-assets rollback: model 'mlops_model' version {v1}: artifact ")
    assert f"has sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}, registered " in line
    assert line.endswith(f"the model is refused; rollback refused, the champion stays version {v2}")
    assert registry.aliases()[CHAMPION] == v2
    assert [d.reason for d in registry.history()] == ["initial", "manual"]


def test_promotion_refuses_a_tampered_artifact(isolated_storage):
    registry, (v1, v2) = _toy_versions("mlops_model", 2)
    registry.promote(v1, reason="initial")
    _flip_a_byte(registry, v2)
    with pytest.raises(
        ArtifactIntegrityError, match=f"version {v2}: .*promotion refused, the champion stays version {v1}"
    ):
        registry.promote(v2, reason="manual")
    assert registry.aliases()[CHAMPION] == v1 and len(registry.history()) == 1


# ------------------------------------------------------------------------------------------------ two rollbacks at once


def test_a_rollback_whose_champion_changed_under_it_moves_nothing_and_says_so(isolated_storage):
    registry, (v1, v2) = _toy_versions("mlops_model", 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
    first = registry.rollback(run_id="first", expected_champion=v2)
    assert first.version == v1
    with pytest.raises(ChampionChangedError) as err:
        registry.rollback(run_id="second", expected_champion=v2)
    message = str(err.value)
    assert (
        f"it was version {v2} when the rollback began, it is version {v1} since {first.deployed_at}"
        in message
    )
    assert "(rollback, run first)" in message and "this rollback moved nothing" in message
    assert registry.aliases()[CHAMPION] == v1
    assert [d.run_id for d in registry.history()] == [None, None, "first"]


@pytest.mark.postgres
def test_two_rollback_commands_at_once_the_second_reports_the_change(
    isolated_storage, pg_database, monkeypatch
):
    import psycopg

    # The deployment history on PostgreSQL, whose lock table shows who waits for the promotion lock.
    env = {"MLOPS_DEPLOYMENT_HISTORY_URL": pg_database}
    monkeypatch.setenv("MLOPS_DEPLOYMENT_HISTORY_URL", pg_database)
    registry, (v1, v2) = _toy_versions("mlops_model", 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
    with psycopg.connect(pg_database, autocommit=True) as watcher:

        def waiting() -> int:
            return watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]

        # Both commands read champion v2, then wait for the promotion lock this test holds.
        with registry.history_store.locked("mlops_model"):
            procs = [_cli("rollback", env=env) for _ in range(2)]
            wait_for(lambda: waiting() == 2, 60, "both rollbacks to wait for the promotion lock")
    results = sorted((_finish(p, 60) for p in procs), key=lambda r: r[0])
    (ok, ok_out, _), (refused, _, refused_err) = results
    assert (ok, refused) == (0, 1), results
    assert f"champion is now version {v1} (was version {v2})" in ok_out
    [line] = refused_err.strip().splitlines()
    assert f"it was version {v2} when the rollback began, it is version {v1} since" in line
    assert "this rollback moved nothing" in line
    assert registry.aliases()[CHAMPION] == v1
    assert [d.reason for d in registry.history()] == ["initial", "manual", "rollback"]


# ------------------------------------------------------------------------------------------------ damaged partitions


def test_a_sweep_moves_files_whose_footer_cannot_be_read_and_remembers_them_until_rewritten(
    tmp_path, isolated_storage
):
    from mlops_assets.data.batches import Stores
    from mlops_assets.features.stores import offline_store
    from mlops_assets.steps.repair import (
        DATA,
        FEATURES,
        ledger_mark,
        moved_since,
        needing_repair,
        set_aside_damaged,
    )

    cfg = load_config()
    storage = storage_from_env().ensure()
    stores, offline = Stores.at(storage.home, cfg.model.name), offline_store(cfg, storage)
    frame = pd.DataFrame({"x": np.arange(500.0), "y": ["a"] * 500})
    for key in ("2020-01", "2020-02", "2020-03"):
        stores.validated.write(key, frame)
        offline.write_partition(key, frame)
    emptied, cut = stores.validated.path("2020-02"), offline.root / "2020-03.parquet"
    emptied.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:-20])  # the footer cut off
    mark = ledger_mark(cfg, storage)

    assert set_aside_damaged(cfg, storage, stores_of=[FEATURES])[0].path == cut  # only the store asked for
    [moved] = set_aside_damaged(cfg, storage, stores_of=[DATA])

    assert (moved.asset, moved.partition, moved.path) == ("validated_data", "2020-02", emptied)
    assert not emptied.exists() and moved.moved_to.read_bytes() == b""
    assert moved.moved_to.relative_to(storage.home / cfg.model.name / "damaged").parts[1:] == (
        "validated_data",
        "2020-02.parquet",
    )
    assert stores.validated.keys() == ["2020-01", "2020-03"]  # the rest reads on
    assert sorted(d.partition for d in needing_repair(cfg, storage)) == ["2020-02", "2020-03"]
    stores.validated.write("2020-02", frame)  # rebuilt
    assert [(d.partition, rebuilt) for d, rebuilt in moved_since(cfg, storage, mark)] == [
        ("2020-03", False),
        ("2020-02", True),
    ]
    [left] = needing_repair(cfg, storage)
    assert (left.asset, left.partition) == (f"features (offline store {offline.name})", "2020-03")
    assert set_aside_damaged(cfg, storage) == []


def _damage_two_partitions(stores, offline):
    """Damage validated_data's 1949-05 (a 0-byte file, as a full disk leaves it) and the offline store's 1949-07
    (a truncated file); returns both partitions as they were, and the two damaged paths."""
    validated_before, features_before = stores.validated.read(["1949-05"]), offline.read(["1949-07"])
    emptied = stores.validated.path("1949-05")
    emptied.write_bytes(b"")
    cut = offline.root / "1949-07.parquet"
    cut.write_bytes(cut.read_bytes()[:300])
    return validated_before, features_before, emptied, cut


@pytest.mark.slow
def test_a_damaged_partition_is_named_and_repair_rebuilds_it_from_the_source(
    rainfall_slice, isolated_storage
):
    from mlops_assets.data.batches import Stores
    from mlops_assets.data.store import CorruptPartitionError
    from mlops_assets.features.stores import offline_store
    from mlops_assets.runner import execute
    from mlops_assets.steps.repair import find_damaged

    path, _ = rainfall_slice(years=1, name="damage")
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    data_steps = ["raw_data", "validated_data", "features"]
    first = execute(cfg, config_file=str(path), storage=storage, selection=data_steps)
    assert first.status == "ok", first.error
    stores, offline = Stores.at(storage.home, "damage"), offline_store(cfg, storage)
    validated_before, features_before, emptied, cut = _damage_two_partitions(stores, offline)

    with pytest.raises(CorruptPartitionError) as err:
        stores.validated.read(["1949-05"])
    assert str(err.value).startswith(
        f"validated_data partition 1949-05: the stored file {emptied} cannot be read ("
    )
    assert str(err.value).endswith("`mlops-assets repair` moves it aside and rebuilds it from the source")
    with pytest.raises(
        CorruptPartitionError, match=r"features \(offline store damage_features\) partition 1949-07"
    ):
        offline.read()
    # A run of the features alone, which cannot rebuild validated_data, moves the damaged file aside and names it.
    blocked = execute(
        cfg,
        config_file=str(path),
        storage=storage,
        selection=["features"],
        partition_keys=("1949-05", "1949-05"),
    )
    assert blocked.status == "failed"
    assert blocked.error.startswith(
        f"damage__features: damaged stored file moved aside: validated_data partition 1949-05: {emptied} ("
    ), blocked.error
    assert "not rebuilt (left out of this run): `mlops-assets repair --partition 1949-05`" in blocked.error

    code, out, err_text = _finish(_cli("repair", "--config", str(path)), 180)

    assert code == 0, err_text[-3000:]
    assert f"damaged: validated_data partition 1949-05: {emptied} (" in out
    assert f"damaged: features (offline store damage_features) partition 1949-07: {cut} (" in out
    assert "rebuilt raw_data, validated_data, features over 1949-05..1949-07 from the source" in out
    kept = sorted(
        p.relative_to(storage.home / "damage" / "damaged").parts[1:]
        for p in (storage.home / "damage").rglob("damaged/*/*/*")
    )
    assert kept == [
        ("damage_features", "1949-07.parquet"),
        ("validated_data", "1949-05.parquet"),
    ]
    assert find_damaged(cfg, storage) == []
    pd.testing.assert_frame_equal(stores.validated.read(["1949-05"]), validated_before)
    pd.testing.assert_frame_equal(offline.read(["1949-07"]), features_before)


# ------------------------------------------------------------------------------------------------ unreachable registry


def test_status_and_rollback_say_in_one_line_that_the_registry_database_is_unreachable(isolated_storage):
    closed = f"postgresql://mlops:secret@127.0.0.1:{free_port()}/mlflow"
    for setting, command in (
        ("MLFLOW_TRACKING_URI", "status"),
        ("MLFLOW_TRACKING_URI", "rollback"),
        ("MLOPS_DEPLOYMENT_HISTORY_URL", "status"),
    ):
        started = time.monotonic()
        code, out, err = _finish(_cli(command, env={setting: closed}), 60)
        assert code == 1 and out == ""
        [line] = err.strip().splitlines()
        assert line.startswith(f"mlops-assets {command}: ") and f"({setting}=" in line
        assert "mlops:***@127.0.0.1" in line and "secret" not in line
        assert "cannot be reached" in line and "Connection refused" in line
        assert time.monotonic() - started < 30  # not MLflow's 100 s of retries


@pytest.mark.slow
def test_status_and_rollback_say_in_one_line_that_the_stopped_registry_server_is_unreachable_and_change_nothing(
    isolated_storage, monkeypatch
):
    """MLflow's tracking store and the deployment history on a PostgreSQL server of their own, with a champion and
    a previous one; the server is stopped. `status` and `rollback` each say in one line which store cannot be
    reached and why (the password hidden); started again, the server holds the champion and history as before."""
    import psycopg

    from mlops_assets_tests.test_faults import private_postgres

    with private_postgres() as server:
        with psycopg.connect(f"{server.url}/postgres", autocommit=True) as admin:
            # A login with a password, as a production store has (the server trusts it: the line must hide it).
            admin.execute("CREATE ROLE mlops LOGIN PASSWORD 'secret'")
            admin.execute("CREATE DATABASE mlflow OWNER mlops")
            admin.execute("CREATE DATABASE history OWNER mlops")
        address = server.url.split("@", 1)[1]
        settings = {
            "MLFLOW_TRACKING_URI": f"postgresql://mlops:secret@{address}/mlflow",
            "MLOPS_DEPLOYMENT_HISTORY_URL": f"postgresql://mlops:secret@{address}/history",
        }
        for setting, url in settings.items():
            monkeypatch.setenv(setting, url)
        registry, (v1, v2) = _toy_versions("mlops_model", 2)
        registry.promote(v1, reason="initial")
        registry.promote(v2, reason="manual")
        before = (registry.aliases(), registry.history())

        server.stop()
        lines = {}
        for command in ("status", "rollback"):
            started = time.monotonic()
            code, out, err = _finish(_cli(command), 60)
            assert (code, out) == (1, ""), err[-3000:]
            [lines[command]] = err.strip().splitlines()
            assert time.monotonic() - started < 30  # not MLflow's 100 s of retries
        # Both meet the tracking store first; the line names it by its setting, the password hidden.
        shown = settings["MLFLOW_TRACKING_URI"].replace(":secret@", ":***@")
        for command, line in lines.items():
            assert line.startswith(
                f"mlops-assets {command}: the MLflow tracking database (MLFLOW_TRACKING_URI={shown}) cannot be "
                "reached: connection failed: "
            ), line
            assert "Connection refused" in line and "secret" not in line, line
        server.start()

        assert (registry.aliases(), registry.history()) == before
        assert registry.aliases()[CHAMPION] == v2


# ------------------------------------------------------------------------------------------------ full disk


@contextlib.contextmanager
def _tiny_file_system(folder: Path, size: str) -> Iterator[Path]:
    """A file system of ``size`` (tmpfs) mounted at ``folder``, as a small volume a store might sit on. Skips,
    saying why, where this process may not mount one (not root, or no mount permission in a container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited file system needs root")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a size-limited file system here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def _fill(folder: Path) -> None:
    """Write one file in ``folder`` until its file system has no space left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0


@pytest.mark.slow
def test_a_full_disk_under_the_offline_store_fails_the_run_in_one_line_and_keeps_what_was_stored(
    tmp_path, rainfall, isolated_storage
):
    """$MLOPS_HOME/offline_store on a 1 MB volume: a first run stores a year of features and promotes; the volume
    then fills up, and the run over the next year's data fails, naming the file it could not write and "No space
    left on device" in one line. The stored partitions, the champion and the history are as they were."""
    from mlops_assets_tests.conftest import write_slice

    offline_root = storage_from_env().ensure().offline_store
    with _tiny_file_system(offline_root, "1m"):
        path, _ = write_slice(tmp_path, rainfall, years=1, name="full")
        code, _, err = _finish(_cli("run", "--config", str(path), "--no-progress"), 180)
        assert code == 0, err[-3000:]
        registry = ModelRegistry("full", storage_from_env())
        stored = {p: p.read_bytes() for p in offline_root.rglob("*") if p.is_file()}
        assert sorted(p.name for p in stored) == [f"1949-{m:02d}.parquet" for m in range(1, 13)]
        before = (registry.aliases(), registry.history())
        assert before[0][CHAMPION] == "1"
        _fill(offline_root / "full_features")

        write_slice(tmp_path, rainfall, years=2, name="full")  # a year more arrives
        code, out, err = _finish(_cli("run", "--config", str(path), "--no-progress"), 180)

        assert code == 1, err[-3000:]
        assert "Traceback" not in err
        [line] = [line for line in (out + err).splitlines() if "No space left on device" in line]
        # The partition it could not write (the run rewrites the store from its first month).
        prefix = f"error: full__features: OSError: [Errno 28] No space left on device: '{offline_root}/full_features/"
        assert line.startswith(prefix) and re.fullmatch(r"\d{4}-\d{2}\.parquet'", line[len(prefix) :]), line
        (offline_root / "full_features" / "filler").unlink()
        assert {p: p.read_bytes() for p in offline_root.rglob("*") if p.is_file()} == stored
    assert (registry.aliases(), registry.history()) == before


# ------------------------------------------------------------------------------------------------ one-class holdout


def test_a_one_class_holdout_is_named_as_such_by_the_gates():
    from sklearn.linear_model import LogisticRegression

    from mlops_assets.training.gate_settings import MetricFloors, RegressionConfig
    from mlops_assets.training.gates import compute_metrics, metric_floors_gate, no_regression_gate

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x": rng.normal(size=80)})
    model = LogisticRegression().fit(X, (X["x"] > 0).astype(int))
    dry = np.zeros(20, dtype=int)  # a holdout without a single rainy day
    regression = no_regression_gate(model, model, X.head(20), dry, RegressionConfig())
    assert not regression.passed
    assert "roc_auc is undefined: the holdout has one class only (every label negative)" in regression.message
    assert "nan" not in regression.message
    floors = metric_floors_gate(compute_metrics(model, X.head(20), dry), MetricFloors())
    assert not floors.passed
    assert "roc_auc is undefined: the holdout has one class only (every label negative)" in floors.message


def test_infrastructure_errors_are_one_line_naming_the_file_or_the_database():
    import errno
    import sqlite3

    from mlops_assets.cli import infrastructure_error

    full = OSError(errno.ENOSPC, "No space left on device", "/srv/mlops/offline_store/f/1982-01.parquet")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("writing the offline store failed") from err
    except RuntimeError as wrapped:
        assert infrastructure_error(wrapped) == (
            "cannot write or read /srv/mlops/offline_store/f/1982-01.parquet: No space left on device"
        )
    locked = sqlite3.OperationalError("database is locked")
    assert infrastructure_error(locked) == "a database cannot be reached or used: database is locked"
    assert infrastructure_error(ValueError("a bug")) is None  # anything else keeps its traceback


@pytest.mark.slow
def test_a_run_moves_damaged_partitions_aside_rebuilds_them_and_leaves_out_what_it_cannot(
    rainfall_slice, isolated_storage
):
    """`mlops-assets run` on unchanged data with a 0-byte validated_data file and a cut-short offline-store file:
    both are moved aside and rebuilt in the same run, and the champion stays. A features run over a range whose
    validated_data is damaged leaves that partition out and goes on with the others, as training does with a damaged
    offline-store partition; `status` shows them as needing repair until `repair` rebuilds them."""
    from mlops_assets.commands.repair import repair
    from mlops_assets.commands.run import run
    from mlops_assets.commands.status import render_text, status
    from mlops_assets.data.batches import Stores
    from mlops_assets.features.stores import offline_store
    from mlops_assets.runner import execute
    from mlops_assets.steps.repair import needing_repair

    path, _ = rainfall_slice(years=1, name="heal")
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    first = run(cfg, storage, config_file=path)
    assert first.outcome.status == "ok", first.outcome.error
    champion = first.report["champion"]["version"]
    stores, offline = Stores.at(storage.home, "heal"), offline_store(cfg, storage)
    validated_before, features_before, emptied, cut = _damage_two_partitions(stores, offline)

    code, out, err = _finish(
        _cli("run", "--config", str(path), "--report", "again.json", "--no-progress"), 180
    )

    assert code == 0, err[-3000:]
    report = json.loads(Path("again.json").read_text())
    assert report["status"] == "ok", report["error"]
    moved = {(d["asset"], d["partition"]): d for d in report["damaged"]}
    assert set(moved) == {
        ("validated_data", "1949-05"),
        ("features (offline store heal_features)", "1949-07"),
    }
    assert all(d["rebuilt"] for d in moved.values())
    assert Path(moved["validated_data", "1949-05"]["moved_to"]).read_bytes() == b""
    assert Path(moved["features (offline store heal_features)", "1949-07"]["moved_to"]).stat().st_size == 300
    assert f"damaged stored file moved aside: validated_data partition 1949-05: {emptied} (" in out
    assert "; rebuilt from the source" in out
    pd.testing.assert_frame_equal(stores.validated.read(["1949-05"]), validated_before)
    pd.testing.assert_frame_equal(offline.read(["1949-07"]), features_before)
    # Unchanged data and recipe: nothing retrained, the champion stays.
    assert report["unchanged_champion_version"] == champion == report["champion"]["version"]
    assert report["retrains"] == [] and needing_repair(cfg, storage) == []

    # A run of the features alone cannot rebuild validated_data: it leaves the damaged partition out.
    emptied.write_bytes(b"")
    partial = execute(
        cfg,
        config_file=str(path),
        storage=storage,
        selection=["features"],
        partition_keys=("1949-05", "1949-06"),
    )
    assert partial.status == "ok", partial.error
    [left_out] = partial.damaged
    assert (left_out["partition"], left_out["rebuilt"]) == ("1949-05", False)
    assert not emptied.exists() and Path(left_out["moved_to"]).is_file()
    pd.testing.assert_frame_equal(offline.read(["1949-07"]), features_before)
    [needs] = needing_repair(cfg, storage)
    assert (needs.asset, needs.partition, needs.path) == ("validated_data", "1949-05", emptied)
    shown = render_text(status(cfg, storage, triggers=False))
    assert f"NEEDS REPAIR validated_data partition 1949-05: {emptied} was damaged" in shown
    assert "mlops-assets repair --partition 1949-05" in shown

    # Training (as the retrain job runs it) leaves a damaged offline-store partition out and trains on the rest.
    cut.write_bytes(b"")
    retrain = execute(cfg, config_file=str(path), storage=storage, selection=["trained_model"], force=True)
    assert retrain.status in ("ok", "blocked"), retrain.error
    assert retrain.trained_version is not None
    assert [(d["partition"], d["rebuilt"]) for d in retrain.damaged] == [("1949-07", False)]
    assert sorted(d.partition for d in needing_repair(cfg, storage)) == ["1949-05", "1949-07"]

    # `repair` rebuilds what runs moved aside and could not rebuild, without being told the partitions.
    repaired = repair(cfg, storage, config_file=str(path))
    assert repaired.status == "ok" and repaired.partitions == ["1949-05", "1949-07"], repaired.error
    pd.testing.assert_frame_equal(stores.validated.read(["1949-05"]), validated_before)
    pd.testing.assert_frame_equal(offline.read(["1949-07"]), features_before)
    assert needing_repair(cfg, storage) == []
