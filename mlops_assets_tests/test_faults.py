"""Faults in production mode: a run killed mid-training, PostgreSQL restarted under the daemon, two promotions at
once, an artifact store that refuses writes. Each leaves the champion and the deployment history consistent."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.monitoring import retrain_job_name
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import execute
from mlops_assets.settings import storage_from_env
from mlops_assets_tests.test_production_stack import (
    FAST_DEQUEUE,
    free_port,
    initial_champion,
    pg_databases,
    pg_env,
    production_fixture,  # noqa: F401 - registers the `production` fixture here
    production_instance_yaml,
    production_stack,
    wait_for,
)

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
# Launched runs execute their steps in the run process (`dagster api execute_run`, started by the code server)
# rather than one more subprocess per step: these tests are about the run process, the daemon and the storage,
# and a step process costs seconds of imports on a loaded 2-core machine. The pool limit holds either way (the
# in-process executor claims concurrency slots like the multiprocess one).
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _toy_versions(model_name: str, n: int) -> list[str]:
    """``n`` small registered versions through the real registry (for promotion tests that need no training)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=100)})
    registry = ModelRegistry(model_name)
    out = []
    for i in range(n):
        model = LogisticRegression(C=1.0 + i).fit(X, (X["x"] > 0).astype(int))
        out.append(registry.register(model, input_example=X.head(3)).version)
    return out


def _events(instance, run_id: str, event_type: dg.DagsterEventType):
    return [r for r in instance.all_logs(run_id, of_type=event_type)]


def _step_window(instance, run_id: str, step_suffix: str) -> tuple[float, float]:
    start = [
        e
        for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)
        if e.step_key.endswith(step_suffix)
    ]
    end = [
        e
        for e in _events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)
        if e.step_key.endswith(step_suffix)
    ]
    assert start and end, f"run {run_id}: no start/success of a step ending in {step_suffix}"
    return start[0].timestamp, end[0].timestamp


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.slow
def test_run_killed_during_training_is_failed_champion_unchanged_and_the_retry_promotes(
    rainfall_slice, production
):
    _, instance, start = production
    path, _ = rainfall_slice(years=3, name="killed")
    cfg = load_config(path)
    registry = ModelRegistry(cfg.model.name)
    stack = start(path, while_code_server_starts=lambda: initial_champion(path, instance, last="1951-12"))
    job = retrain_job_name(cfg)
    # The retrain job is in-process by definition (its steps run in the run process): no executor config.
    run_id = stack.graphql().submit_job_execution(job, run_config={}, tags={REASON_TAG: "manual"})

    def step_events(event_type: dg.DagsterEventType):
        return [e for e in _events(instance, run_id, event_type) if e.step_key.endswith("trained_model")]

    [step_start] = wait_for(
        lambda: step_events(dg.DagsterEventType.STEP_START), 120, "the retrain run to start training", 0.1
    )
    [run_start] = _events(instance, run_id, dg.DagsterEventType.RUN_START)
    worker_pid = run_start.dagster_event.pid
    # The run process (launched by the code server) is the one training: kill -9 it, as the OOM killer would.
    assert worker_pid and worker_pid != os.getpid() and step_start.dagster_event.pid == worker_pid
    os.kill(worker_pid, signal.SIGKILL)
    assert not step_events(dg.DagsterEventType.STEP_SUCCESS), "the training step finished before the kill"

    failed = stack.wait_run(instance, run_id, timeout=90)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    messages = " ".join(e.message or "" for e in instance.all_logs(run_id))
    assert "terminated by signal 9" in messages and "marked as failed" in messages, messages[-2000:]
    assert registry.champion().version == "1"
    assert [(d.version, d.reason) for d in registry.history()] == [("1", "initial")]

    # The daemon retries it (run_retries); the retry trains again and promotes.
    def retry():
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        return runs[0] if runs else None

    retry_run = wait_for(retry, 90, f"the daemon to retry run {run_id}")
    retry_run = stack.wait_run(instance, retry_run.run_id, timeout=150)
    assert retry_run.status == dg.DagsterRunStatus.SUCCESS, stack.log("daemon")
    assert retry_run.run_config == {}  # the retry re-executes the same run
    history = registry.history()
    assert [(d.reason, d.previous_version, d.run_id) for d in history[1:]] == [
        ("manual", "1", retry_run.run_id)
    ]
    assert registry.champion().version == history[-1].version != "1"


@pytest.mark.postgres
@pytest.mark.integration
def test_two_promotions_at_once_are_serialized_by_the_pool_and_the_history_stays_consistent(
    rainfall_slice, production
):
    _, instance, start = production
    path, _ = rainfall_slice(years=1, name="promo")
    name = load_config(path).model.name
    registry = ModelRegistry(name)
    v1, v2 = _toy_versions(name, 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
    stack = start(path)
    client = stack.graphql()
    # Two rollbacks launched together: each moves the champion to the previous one. Serialized, they undo each
    # other (2 -> 1 -> 2); interleaved, both would read champion 2 and write 1.
    run_ids = [client.submit_job_execution(f"{name}_rollback_job", run_config=IN_PROCESS) for _ in range(2)]
    runs = [stack.wait_run(instance, r, timeout=120) for r in run_ids]
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2, stack.log("daemon")
    history = registry.history()
    assert [(d.version, d.reason, d.previous_version) for d in history] == [
        (v1, "initial", None),
        (v2, "manual", v1),
        (v1, "rollback", v2),
        (v2, "rollback", v1),
    ]
    assert {d.run_id for d in history[2:]} == set(run_ids)
    assert registry.champion().version == v2
    # The promotion pool held one step at a time.
    a, b = sorted(_step_window(instance, r, "_rollback") for r in run_ids)
    assert a[1] <= b[0], f"rollback steps overlapped: {a} and {b}"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


@contextlib.contextmanager
def private_postgres():
    """A PostgreSQL server of our own (initdb + pg_ctl as the postgres OS user) on a free port; yields
    (url, restart). Never the shared server: this one gets restarted."""
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries or runuser not available")
    base = Path(tempfile.mkdtemp(prefix="mlops_pg_"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres")
    shutil.chown(sock, "postgres")
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=120,
        )

    ctl = [
        "pg_ctl",
        "-D",
        str(data),
        "-l",
        str(base / "log"),
        "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
    ]
    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(*ctl, "-w", "start")

        def restart() -> None:
            pg(*ctl, "-w", "-m", "fast", "restart")

        yield f"postgresql://postgres@127.0.0.1:{port}", restart
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
@pytest.mark.integration
def test_postgres_restart_under_the_daemon_loses_no_run(rainfall_slice, tmp_path, monkeypatch):
    path, _ = rainfall_slice(years=1, name="restart")
    name = load_config(path).model.name
    with private_postgres() as (server, restart), pg_databases(1, server) as (dagster_db,):
        for k, v in pg_env(dagster_db).items():
            monkeypatch.setenv(k, v)
        production_instance_yaml(Path(os.environ["DAGSTER_HOME"]), run_coordinator=FAST_DEQUEUE)
        registry = ModelRegistry(name)  # MLflow and the history stay on SQLite under MLOPS_HOME here
        v1, v2 = _toy_versions(name, 2)
        registry.promote(v1, reason="initial")
        registry.promote(v2, reason="manual")
        env = dict(os.environ, MLOPS_CONFIG=str(path), OMP_NUM_THREADS="1")
        with dg.DagsterInstance.get() as instance, production_stack(tmp_path, env) as stack:
            client = stack.graphql()
            job = f"{name}_rollback_job"
            before = [client.submit_job_execution(job, run_config=IN_PROCESS) for _ in range(2)]
            restarted_at = time.time()
            restart()  # while the daemon dequeues and launches them
            failed_submissions: list[str] = []
            after = wait_for(
                lambda: _submit_or_none(client, job, failed_submissions),
                60,
                "the webserver to accept a run after the restart",
            )
            submitted = [*before, after]
            # A submission the client saw fail during the restart may still have created its run: the webserver
            # either enqueued it (the response was lost) or recorded it as failed without starting it. The runs
            # the client was told about must all succeed; an extra run (at most one per failed submission) either
            # succeeded too or never started, and no run failed after it started.
            acknowledged = {stack.wait_run(instance, r, timeout=120).status for r in submitted}
            assert acknowledged == {dg.DagsterRunStatus.SUCCESS}, stack.log("daemon")
            all_runs = instance.get_runs(dg.RunsFilter(job_name=job))
            assert set(submitted) <= {r.run_id for r in all_runs}
            assert len(all_runs) <= len(submitted) + len(failed_submissions), failed_submissions
            run_ids = []
            for r in all_runs:
                run = stack.wait_run(instance, r.run_id, timeout=120)
                if run.status == dg.DagsterRunStatus.SUCCESS:
                    run_ids.append(run.run_id)
                else:
                    assert run.run_id not in submitted
                    started = _events(instance, run.run_id, dg.DagsterEventType.RUN_START)
                    assert not started, f"run {run.run_id} failed after it started:\n{stack.log('daemon')}"
            assert stack.alive("daemon") and stack.alive("webserver") and stack.alive("code_server")
            # Every daemon still heartbeats into the restarted server.
            wait_for(
                lambda: (
                    (b := instance.get_daemon_heartbeats())
                    and all(h.timestamp > restarted_at for h in b.values())
                ),
                90,
                "every daemon to heartbeat into the restarted server",
                interval=2,
            )
        history = registry.history()
        assert [d.reason for d in history] == ["initial", "manual"] + ["rollback"] * len(run_ids)
        # Each run rolled back exactly once: none lost, none executed twice.
        assert sorted(d.run_id for d in history[2:]) == sorted(run_ids)
        for prev, cur in zip(history, history[1:], strict=False):
            assert cur.previous_version == prev.version
        # Each rollback flips the champion, from 2.
        assert registry.champion().version == (v1 if len(run_ids) % 2 else v2)


def _submit_or_none(client, job: str, failures: list[str]):
    """Submit ``job``; while the webserver cannot reach the restarted server, note the error and return None."""
    from dagster_graphql import DagsterGraphQLClientError

    try:
        return client.submit_job_execution(job, run_config=IN_PROCESS)
    except DagsterGraphQLClientError as err:
        failures.append(str(err)[:500])
        return None


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process. As root, permissions do not stop writes: a read-only bind mount
    does (as a full disk or a read-only volume would)."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        try:
            yield
        finally:
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(mode)
        return
    proc = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_unwritable_artifact_root_fails_the_run_clearly_and_keeps_the_champion(
    rainfall_slice, tmp_path, monkeypatch
):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", str(artifacts))
    path, _ = rainfall_slice(years=3, name="readonly")
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    instance = dg.DagsterInstance.ephemeral()
    first = execute(cfg, config_file=str(path), storage=storage, instance=instance)
    assert first.status == "ok", first.error
    registry = ModelRegistry(cfg.model.name)
    assert registry.champion().version == "1"
    assert any(artifacts.rglob("*")), "the champion's artifacts are under MLOPS_ARTIFACT_ROOT"

    with read_only(artifacts):
        second = execute(cfg, config_file=str(path), storage=storage, instance=instance, reason="manual")
    assert second.status == "failed"
    assert second.error.startswith(f"{cfg.model.name}__trained_model: RegistryError: "), second.error
    assert "cannot write the model artifacts" in second.error and "MLOPS_ARTIFACT_ROOT" in second.error
    assert "Read-only file system" in second.error or "Permission denied" in second.error, second.error
    assert str(artifacts) in second.error and "nothing was registered" in second.error
    assert [str(v.version) for v in registry.client.search_model_versions(f"name='{cfg.model.name}'")] == [
        "1"
    ]
    assert second.promoted_version is None
    assert registry.champion().version == "1"
    assert [(d.version, d.reason) for d in registry.history()] == [("1", "initial")]
    # The champion still loads through the verified path.
    assert registry.load(alias="champion").model is not None
