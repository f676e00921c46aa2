"""The embedded instance's event log (mlops_assets.defs.embedded_storage): same files as Dagster's own SQLite event log,
connections kept between events, committed events surviving a crash, live runs still followed by a watcher."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mlops_assets.defs.embedded_storage import EmbeddedSqliteEventLogStorage
from mlops_assets.runner import instance_for
from mlops_assets.storage import Storage, storage_from_env

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")  # 31 partitions

JOB_SOURCE = """
import dagster as dg

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")


@dg.asset(
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("rows_present", asset="daily", blocking=True)],
)
def daily(context: dg.AssetExecutionContext):
    # The check's verdict and its metadata are what the storage must write and give back.
    covered = len(context.partition_keys)
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(
        check_name="rows_present",
        passed=covered == len(PARTITIONS.get_partition_keys()),
        metadata={"partitions_covered": covered},
    )


def run(instance, run_id=None):
    keys = PARTITIONS.get_partition_keys()
    job = dg.define_asset_job("daily_job", selection=[daily.key], executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=[daily], jobs=[job])
    return defs.resolve_job_def("daily_job").execute_in_process(
        instance=instance,
        run_id=run_id,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
"""


@pytest.fixture
def job_module(tmp_path, monkeypatch):
    (tmp_path / "daily_job.py").write_text(JOB_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import daily_job

    yield daily_job
    sys.modules.pop("daily_job", None)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Storage:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return storage_from_env({"MLOPS_HOME": str(tmp_path / "mlops")}).ensure()


def _materializations(storage: SqliteEventLogStorage, run_id: str) -> list[str]:
    records = storage.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1000
    )
    return sorted(r.event_log_entry.dagster_event.partition for r in records.records)


def test_the_embedded_instance_writes_files_dagsters_own_storage_reads(home, job_module):
    with instance_for(home) as instance:
        assert isinstance(instance.event_log_storage, EmbeddedSqliteEventLogStorage)
        result = job_module.run(instance)
        assert result.success
    plain = SqliteEventLogStorage(str(home.dagster_home / "history" / "runs"))
    assert _materializations(plain, result.run_id) == PARTITIONS.get_partition_keys()
    record = plain.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("daily"), "rows_present")]
    )
    stored = next(iter(record.values()))
    assert stored.status.value == "SUCCEEDED"
    evaluation = stored.event.dagster_event.event_specific_data
    assert evaluation.metadata["partitions_covered"].value == 31


def test_connections_are_kept_between_events(home, job_module):
    base = str((home.dagster_home / "history" / "runs").resolve())
    opened: list[str] = []

    def count(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            files = [row[2] for row in dbapi_conn.execute("PRAGMA database_list") if row[2]]
            opened.extend(f for f in files if os.path.realpath(f).startswith(base + os.sep))

    event.listen(Engine, "connect", count)
    try:
        with instance_for(home) as instance:
            result = job_module.run(instance)
    finally:
        event.remove(Engine, "connect", count)
    assert result.success
    events = len(result.all_events)
    assert events > 31
    # Dagster's own storage opens two or three connections per event (run file, index.db, a table question); kept
    # connections: one per file, and a few for creating the run file's tables and the instance's first look.
    assert len(opened) <= 10, f"{len(opened)} connections for {events} events: {Counter(opened)}"


def test_committed_events_survive_a_crash_of_the_process(home, job_module, tmp_path):
    code = f"""
import os, sys
sys.path[:0] = [{str(tmp_path)!r}, {str(ROOT)!r}]
from mlops_assets.runner import instance_for
from mlops_assets.storage import storage_from_env
import daily_job
instance = instance_for(storage_from_env({{"MLOPS_HOME": {str(home.home)!r}}}))
result = daily_job.run(instance)
print(result.run_id, flush=True)
os._exit(0)  # no close, no checkpoint: the newest events are in the WAL only
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.strip().splitlines()[-1]
    runs = home.dagster_home / "history" / "runs"
    assert (runs / f"{run_id}.db-wal").stat().st_size > 0
    plain = SqliteEventLogStorage(str(runs))
    assert _materializations(plain, run_id) == PARTITIONS.get_partition_keys()
    for name in (f"{run_id}.db", "index.db"):
        with sqlite3.connect(runs / name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_watcher_follows_a_live_run(home, job_module):
    seen: list[str] = []
    done = threading.Event()

    def on_event(entry, _cursor) -> None:
        seen.append(entry.dagster_event_type.value if entry.dagster_event_type else "")
        if entry.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS:
            done.set()

    run_id = str(uuid.uuid4())
    with instance_for(home) as instance:
        storage = instance.event_log_storage
        storage.watch(run_id, None, on_event)
        try:
            assert job_module.run(instance, run_id=run_id).success
            # The watcher learns of new events from the run file's changes; with the connection kept, the file
            # changes only through the modification time the storage sets after each write.
            assert done.wait(timeout=30), f"the watcher saw {len(seen)} events and no RUN_SUCCESS"
        finally:
            storage.end_watch(run_id, on_event)
    assert seen.count("ASSET_MATERIALIZATION") == 31
