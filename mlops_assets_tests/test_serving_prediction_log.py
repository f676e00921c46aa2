"""The prediction log on SQLite and on a real PostgreSQL: batched writes off the caller's path, feedback, errors
raised (not swallowed), and the live-performance function per partition."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from mlops_assets.monitoring.performance_log import live_performance
from mlops_assets.serving.prediction_log import (
    FutureLabelError,
    LabelConflictError,
    PredictionLog,
    PredictionLogError,
    UnknownPredictionError,
)
from mlops_assets_tests.test_serving_support import trained

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "mlops_serving_test"


def _records(n: int, start: datetime, version: str = "1", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    proba = rng.random(n)
    return [
        {
            "id": f"{version}-{seed}-{i}",
            "predicted_at": datetime.now(UTC),
            "event_time": start + timedelta(days=i),
            "model_name": "mlops_model",
            "model_version": version,
            "inputs": (("x", "y"), [float(i), float("nan")], None),
            "prediction": int(proba[i] >= 0.5),
            "probability": float(proba[i]),
        }
        for i in range(n)
    ]


def _exercise(url: str, spill_dir) -> None:
    log = PredictionLog(url, batch_size=50, flush_interval=0.05, spill_dir=spill_dir)
    try:
        start = datetime(1998, 1, 1, tzinfo=UTC)
        recs = _records(120, start)
        t0 = datetime.now()
        log.submit(recs)
        assert (datetime.now() - t0).total_seconds() < 0.05  # queued, not written by the caller
        log.flush()
        assert log.count() == 120
        [r] = log.records(["1-0-3"])
        assert r.inputs == {"x": 3.0, "y": None} and r.label is None
        assert r.event_time == start + timedelta(days=3)

        # Labels: January has both classes, February's labels are all 1 (roc_auc None), March is unlabeled.
        jan = [x for x in recs if x["event_time"].month == 1]
        feb = [x for x in recs if x["event_time"].month == 2]
        y_jan = [i % 2 for i in range(len(jan))]
        log.attach_labels([x["id"] for x in jan + feb], y_jan + [1] * len(feb))
        with pytest.raises(UnknownPredictionError, match="nope"):
            log.attach_labels(["1-0-0", "nope"], [0, 1])
        assert log.records(["1-0-0"])[0].label == 0  # unchanged by the refused call
        # Written once: a second label for an id is refused, and the whole call changes nothing.
        with pytest.raises(LabelConflictError, match="1-0-0"):
            log.attach_labels(["1-0-90", "1-0-0"], [1, 1])
        assert [r.label for r in log.records(["1-0-0", "1-0-90"])] == [0, None]
        # Outcomes are known after their event: labels for future-dated predictions are refused.
        future = _records(2, datetime.now(UTC) + timedelta(days=30), seed=7)
        log.submit(future)
        with pytest.raises(FutureLabelError, match="7-0"):
            log.attach_labels([future[0]["id"], "1-0-91"], [1, 0])
        assert [r.label for r in log.records([future[0]["id"], "1-0-91"])] == [None, None]
        log.attach_labels([future[0]["id"]], [1], now=future[0]["event_time"] + timedelta(days=1))

        cfg = trained().cfg  # monthly partitions, model mlops_model
        perf = live_performance(cfg, url, partitions=["1998-01", "1998-02", "1998-03"])
        from sklearn.metrics import roc_auc_score

        expected = roc_auc_score(y_jan, [x["probability"] for x in jan])
        assert perf["1998-01"]["n"] == 31 and perf["1998-01"]["roc_auc"] == pytest.approx(expected, abs=1e-12)
        assert perf["1998-02"]["n"] == 28 and perf["1998-02"]["roc_auc"] is None
        assert perf["1998-02"]["accuracy"] == pytest.approx(np.mean([x["prediction"] == 1 for x in feb]))
        assert perf["1998-03"]["n"] == 0 and perf["1998-03"]["roc_auc"] is None
        assert perf["1998-01"]["model_versions"] == ["1"]
        assert sorted(live_performance(cfg, url))[:2] == ["1998-01", "1998-02"]
    finally:
        log.close()


def test_prediction_log_on_sqlite(tmp_path):
    _exercise(f"sqlite:///{tmp_path / 'predictions.db'}", tmp_path / "spill")


@pytest.mark.postgres
def test_prediction_log_on_postgresql(tmp_path):
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {PG_DB}"))
    try:
        _exercise(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}", tmp_path / "spill")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        admin.dispose()


class _Lock:
    """Another connection holding SQLite's write lock (``BEGIN EXCLUSIVE``) until released."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_locked_database_costs_no_record_and_health_says_degraded_meanwhile(tmp_path):
    """SQLite locked by another connection for ~2 s while records keep coming: submit never blocks or raises, the
    records go to spill files, status() is "degraded", feedback waits then says why; once the lock is released
    every record is stored exactly once and status() is "ok" again."""
    db = tmp_path / "p.db"
    spill = tmp_path / "spill"
    log = PredictionLog(
        f"sqlite:///{db}", flush_interval=0.02, spill_dir=spill, write_timeout=1.0, retry_interval=0.2
    )
    try:
        first = _records(10, datetime(2000, 1, 1, tzinfo=UTC), seed=1)
        log.submit(first)
        log.flush()
        assert log.status() == {"status": "ok"}

        lock = _Lock(db)
        submitted = list(first)
        t_end = time.monotonic() + 2.5
        seed = 2
        while time.monotonic() < t_end:
            recs = _records(20, datetime(2000, 1, 1, tzinfo=UTC), seed=seed)
            t0 = time.perf_counter()
            log.submit(recs)
            # The caller never waits for the database (a write waits up to 1 s for the lock, then fails).
            assert time.perf_counter() - t0 < 0.5
            submitted += recs
            seed += 1
            time.sleep(0.05)
        assert log.status()["status"] == "degraded" and "locked" in log.status()["error"]
        assert list(spill.glob("*.jsonl")), "nothing was spilled"
        with pytest.raises(PredictionLogError, match="kept"):
            log.attach_labels([first[0]["id"]], [1], wait=0.3)
        lock.release()

        _wait_for(lambda: log.status() == {"status": "ok"})
        log.flush(timeout=20)
        assert log.count() == len(submitted)
        assert {r.id for r in log.records()} == {r["id"] for r in submitted}
        assert not list(spill.iterdir())
        assert log.attach_labels([first[0]["id"]], [1]) == 1
    finally:
        log.close()


def test_records_spilled_when_the_service_stops_are_stored_by_the_next_start(tmp_path):
    db = tmp_path / "p.db"
    spill = tmp_path / "spill"
    url = f"sqlite:///{db}"
    log = PredictionLog(url, flush_interval=0.02, spill_dir=spill, write_timeout=0.2, retry_interval=0.1)
    lock = _Lock(db)
    recs = _records(30, datetime(2001, 1, 1, tzinfo=UTC), seed=3)
    log.submit(recs)
    log.close()  # the database is still locked: the records stay on disk
    assert list(spill.glob("*.jsonl"))
    lock.release()

    again = PredictionLog(url, flush_interval=0.02, spill_dir=spill, retry_interval=0.1)
    try:
        _wait_for(lambda: again.count() == 30)
        assert [r.inputs for r in again.records([recs[4]["id"]])] == [{"x": 4.0, "y": None}]
        _wait_for(lambda: again.status() == {"status": "ok"})
        assert not list(spill.iterdir())
    finally:
        again.close()


def test_a_batch_the_database_refuses_is_kept_and_replayed_without_doubles(tmp_path):
    """A batch whose insert fails (here: ids already stored, as after a commit whose answer was lost) is spilled
    and replayed by an insert that skips stored ids: nothing doubled, nothing lost, no error left behind."""
    log = PredictionLog(
        f"sqlite:///{tmp_path / 'p.db'}", flush_interval=0.01, spill_dir=tmp_path / "s", retry_interval=0.05
    )
    try:
        recs = _records(2, datetime(2000, 1, 1, tzinfo=UTC))
        log.submit(recs)
        log.flush()
        more = _records(3, datetime(2002, 1, 1, tzinfo=UTC), seed=9)
        log.submit([*_records(2, datetime(2000, 1, 1, tzinfo=UTC)), *more])
        log.flush(timeout=10)
        assert log.count() == 5
        _wait_for(lambda: log.status() == {"status": "ok"})
    finally:
        log.close()


def test_submit_is_thread_safe_during_an_outage(tmp_path):
    db = tmp_path / "p.db"
    log = PredictionLog(
        f"sqlite:///{db}",
        flush_interval=0.01,
        spill_dir=tmp_path / "s",
        write_timeout=0.1,
        retry_interval=0.1,
    )
    lock = _Lock(db)

    def producer(k: int) -> None:
        for j in range(20):
            log.submit(_records(5, datetime(2003, 1, 1, tzinfo=UTC), seed=100 * k + j))
            time.sleep(0.01)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.status()["status"] == "degraded"
    lock.release()
    try:
        log.flush(timeout=20)
        assert log.count() == 4 * 20 * 5
    finally:
        log.close()


@pytest.mark.slow
def test_postgresql_stopped_and_restarted_under_load_loses_no_record(tmp_path):
    """The prediction log's own PostgreSQL server stopped for ~2 s and started again while records keep coming:
    "degraded" during, "ok" after, every record stored exactly once."""
    from mlops_assets_tests.test_faults import private_postgres

    with private_postgres() as server:
        url, stop, start = f"{server.url}/postgres", server.stop, server.start
        log = PredictionLog(
            url, flush_interval=0.02, spill_dir=tmp_path / "spill", write_timeout=1.0, retry_interval=0.2
        )
        submitted: list[str] = []
        done = threading.Event()

        def producer() -> None:
            seed = 1000
            while not done.is_set():
                recs = _records(10, datetime(2004, 1, 1, tzinfo=UTC), seed=seed)
                log.submit(recs)
                submitted.extend(r["id"] for r in recs)
                seed += 1
                time.sleep(0.02)

        thread = threading.Thread(target=producer)
        thread.start()
        try:
            _wait_for(lambda: log.count() > 0)
            stop()
            _wait_for(lambda: log.status()["status"] == "degraded")
            time.sleep(2)
            start()
            _wait_for(lambda: log.status() == {"status": "ok"}, timeout=30)
        finally:
            done.set()
            thread.join()
        try:
            log.flush(timeout=30)
            assert log.count() == len(submitted) == len(set(submitted))
            assert {r.id for r in log.records()} == set(submitted)
            assert not list((tmp_path / "spill").iterdir())
        finally:
            log.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_services_starting_at_once_create_the_tables_once(backend, tmp_path, request):
    """`serve --workers N` starts N services on one log at the same moment: every one starts, whichever CREATE
    loses the race to another's."""
    from mlops_assets.serving.prediction_log import create_tables, make_engine

    url = (
        f"sqlite:///{tmp_path / 'log.db'}" if backend == "sqlite" else request.getfixturevalue("pg_database")
    )
    engines = [make_engine(url, timeout=10) for _ in range(8)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(engine) -> None:
        barrier.wait()
        try:
            create_tables(engine)
        except BaseException as err:  # noqa: BLE001 - collected and reported below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert "predictions" in sa.inspect(engines[0]).get_table_names()
    for e in engines:
        e.dispose()
