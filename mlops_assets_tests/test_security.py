"""Security: services on loopback by default; no secret from a storage URL lands in any file, log or metadata; SQL
sources are read-only. (Models load only through the sha256-verified path: test_registry.py,
``test_wrong_sha256_is_refused`` and the serving tests, not repeated here.)"""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import pytest
import yaml

from mlops_assets.cli import build_parser
from mlops_assets.config import load_config
from mlops_assets.data.sources import SourceError, open_source, read_source

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "s3cret-pw"


def test_services_bind_to_loopback_by_default():
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    readme = (ROOT / "README.md").read_text()
    assert "0.0.0.0" not in readme
    # Every host the README's commands pass (dagster -h, --host) is loopback.
    hosts = re.findall(r"(?:^|\s)(?:-h|--host)[ =](\S+)", readme)
    assert hosts and set(hosts) == {"127.0.0.1"}, hosts
    makefile = (ROOT / "Makefile").read_text()
    assert "0.0.0.0" not in makefile  # `make dev`: dagster dev's own default host is 127.0.0.1


WRITES = [
    "DELETE FROM events; SELECT * FROM events",
    "INSERT INTO events VALUES ('2021-01-01', 9.0, 1) RETURNING *",
    "COMMIT; DELETE FROM events; SELECT * FROM events",  # ending the read-only transaction first
    "SELECT * FROM events; COMMIT; DELETE FROM events",
    "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
    "SET TRANSACTION READ WRITE; DELETE FROM events RETURNING *",
]


def _sql_config(tmp_path: Path, url: str, query: str):
    path = tmp_path / f"sql-{uuid.uuid4().hex[:6]}.yaml"
    data = {"source": url, "query": query, "timestamp_column": "ts", "label_column": "y", "positive_label": 1}
    path.write_text(yaml.safe_dump({"dataset": data}))
    return load_config(path)


@pytest.fixture
def events_db(pg_database):
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (ts text, x float, y int)")
        conn.exec_driver_sql("INSERT INTO events VALUES ('2020-01-01', 1.0, 0), ('2020-02-01', 2.0, 1)")

    def count() -> int:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM events").scalar()

    yield pg_database, count
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("query", WRITES)
def test_sql_source_cannot_write_on_postgresql(events_db, tmp_path, query):
    url, count = events_db
    assert len(read_source(_sql_config(tmp_path, url, "SELECT ts, x, y FROM events"))) == 2
    with pytest.raises(SourceError, match="dataset.query failed"):
        read_source(_sql_config(tmp_path, url, query))
    assert count() == 2


def _two_row_sqlite(tmp_path):
    """A SQLite source database with one two-row table."""
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (ts text, x real, y int)")
        conn.execute("INSERT INTO events VALUES ('2020-01-01', 1.0, 0), ('2020-02-01', 2.0, 1)")
    conn.close()
    return db


@pytest.mark.parametrize("query", [q for q in WRITES if not q.startswith("SET")])
def test_sql_source_cannot_write_on_sqlite(tmp_path, query):
    db = _two_row_sqlite(tmp_path)
    with pytest.raises(SourceError, match="dataset.query failed"):
        read_source(_sql_config(tmp_path, f"sqlite:///{db}", query))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    conn.close()


PROBES = ["time_range", "columns", "peek", "fingerprint"]


@pytest.mark.postgres
@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("query", WRITES)
def test_sql_probes_cannot_write_on_postgresql(events_db, tmp_path, query, probe):
    """The cheap probes (the query wrapped in an aggregate, the cursor's description) are as read-only as a read."""
    url, count = events_db
    with pytest.raises(SourceError, match="dataset.query failed"):
        getattr(open_source(_sql_config(tmp_path, url, query)), probe)()
    assert count() == 2


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("query", [q for q in WRITES if not q.startswith("SET")])
def test_sql_probes_cannot_write_on_sqlite(tmp_path, query, probe):
    db = _two_row_sqlite(tmp_path)
    with pytest.raises(SourceError, match="dataset.query failed"):
        getattr(open_source(_sql_config(tmp_path, f"sqlite:///{db}", query)), probe)()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    conn.close()


@pytest.fixture
def pg_databases():
    """Two fresh databases on the shared server (MLflow, online store), dropped afterwards."""
    sa = pytest.importorskip("sqlalchemy")
    from mlops_assets_tests.conftest import PG_URL

    names = [f"mlops_sec_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_no_secret_in_files_logs_or_metadata(rainfall_slice, pg_databases, monkeypatch, tmp_path, capfd):
    import dagster as dg
    import sqlalchemy as sa

    from mlops_assets.runner import execute, instance_for
    from mlops_assets.storage import storage_from_env

    mlflow_db, online_db = pg_databases
    # The shared server trusts loopback, so any password connects: what matters is where it ends up.
    urls = {
        "MLFLOW_TRACKING_URI": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{mlflow_db}",
        "MLOPS_ONLINE_STORE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{online_db}",
    }
    for key, value in urls.items():
        monkeypatch.setenv(key, value)
    path, _ = rainfall_slice(years=3, name="sec")
    storage = storage_from_env().ensure()
    instance = instance_for(storage)
    outcome = execute(load_config(path), config_file=str(path), storage=storage, instance=instance)
    assert outcome.status == "ok", outcome.error

    # No file under the test's directory: MLOPS_HOME, DAGSTER_HOME (event log, run storage, compute logs), cwd.
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not leaked, leaked
    # No event of the run: materialization and check metadata, log messages.
    records = instance.all_logs(outcome.run_id)
    assert any(
        r.dagster_event and r.dagster_event.event_type_value == "ASSET_MATERIALIZATION" for r in records
    )
    assert any(
        r.dagster_event and r.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION" for r in records
    )
    assert not [r for r in records if PASSWORD in dg.serialize_value(r)]
    # Nothing printed (console logger, MLflow, warnings).
    out, err = capfd.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    # Nor inside the databases themselves (MLflow params, tags, model version sources; the online store).
    for db in pg_databases:
        engine = sa.create_engine(f"postgresql://postgres@127.0.0.1:5432/{db}")
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).scalars()
            tables = list(tables)
            assert tables, f"nothing was written to {db}: the run did not use it"
            for table in tables:
                hit = conn.exec_driver_sql(
                    f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %(p)s', {"p": f"%{PASSWORD}%"}
                ).scalar()
                assert hit == 0, f"{db}.{table} holds the password"
        engine.dispose()
