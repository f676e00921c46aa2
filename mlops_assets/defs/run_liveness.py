"""Runs whose process is gone, on the embedded instance: marked failed and their concurrency slots freed.

A run killed with SIGKILL (the OOM killer, ``kill -9``, a closed laptop lid's crash) reports nothing: its status
stays STARTED and a concurrency slot it held (the ``mlops_promotion`` pool) stays claimed, so every later promotion
waits forever and the retraining sensors see "a retrain in flight" forever. Production instances have run monitoring
in the daemon and a code server that marks the runs it launched failed when their process dies; the embedded default
runs in process (``mlops-assets run``) or under ``dagster dev`` on one machine, so the run's process id recorded at
its start tells whether it still runs (:func:`mlops_assets.processes.process_alive`).

Applied only where every run executes on this machine: an instance whose run storage is SQLite (or in memory), and
never to a run tagged with another host name (:data:`HOST_TAG`).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from mlops_assets.processes import process_alive

# Statuses of a run whose process has begun (its RUN_START event records the process id).
RUNNING = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# The machine a run executes on, tagged by the runs `mlops-assets` starts: process ids mean nothing elsewhere (another
# container sharing the instance's folder has its own).
HOST_TAG = "mlops/host"


@dataclass(frozen=True)
class DeadRun:
    """A run found without its process: marked failed here, its slots freed."""

    run_id: str
    job_name: str
    pid: int | None

    def describe(self) -> str:
        return f"run {self.run_id} ({self.job_name}, pid {self.pid})"


def judges_liveness(instance: dg.DagsterInstance) -> bool:
    """Whether ``instance``'s runs all execute on this machine (SQLite or in-memory run storage), so a process id
    recorded by a run can be looked up here."""
    from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage | InMemoryRunStorage)


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The process id a run recorded when it started, and when (POSIX seconds); None before it started."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event is not None else None
    return (pid, entry.timestamp) if pid else None


def is_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether ``run`` (started, not finished) has lost its process: only judged where
    :func:`judges_liveness` holds; a run that has not recorded its process yet is not judged."""
    if run.status not in RUNNING or not judges_liveness(instance):
        return False
    if run.tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return False
    started = run_process(instance, run.run_id)
    return started is not None and not process_alive(*started)


def mark_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, found_by: str) -> DeadRun:
    """Record ``run`` as failed (its process is gone) and free the concurrency slots it holds."""
    started = run_process(instance, run.run_id)
    pid = started[0] if started else None
    instance.report_run_failed(
        run,
        message=f"the process of this run (pid {pid}) is gone: killed or crashed without reporting; marked "
        f"failed by {found_by}, and its concurrency slots freed",
    )
    _free_slots(instance, run.run_id)
    return DeadRun(run.run_id, run.job_name, pid)


def reap_dead_runs(instance: dg.DagsterInstance, found_by: str) -> list[DeadRun]:
    """Mark every run of ``instance`` whose process is gone as failed, and free the concurrency slots still held
    by runs that have ended (a run marked failed by hand or by a code server keeps its slots otherwise). Nothing is
    judged on an instance whose runs may execute on other machines (see :func:`judges_liveness`)."""
    if not judges_liveness(instance):
        return []
    dead = [
        mark_dead(instance, record.dagster_run, found_by)
        for record in instance.get_run_records(dg.RunsFilter(statuses=RUNNING))
        if is_dead(instance, record.dagster_run)
    ]
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            runs = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(run_ids=list(holders)))}
            for run_id in holders:
                run = runs.get(run_id)
                if run is None or run.status in FINISHED_STATUSES:
                    storage.free_concurrency_slots_for_run(run_id)
    return dead


def live_runs(
    instance: dg.DagsterInstance, records: Sequence[dg.RunRecord], found_by: str
) -> list[dg.RunRecord]:
    """``records`` without the runs whose process is gone (those are marked failed and their slots freed)."""
    alive = []
    for record in records:
        if is_dead(instance, record.dagster_run):
            mark_dead(instance, record.dagster_run, found_by)
        else:
            alive.append(record)
    return alive


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)
