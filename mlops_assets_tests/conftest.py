"""Shared fixtures: isolated storage per test, small real datasets, a PostgreSQL helper."""

from __future__ import annotations

import os

# One OpenMP thread: on a shared 2-core machine, HistGradientBoosting's thread pool turns millisecond predictions
# into contended spins. Set before scikit-learn is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_assets.config import load_config
from mlops_assets.data.sources import read_source

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("MLOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")
# Settings that point the project's storage elsewhere than MLOPS_HOME: no test inherits them from the environment.
STORAGE_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLOPS_ONLINE_STORE_URL",
    "MLOPS_OFFLINE_STORE_URL",
    "MLOPS_CONFIG",
    "MLOPS_PREDICTION_LOG_URL",
    "MLOPS_DEPLOYMENT_HISTORY_URL",
    "MLOPS_ARTIFACT_ROOT",
)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow tracking database with its schema migrations applied once per session (a fresh SQLite
    store spends seconds in migrations); each test starts from a copy."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def mlflow_pg_template() -> Iterator[str]:
    """The name of a database on the shared PostgreSQL server with MLflow's schema migrated, made once per session
    (MLflow's migrations take seconds): ``CREATE DATABASE ... TEMPLATE`` it for a migrated tracking store."""
    sa = pytest.importorskip("sqlalchemy")
    from mlflow import MlflowClient

    name = f"mlops_mlflow_template_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        MlflowClient(tracking_uri=f"{PG_URL}/{name}").search_experiments()
        yield name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def use_home(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point MLOPS_HOME and DAGSTER_HOME at ``home`` (through ``mp``, undone with it)."""
    mp.setenv("MLOPS_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))


@contextlib.contextmanager
def module_home(folder: Path, migrated_mlflow_db: Path) -> Iterator[Path]:
    """A home of its own in ``folder`` for a module-scoped fixture (``isolated_storage`` gives each test another):
    the environment points at it inside the block, and is restored afterwards. A test that uses the home's storage
    points the environment at it again (:func:`use_home` with its ``monkeypatch``)."""
    home = folder / "mlops_home"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, home)
        for var in STORAGE_VARS:
            mp.delenv(var, raising=False)
        mp.chdir(folder)
        yield home


@pytest.fixture(autouse=True)
def isolated_storage(tmp_path, monkeypatch, migrated_mlflow_db):
    """Every test gets its own MLOPS_HOME / DAGSTER_HOME; nothing lands in the working tree."""
    home = tmp_path / "mlops_home"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for var in STORAGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(scope="session")
def rainfall() -> pd.DataFrame:
    """The bundled NOAA rainfall data, with its derived ``date`` column (UTC)."""
    return read_source(load_config())


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_slice(
    folder: Path, rainfall: pd.DataFrame, years: int = 3, name: str = "rain_slice", mutate=None, **sections
) -> tuple[Path, pd.DataFrame]:
    """A config in ``folder`` over the first ``years`` of the rainfall data, as a CSV of its own; returns (config
    path, frame). ``sections`` update the config's sections (e.g. ``retraining={...}``)."""
    frame = rainfall[rainfall["date"] < pd.Timestamp(f"{1949 + years}-01-01", tz="UTC")].copy()
    if mutate is not None:
        frame = mutate(frame)
    csv = folder / f"{name}.csv"
    frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(csv, index=False)
    cfg = {
        "dataset": {
            "source": csv.name,
            "timestamp_column": "date",
            "label_column": "rain",
            "positive_label": 1,
        },
        "partitions": {"freq": "month"},
        "model": {"name": name},
        # Timing is the latency gate's own test (a deliberately slow model); on a loaded 2-core CI machine a
        # healthy model's p95 can exceed the production default, so end-to-end tests allow more.
        "gates": {"latency": {"p95_single_row_ms": 2000, "batch_1000_rows_ms": 20000}},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return write_config(folder / f"{name}.yaml", cfg), frame


@pytest.fixture
def rainfall_slice(tmp_path, rainfall):
    """A config over the first ``years`` of the rainfall data, as a CSV of its own; returns (config path, frame)."""

    def make(years: int = 3, name: str = "rain_slice", mutate=None, **sections) -> tuple[Path, pd.DataFrame]:
        return write_slice(tmp_path, rainfall, years, name, mutate, **sections)

    return make


@pytest.fixture
def pg_database():
    """A fresh database on the shared PostgreSQL server; dropped afterwards. Yields its URL."""
    sa = pytest.importorskip("sqlalchemy")
    name = f"mlops_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def pytest_collection_modifyitems(config, items) -> None:
    """Modules with tests that start real Dagster processes (``integration``: minutes, mostly waiting on sensor
    ticks) run first, each module's tests in their order: a parallel run (``make test``: pytest-xdist, one module
    per worker, in collection order: ``--no-loadscope-reorder``) starts its longest modules at once instead of
    ending on them."""
    long_modules = {item.module.__name__ for item in items if item.get_closest_marker("integration")}
    # The living loops (minutes each) before the other integration modules, then everything else.
    items.sort(
        key=lambda item: (
            item.module.__name__ not in long_modules,
            not item.module.__name__.startswith("mlops_assets_tests.test_living_loop"),
        )
    )
