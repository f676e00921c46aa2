"""Faults in production mode: a run killed mid-training, PostgreSQL restarted under the daemon, two promotions at
once, an artifact store that refuses writes. Each leaves the champion and the deployment history consistent.

The tests with processes share one stack per module (code server, daemon and webserver started once: booting them
is most of a test's time on a 2-core machine): Dagster's storage on a PostgreSQL server of the module's own (the
restart test restarts it under the running stack), MLflow and the deployment history on the shared server,
recreated empty before each test, so each test starts from an empty registry and no run in flight.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.config import load_config
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.retraining import retrain_job_name
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import execute
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.conftest import PG_URL, STORAGE_VARS, write_slice
from mlops_assets_tests.support import toy_versions
from mlops_assets_tests.test_production_stack import (
    FAST_DEQUEUE,
    FINISHED,
    Stack,
    free_port,
    initial_champion,
    pg_databases,
    pg_env,
    production_instance_yaml,
    production_stack,
    wait_for,
)

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
CAN_RUN_POSTGRES = PG_BIN is not None and shutil.which("runuser") is not None
# Launched runs execute their steps in the run process (`dagster api execute_run`, started by the code server)
# rather than one more subprocess per step: these tests are about the run process, the daemon and the storage,
# and a step process costs seconds of imports on a loaded 2-core machine. The pool limit holds either way (the
# in-process executor claims concurrency slots like the multiprocess one).
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _toy_versions(config: Path, n: int) -> list[str]:
    """``n`` versions of ``config``'s model the champion guard clears (see support.toy_versions)."""
    return toy_versions(ModelRegistry.from_config(load_config(config), storage_from_env()), n)


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


@dataclass(frozen=True)
class PrivatePostgres:
    """A server of :func:`private_postgres`: its URL (no database) and what stops and starts it."""

    url: str
    restart: Callable[[], None]
    stop: Callable[[], None]
    start: Callable[[], None]


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of our own (initdb + pg_ctl as the postgres OS user) on a free port; yields a
    :class:`PrivatePostgres`. Never the shared server: this one gets restarted or stopped."""
    if not CAN_RUN_POSTGRES:
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

        yield PrivatePostgres(
            url=f"postgresql://postgres@127.0.0.1:{port}",
            restart=lambda: pg(*ctl, "-w", "-m", "fast", "restart"),
            stop=lambda: pg(*ctl, "-w", "-m", "fast", "stop"),
            start=lambda: pg(*ctl, "-w", "start"),
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


class RegistryDatabases:
    """MLflow's and the deployment history's databases for the module's stack, and saved states of them.

    ``urls`` are fresh databases on one server (made by the caller): the working pair the processes use (MLflow's
    already migrated), then a template pair per saved state. ``prepare()`` creates the history's tables and saves
    the pair as state ``empty``; ``save(state)`` copies the working pair into that state's templates;
    ``reset(state)`` recreates the working pair from them: a registry in a known state in a fraction of a second,
    instead of MLflow's migrations (and a champion's training) per test."""

    STATES = ("empty", "champion")

    def __init__(self, urls: list[str]):
        assert len(urls) == 2 + 2 * len(self.STATES)
        self.mlflow_db, self.history_db = urls[:2]
        self.templates = {state: urls[2 + 2 * i : 4 + 2 * i] for i, state in enumerate(self.STATES)}

    def prepare(self) -> None:
        from mlops_assets.registry.history import DeploymentHistory

        DeploymentHistory(self.history_db).entries("schema")
        self.save("empty")

    def save(self, state: str) -> None:
        self._copy(zip([self.mlflow_db, self.history_db], self.templates[state], strict=True))

    def reset(self, state: str = "empty") -> None:
        self._copy(zip(self.templates[state], [self.mlflow_db, self.history_db], strict=True))

    def _copy(self, pairs) -> None:
        import sqlalchemy as sa

        server = self.mlflow_db.rsplit("/", 1)[0]
        admin = sa.create_engine(
            f"{server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        with admin.connect() as conn:
            for source, target in pairs:
                s, t = source.rsplit("/", 1)[1], target.rsplit("/", 1)[1]
                # WITH (FORCE): long-lived processes (the code server's sensors, this process) may hold pooled
                # connections to the target; they reconnect (MLflow pings before use, the history connects per
                # operation). A template must have no sessions at all.
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{t}" WITH (FORCE)')
                conn.exec_driver_sql(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{s}'"
                )
                conn.exec_driver_sql(f'CREATE DATABASE "{t}" TEMPLATE "{s}"')
        admin.dispose()


@dataclass
class FaultsStack:
    """The module's running stack and the environment its processes run with (the tests use the same)."""

    stack: Stack
    instance: dg.DagsterInstance
    env: dict[str, str]
    config: Path
    restart_postgres: Callable[[], None] | None  # None: Dagster's storage is on the shared server
    registry: RegistryDatabases

    def settle(self, timeout: float = 180) -> None:
        """Wait until no run is queued or in flight (a test left nothing behind for the next one)."""
        busy = [s for s in dg.DagsterRunStatus if s not in FINISHED]

        def idle():
            return not self.instance.get_runs(dg.RunsFilter(statuses=busy), limit=1)

        try:
            wait_for(idle, timeout, "no run in flight on the module's stack")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- daemon log ---\n{self.stack.log('daemon')}") from None


# The champion the killed-run test starts from: the graph materialized in-process up to this partition.
CHAMPION_UNTIL = "1950-12"


@pytest.fixture(scope="module")
def faults_stack(tmp_path_factory, rainfall, mlflow_pg_template) -> Iterator[FaultsStack]:
    """One production stack for this module's process tests; see the module docstring."""
    root = tmp_path_factory.mktemp("faults_stack")
    home = root / "mlops_home"
    home.mkdir()
    # Two years: the killed run's champion needs real training on real data, not much of it (the retry retrains
    # the same data and must pass the same gates).
    config, _ = write_slice(root, rainfall, years=2, name="faults")
    with contextlib.ExitStack() as databases:
        # Dagster's storage on a server of the module's own (restartable); without the binaries to run one, on the
        # shared server, and only the restart test skips.
        private = databases.enter_context(private_postgres()) if CAN_RUN_POSTGRES else None
        server, restart = (private.url, private.restart) if private else (PG_URL, None)
        (dagster_db,) = databases.enter_context(pg_databases(1, server))
        registry = RegistryDatabases(
            databases.enter_context(
                pg_databases(2 + 2 * len(RegistryDatabases.STATES), templates=[mlflow_pg_template])
            )
        )
        env = {
            "MLOPS_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            **pg_env(dagster_db),
            "MLFLOW_TRACKING_URI": registry.mlflow_db,
            "MLOPS_DEPLOYMENT_HISTORY_URL": registry.history_db,
            "MLOPS_CONFIG": str(config),
        }
        production_instance_yaml(home / "dagster", run_coordinator=FAST_DEQUEUE)

        @contextlib.contextmanager
        def stack_env():
            with pytest.MonkeyPatch.context() as mp:
                for k in STORAGE_VARS:
                    mp.delenv(k, raising=False)
                for k, v in env.items():
                    mp.setenv(k, v)
                yield

        with stack_env():
            instance = dg.DagsterInstance.get()  # creates Dagster's schema before any process starts

        def prepare_registry() -> None:
            # While the code server boots (it reads neither the registry nor the data at startup), before the
            # daemon starts: the killed-run test's champion, trained once per module.
            registry.prepare()
            with stack_env():
                initial_champion(config, instance, last=CHAMPION_UNTIL)
            registry.save("champion")

        process_env = {k: v for k, v in os.environ.items() if k not in STORAGE_VARS}
        process_env.update(env, OMP_NUM_THREADS="1")
        with (
            instance,
            production_stack(root, process_env, while_code_server_starts=prepare_registry) as stack,
        ):
            yield FaultsStack(stack, instance, env, config, restart, registry)


def _use_stack(faults_stack: FaultsStack, monkeypatch, registry_state: str) -> FaultsStack:
    """The module's stack with nothing in flight and the registry in ``registry_state``; this test's process uses
    the stack's storage (Dagster, MLflow, history, MLOPS_HOME)."""
    faults_stack.settle()
    faults_stack.registry.reset(registry_state)
    for k, v in faults_stack.env.items():
        monkeypatch.setenv(k, v)
    return faults_stack


@pytest.fixture
def faults(faults_stack, monkeypatch, isolated_storage) -> FaultsStack:
    """The module's stack, an empty registry."""
    return _use_stack(faults_stack, monkeypatch, "empty")


@pytest.fixture
def faults_with_champion(faults_stack, monkeypatch, isolated_storage) -> FaultsStack:
    """The module's stack, the registry holding champion v1 trained on the data up to ``CHAMPION_UNTIL`` (and
    nothing else)."""
    return _use_stack(faults_stack, monkeypatch, "champion")


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.slow
def test_run_killed_during_training_is_failed_champion_unchanged_and_the_retry_promotes(faults_with_champion):
    faults = faults_with_champion
    instance, stack = faults.instance, faults.stack
    cfg = load_config(faults.config)
    registry = ModelRegistry(cfg.model.name, storage_from_env())
    assert registry.champion().version == "1"
    assert [(d.version, d.reason) for d in registry.history()] == [("1", "initial")]
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
def test_two_promotions_at_once_are_serialized_by_the_pool_and_the_history_stays_consistent(faults):
    instance, stack = faults.instance, faults.stack
    name = load_config(faults.config).model.name
    registry = ModelRegistry(name, storage_from_env())
    v1, v2 = _toy_versions(faults.config, 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
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


@pytest.mark.postgres
@pytest.mark.integration
def test_postgres_restart_under_the_daemon_loses_no_run(faults):
    if faults.restart_postgres is None:
        pytest.skip("PostgreSQL server binaries or runuser not available")
    instance, stack = faults.instance, faults.stack
    name = load_config(faults.config).model.name
    registry = ModelRegistry(
        name, storage_from_env()
    )  # MLflow and the history are on the shared server: only Dagster's restarts
    v1, v2 = _toy_versions(faults.config, 2)
    registry.promote(v1, reason="initial")
    registry.promote(v2, reason="manual")
    client = stack.graphql()
    job = f"{name}_rollback_job"
    # The module's earlier tests ran this job too: this test's runs are those created from here on.
    since = datetime.now(UTC) - timedelta(seconds=1)
    before = [client.submit_job_execution(job, run_config=IN_PROCESS) for _ in range(2)]
    restarted_at = time.time()
    faults.restart_postgres()  # while the daemon dequeues and launches them
    failed_submissions: list[str] = []
    after = wait_for(
        lambda: _submit_or_none(client, job, failed_submissions),
        60,
        "the webserver to accept a run after the restart",
        interval=0.5,
    )
    submitted = [*before, after]
    # A submission the client saw fail during the restart may still have created its run: the webserver either
    # enqueued it (the response was lost) or recorded it as failed without starting it. The runs the client was
    # told about must all succeed; an extra run (at most one per failed submission) either succeeded too or
    # never started, and no run failed after it started.
    acknowledged = {stack.wait_run(instance, r, timeout=120).status for r in submitted}
    assert acknowledged == {dg.DagsterRunStatus.SUCCESS}, stack.log("daemon")
    all_runs = instance.get_runs(dg.RunsFilter(job_name=job, created_after=since))
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
    # Every daemon still heartbeats into the restarted server (the scheduler's loop wakes once a minute).
    wait_for(
        lambda: (
            (b := instance.get_daemon_heartbeats()) and all(h.timestamp > restarted_at for h in b.values())
        ),
        90,
        "every daemon to heartbeat into the restarted server",
        interval=1,
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
    path, _ = rainfall_slice(years=2, name="readonly")
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    instance = dg.DagsterInstance.ephemeral()
    first = execute(cfg, config_file=str(path), storage=storage, instance=instance)
    assert first.status == "ok", first.error
    registry = ModelRegistry(cfg.model.name, storage_from_env())
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
