"""Production mode for real: deploy/dagster.yaml on PostgreSQL, a code server, `dagster-daemon run` and
`dagster-webserver` as separate processes, MLflow and the deployment history on PostgreSQL too.

The helpers here (``production_stack``, ``pg_databases``, ``wait_for``) are shared with test_faults.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.config import load_config
from mlops_assets.defs.model_assets import REASON_TAG
from mlops_assets.defs.retraining import retrain_job_name, sensor_name
from mlops_assets.monitoring.replay import DRIFT_CHECK
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import execute
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.conftest import PG_URL, ROOT
from mlops_assets_tests.support import HttpReceiver, signature_ok

BIN = Path(os.sys.executable).parent
# Test-only override of deploy/dagster.yaml: the QueuedRunCoordinator's documented `dequeue_interval_seconds`
# (default 5 s) at 1 s, so a queued run is launched within a second (the queue, limits and pools are unchanged).
FAST_DEQUEUE = {"config": {"dequeue_interval_seconds": 1}}
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def pg_databases(n: int, server: str = PG_URL, templates: Sequence[str | None] = ()) -> Iterator[list[str]]:
    """``n`` fresh databases on ``server`` (Dagster, MLflow and the history each need their own: Dagster and
    MLflow both keep an ``alembic_version`` table); dropped afterwards. ``templates[i]``, when given, names a
    database on ``server`` the i-th one is copied from (e.g. ``mlflow_pg_template``: MLflow's schema migrated)."""
    import sqlalchemy as sa

    names = [f"mlops_prod_{uuid.uuid4().hex[:10]}" for _ in range(n)]
    # No pooled connections: the server may have been restarted by the time the databases are dropped.
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        for name, template in itertools.zip_longest(names, templates[:n]):
            if template:
                # A template must have no sessions (the process that migrated it may keep a pooled one).
                conn.exec_driver_sql(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'"
                )
            conn.exec_driver_sql(
                f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            )
    try:
        yield [f"{server}/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def production_instance_yaml(dagster_home: Path, **overrides) -> Path:
    """deploy/dagster.yaml as shipped, with test-only overrides (e.g. a short run-monitoring poll interval)."""
    data = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    for key, value in overrides.items():
        data.setdefault(key, {}).update(value)
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def pg_env(dagster_db_url: str) -> dict[str, str]:
    import sqlalchemy as sa

    url = sa.engine.make_url(dagster_db_url)
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database,
    }


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    grpc_port: int
    webserver_port: int | None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        # Own session: teardown signals this process group only (the process and the runs it spawned).
        proc = subprocess.Popen(
            args, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self) -> None:
        # SIGKILL to every process group (the process and the runs it spawned): no test looks at anything after
        # the stack stops, and a graceful shutdown (daemon threads finishing their iteration, the webserver
        # draining) costs seconds per stack. Runs still in flight die with their code server; the databases
        # are dropped WITH (FORCE) afterwards.
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=30)

    def graphql(self):
        from dagster_graphql import DagsterGraphQLClient

        assert self.webserver_port is not None, "this stack has no webserver"
        return DagsterGraphQLClient("127.0.0.1", port_number=self.webserver_port, timeout=60)

    def wait_run(self, instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> dg.DagsterRun:
        def done():
            run = instance.get_run_by_id(run_id)
            return run if run is not None and run.status in FINISHED else None

        try:
            return wait_for(done, timeout, f"run {run_id} to finish")
        except AssertionError as err:
            raise AssertionError(
                f"{err}\n--- daemon log ---\n{self.log('daemon')}\n--- code server log ---\n"
                f"{self.log('code_server')}"
            ) from None


@contextlib.contextmanager
def production_stack(
    workdir: Path,
    env: dict[str, str],
    *,
    webserver: bool = True,
    while_code_server_starts: Callable[[], object] | None = None,
) -> Iterator[Stack]:
    """Code server, daemon and (optionally) webserver as separate processes, as in the README's "Production".

    ``while_code_server_starts`` runs in this process while the code server boots (the code server only reads the
    config at startup; models and data are read when a sensor evaluates or a run executes), before the daemon
    starts: a test prepares its champion there instead of waiting for the code server first."""
    stack = Stack(
        env=env, workdir=workdir, grpc_port=free_port(), webserver_port=free_port() if webserver else None
    )
    workspace = workdir / "workspace.yaml"
    ws = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    ws["load_from"][0]["grpc_server"]["port"] = stack.grpc_port
    workspace.write_text(yaml.safe_dump(ws))
    try:
        stack.start(
            "code_server",
            [
                str(BIN / "dagster"),
                "code-server",
                "start",
                "-m",
                "mlops_assets.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(stack.grpc_port),
            ],
        )
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=stack.grpc_port, host="127.0.0.1")

        def serving():
            assert stack.alive("code_server"), f"code server exited:\n{stack.log('code_server')}"
            with (
                socket.socket() as probe
            ):  # Dagster's health check prints every refused connection: look first
                if probe.connect_ex(("127.0.0.1", stack.grpc_port)) != 0:
                    return False
            with contextlib.suppress(Exception):
                return client.health_check_query() == "SERVING"
            return False

        def start_webserver() -> None:
            wait_for(serving, 90, "the code server", interval=0.2)
            stack.start(
                "webserver",
                [
                    str(BIN / "dagster-webserver"),
                    "-w",
                    str(workspace),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(stack.webserver_port),
                ],
            )

        # The webserver boots as soon as the code server serves, while the test prepares its data; the daemon
        # waits for the preparation (its sensors' first ticks must see the prepared state).
        errors: list[BaseException] = []
        booting = (
            threading.Thread(target=lambda: _record_error(start_webserver, errors)) if webserver else None
        )
        if booting is not None:
            booting.start()
        try:
            if while_code_server_starts is not None:
                while_code_server_starts()
        finally:
            if booting is not None:
                booting.join()
        if errors:
            raise errors[0]
        wait_for(serving, 90, "the code server", interval=0.2)
        stack.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        if webserver:

            def up():
                assert stack.alive("webserver"), f"webserver exited:\n{stack.log('webserver')}"
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"http://127.0.0.1:{stack.webserver_port}/server_info", timeout=5),
                ):
                    return True
                return False

            wait_for(up, 90, "the webserver", interval=0.2)
        yield stack
    finally:
        stack.stop()


def _record_error(fn: Callable[[], None], errors: list[BaseException]) -> None:
    """Run ``fn`` (in a thread), keeping its exception for the caller to raise."""
    try:
        fn()
    except BaseException as err:
        errors.append(err)


@pytest.fixture(name="production")
def production_fixture(tmp_path, monkeypatch, isolated_storage, mlflow_pg_template):
    """PostgreSQL for Dagster (deploy/dagster.yaml), MLflow and the deployment history; returns a factory that
    starts the processes once the test has prepared its data. Yields (env, instance, start)."""
    with pg_databases(3, templates=[None, mlflow_pg_template]) as (dagster_db, mlflow_db, history_db):
        env_vars = {
            **pg_env(dagster_db),
            "MLFLOW_TRACKING_URI": mlflow_db,
            "MLOPS_DEPLOYMENT_HISTORY_URL": history_db,
        }
        for k, v in env_vars.items():
            monkeypatch.setenv(k, v)
        dagster_home = Path(os.environ["DAGSTER_HOME"])
        production_instance_yaml(dagster_home, run_coordinator=FAST_DEQUEUE)
        with dg.DagsterInstance.get() as instance:
            stacks: list = []

            def start(config_path: Path, webserver: bool = True, while_code_server_starts=None) -> Stack:
                env = dict(os.environ, MLOPS_CONFIG=str(config_path), OMP_NUM_THREADS="1")
                cm = production_stack(
                    tmp_path, env, webserver=webserver, while_code_server_starts=while_code_server_starts
                )
                stacks.append(cm)
                return cm.__enter__()

            try:
                yield env_vars, instance, start
            finally:
                for cm in reversed(stacks):
                    cm.__exit__(None, None, None)


def initial_champion(path: Path, instance: dg.DagsterInstance, last: str, new_until: str | None = None):
    """Materialize the graph in-process on the production instance up to partition ``last`` (champion v1), then
    ingest ``..new_until`` (raw, validated, features) as new data the champion has not seen."""
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    first = execute(
        cfg, config_file=str(path), storage=storage, instance=instance, partition_keys=("1949-01", last)
    )
    assert first.status == "ok", first.error
    if new_until:
        nxt = execute(
            cfg,
            config_file=str(path),
            storage=storage,
            instance=instance,
            selection=["raw_data", "validated_data", "features"],
            partition_keys=(_next_month(last), new_until),
        )
        assert nxt.status == "ok", nxt.error
    return cfg


def _next_month(key: str) -> str:
    y, m = map(int, key.split("-"))
    return f"{y + m // 12}-{m % 12 + 1:02d}"


@pytest.mark.postgres
@pytest.mark.integration
def test_instance_config_loads_on_postgres_with_queue_pool_retries_and_monitoring(tmp_path, production):
    _, instance, _ = production
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    # A gate that blocks a retrain is a result, not something to retry; a dead run worker is.
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    assert instance.run_monitoring_enabled
    # A run orphaned by a dead code server ends failed, and a promotion slot it held is handed back.
    assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
    # Nothing secret in the file: every connection setting comes from the environment.
    text = (ROOT / "deploy" / "dagster.yaml").read_text()
    for key in ("hostname", "port", "username", "password", "db_name"):
        assert f"{key}: {{ env: DAGSTER_PG_" in text


@pytest.mark.postgres
@pytest.mark.integration
@pytest.mark.slow
def test_freshness_sensor_retrain_goes_end_to_end_through_the_daemon(rainfall_slice, production, monkeypatch):
    """The freshness sensor under the daemon requests a retrain, the daemon launches it, it promotes version 2;
    the alerts reach a webhook the test runs on loopback: the request (sent by the sensor in the code server) and
    the run's retrain_finished and promoted (sent by the run's own process), each HMAC-signed with the secret the
    processes read from their environment, each within 60 s of its event, and recorded as delivered."""
    env_vars, instance, start = production
    secret = uuid.uuid4().hex
    # The secret goes to the code server, the daemon and the runs through their environment; the config names it.
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", secret)
    with HttpReceiver() as hook:
        path, _ = rainfall_slice(
            years=4,
            name="prod",
            retraining={"max_model_age_days": 1e-5, "drift_trigger": False, "cooldown_days": 0},
            alerts={
                "channels": [
                    {"type": "webhook", "url": f"{hook.url}/hook", "secret_env": "MLOPS_WEBHOOK_SECRET"}
                ]
            },
        )
        assert secret not in path.read_text()
        cfg = load_config(path)
        registry = ModelRegistry(cfg.model.name, storage_from_env())

        def champion_v1_and_new_data():
            # The daemon starts after this: the freshness sensor's first tick must see champion v1 (its next
            # tick is an hour away).
            initial_champion(path, instance, last="1951-12", new_until="1952-12")
            assert [(d.version, d.reason) for d in registry.history()] == [("1", "initial")]

        stack = start(path, webserver=True, while_code_server_starts=champion_v1_and_new_data)
        job = retrain_job_name(cfg)

        def launched():
            runs = instance.get_runs(dg.RunsFilter(job_name=job))
            return runs[0] if runs else None

        run = wait_for(launched, 90, f"the daemon to launch {job}")
        run = stack.wait_run(instance, run.run_id, timeout=150)
        assert run.status == dg.DagsterRunStatus.SUCCESS, stack.log("daemon")
        assert run.tags[REASON_TAG] == "freshness"
        assert run.tags["dagster/sensor_name"] == sensor_name(cfg, "freshness")
        history = registry.history()
        assert [(d.version, d.reason, d.previous_version) for d in history] == [
            ("1", "initial", None),
            ("2", "freshness", "1"),
        ]
        assert history[-1].run_id == run.run_id
        assert registry.champion().version == "2"
        # The webserver sees the same run through GraphQL (its status from the shared PostgreSQL run storage).
        assert stack.graphql().get_run_status(run.run_id) == dg.DagsterRunStatus.SUCCESS
        # The run sends its alerts before it ends: they are in by now.
        received = hook.requests()

    # The freshness sensor's tick that requested this run (the daemon records it with the run's id).
    [sensor_state] = [s for s in instance.all_instigator_state() if s.name == sensor_name(cfg, "freshness")]
    [tick] = [
        t
        for t in instance.get_ticks(sensor_state.instigator_origin_id, sensor_state.selector_id)
        if run.run_id in t.run_ids
    ]
    ended = instance.get_run_record_by_id(run.run_id).end_time
    promoted_at = datetime.fromisoformat(history[-1].deployed_at).timestamp()

    # Every alert of the model, HMAC-signed with the secret from the environment.
    model = cfg.model.name
    assert all(signature_ok(r, secret) for r in received), [r["headers"] for r in received]
    assert all(
        r["headers"]["X-Mlops-Event"] == r["json"]["event"] and r["json"]["model"] == model for r in received
    )
    # The check-alerts sensor ticks on its own: the drift it reads from the new data the in-process ingest
    # checked (the retrain job runs no drift check) arrives in any order relative to the freshness sensor's.
    drift = [r["json"] for r in received if r["json"]["event"] == "drift_detected"]
    assert [(d["check"], d["run_id"] != run.run_id) for d in drift] == [(DRIFT_CHECK, True)], drift
    # The others in order: v1's initial promotion (the in-process run, sent from this process), the sensor's
    # request (the freshness incident of v1, the retrain), then the sensor-started run's own alerts (v2 promoted,
    # which ends v1's freshness incident, and the retrain finished).
    ordered = [r for r in received if r["json"]["event"] != "drift_detected"]
    assert [(r["json"]["event"], r["json"]["status"], r["json"].get("version")) for r in ordered] == [
        ("promoted", "notice", "1"),
        ("freshness_breached", "firing", "1"),
        ("retrain_started", "notice", "1"),
        ("promoted", "notice", "2"),
        ("freshness_breached", "resolved", "1"),
        ("retrain_finished", "notice", "2"),
    ]
    _, breached, started, promoted, cleared, finished = ordered
    # The request: sent by the sensor during the tick that requested the run, tied to the run by its run key
    # (there is no run id before Dagster creates the run).
    assert started["json"]["details"] == {"trigger": "freshness", "run_key": run.tags["dagster/run_key"]}
    for r in (breached, started):
        assert tick.timestamp <= r["at"] <= tick.timestamp + 60, (tick.timestamp, r["at"])
    # The run's alerts: the sensor-started run's id, sent by the run itself within 60 s of the promotion.
    assert promoted["json"]["run_id"] == cleared["json"]["run_id"] == finished["json"]["run_id"] == run.run_id
    assert breached["json"]["dedup_key"] == cleared["json"]["dedup_key"] == "freshness_breached:1"
    assert cleared["json"]["details"] == {"champion": "2"}
    assert promoted["json"]["details"]["previous_version"] == "1"
    assert promoted["json"]["details"]["reason"] == "freshness"
    assert finished["json"]["details"]["trigger"] == "freshness"
    for r in (promoted, cleared, finished):
        assert promoted_at <= r["at"] <= min(promoted_at + 60, ended), (promoted_at, r["at"], ended)

    # The deployment history records each of them as delivered to the webhook, the promotion tied to its row.
    records = registry.history_store.alerts(model)

    def as_sent(payload: dict, kind: str, state: str, delivered: bool) -> tuple:
        return json.dumps(payload, sort_keys=True), kind, state, delivered

    assert sorted(as_sent(a["payload"], a["kind"], a["state"], a["delivered"]) for a in records) == sorted(
        as_sent(r["json"], r["json"]["event"], "resolved" if r is cleared else "sent", True) for r in received
    )
    assert all(
        [(d["channel"], d["ok"], d["attempts"]) for d in a["deliveries"]]
        == [(f"webhook {hook.url}/hook", True, 1)]
        for a in records
    )
    [moved] = [a for a in records if a["kind"] == "promoted" and a["payload"]["version"] == "2"]
    assert moved["deployment_id"] == history[-1].id

    # MLflow and the history really are on PostgreSQL: the new version and its deployment row are there.
    import sqlalchemy as sa

    with sa.create_engine(env_vars["MLFLOW_TRACKING_URI"]).connect() as conn:
        versions = (
            conn.exec_driver_sql(
                "SELECT version FROM model_versions WHERE name = %(n)s ORDER BY version",
                {"n": cfg.model.name},
            )
            .scalars()
            .all()
        )
    assert versions == [1, 2]
