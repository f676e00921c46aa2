"""The prediction log on SQLite and on a real PostgreSQL: batched writes off the caller's path, feedback, errors
raised (not swallowed), and the live-performance function per partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from mlops_assets.monitoring.performance_log import live_performance
from mlops_assets.serving.prediction_log import (
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


def _exercise(url: str) -> None:
    log = PredictionLog(url, batch_size=50, flush_interval=0.05)
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

        cfg = trained().cfg  # monthly partitions, model mlops_model
        perf = live_performance(cfg, url, partitions=["1998-01", "1998-02", "1998-03"])
        from sklearn.metrics import roc_auc_score

        expected = roc_auc_score(y_jan, [x["probability"] for x in jan])
        assert perf["1998-01"]["n"] == 31 and perf["1998-01"]["roc_auc"] == pytest.approx(expected, abs=1e-12)
        assert perf["1998-02"]["n"] == 28 and perf["1998-02"]["roc_auc"] is None
        assert perf["1998-02"]["accuracy"] == pytest.approx(np.mean([x["prediction"] == 1 for x in feb]))
        assert perf["1998-03"]["n"] == 0 and perf["1998-03"]["roc_auc"] is None
        assert perf["1998-01"]["model_versions"] == ["1"]
        assert sorted(live_performance(cfg, url)) == ["1998-01", "1998-02"]
    finally:
        log.close()


def test_prediction_log_on_sqlite(tmp_path):
    _exercise(f"sqlite:///{tmp_path / 'predictions.db'}")


@pytest.mark.postgres
def test_prediction_log_on_postgresql():
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {PG_DB}"))
    try:
        _exercise(f"postgresql://postgres@127.0.0.1:5432/{PG_DB}")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        admin.dispose()


def test_a_write_failure_is_raised_not_swallowed(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", flush_interval=0.01)
    recs = _records(2, datetime(2000, 1, 1, tzinfo=UTC))
    log.submit(recs)
    log.flush()
    log.submit(recs)  # the same ids again: the insert violates the primary key
    with pytest.raises(PredictionLogError, match="writing failed"):
        log.flush()
    with pytest.raises(PredictionLogError):
        log.submit(_records(1, datetime(2001, 1, 1, tzinfo=UTC), seed=1))
