"""Champion moves without importing MLflow: the rows MLflow's registry store reads and writes for aliases, read
and written in MLflow's own database.

Why: ``mlops-assets rollback`` moves two aliases, yet ``import mlflow`` alone takes 1-4 s (pandas, pyarrow,
FastAPI and the tracing SDK come with ``mlflow/__init__``), and ``MlflowClient`` as well as the store classes
live under that package, so importing either pays for all of it. This module does what
``SqlAlchemyStore.get_registered_model`` (aliases), ``get_model_version`` (run id, source, tags),
``search_model_versions`` (version numbers), ``get_run`` (latest metrics) and ``set_registered_model_alias`` do
on the database, with plain DB-API (``sqlite3``, ``psycopg``).

It is used only where it is known to match: a SQLite or PostgreSQL tracking URI whose database is at the schema
revision this code was checked against (:data:`SCHEMA_REVISION`, the installed MLflow's newest migration; a
test keeps the two equal). Anything else -- an HTTP tracking server, a database at another revision, one that
does not exist yet -- gets ``None`` from :func:`sql_alias_store`, and the registry uses ``MlflowClient``.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The alembic revision of MLflow's newest migration for the MLflow version this was written against (3.17.2).
SCHEMA_REVISION = "dc11669786a5"
# The workspace of every row written by MLflow's single-tenant SqlAlchemyStore (what MlflowClient on a database
# URI uses); mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME.
WORKSPACE = "default"
# current_stage of a version deleted but kept for its history; MLflow's reads skip it.
_STAGE_DELETED = "Deleted_Internal"


@dataclass(frozen=True)
class VersionRow:
    """The fields of a ``ModelVersion`` the registry uses."""

    name: str
    version: str
    run_id: str | None
    source: str | None
    description: str | None
    tags: dict[str, str] = field(default_factory=dict)
    # Where the registry resolved the artifacts when the version was made (a logged model's `models:/` source).
    storage_location: str | None = None


class SqlAliasStore:
    """Aliases, versions and run metrics in the MLflow database at ``url`` (see the module docstring)."""

    def __init__(self, url: str):
        self.url = url
        self._sqlite = url.startswith("sqlite:///")
        if self._sqlite:
            # SQLAlchemy's reading: sqlite:///rel.db is relative, sqlite:////abs.db absolute.
            self.path = Path(url[len("sqlite:///") :]).absolute()
        else:
            self._dsn = "postgresql://" + url.split("://", 1)[1]

    def _q(self, sql: str) -> str:
        return sql if self._sqlite else sql.replace("?", "%s")

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn: Any
        if self._sqlite:
            # mode=rw: never create an empty database file where MLflow has not made one.
            conn = sqlite3.connect(
                f"{self.path.as_uri()}?mode=rw", uri=True, timeout=30, isolation_level=None
            )
        else:
            import psycopg

            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return list(conn.execute(self._q(sql), params).fetchall())

    def schema_revision(self) -> str | None:
        rows = self._rows("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version ({} when the model is not registered)."""
        rows = self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE workspace = ? AND name = ?",
            WORKSPACE,
            name,
        )
        return {alias: str(version) for alias, version in rows}

    def model_version(self, name: str, version: str) -> VersionRow | None:
        """The version (not deleted), or None."""
        if not str(version).isdigit():
            return None
        with self._connection() as conn:
            row = conn.execute(
                self._q(
                    "SELECT version, run_id, source, description, storage_location FROM model_versions "
                    "WHERE workspace = ? AND name = ? AND version = ? AND current_stage != ?"
                ),
                (WORKSPACE, name, int(version), _STAGE_DELETED),
            ).fetchone()
            if row is None:
                return None
            tags = conn.execute(
                self._q(
                    "SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?"
                ),
                (WORKSPACE, name, int(version)),
            ).fetchall()
        return VersionRow(
            name=name,
            version=str(row[0]),
            run_id=row[1],
            source=row[2],
            description=row[3],
            tags={k: v for k, v in tags},
            storage_location=row[4],
        )

    def versions(self, name: str) -> list[str]:
        """Every version number of ``name`` (not deleted), ascending."""
        rows = self._rows(
            "SELECT version FROM model_versions WHERE workspace = ? AND name = ? AND current_stage != ? "
            "ORDER BY version",
            WORKSPACE,
            name,
            _STAGE_DELETED,
        )
        return [str(v) for (v,) in rows]

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The run's latest value of each metric (what ``get_run(run_id).data.metrics`` holds)."""
        rows = self._rows("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run_id)
        return {k: math.nan if is_nan else float(v) for k, v, is_nan in rows}

    def set_alias(self, name: str, alias: str, version: str) -> bool:
        """Point ``alias`` at ``version``; False (nothing written) when that version does not exist."""
        with self._connection() as conn:
            exists = conn.execute(
                self._q(
                    "SELECT 1 FROM model_versions "
                    "WHERE workspace = ? AND name = ? AND version = ? AND current_stage != ?"
                ),
                (WORKSPACE, name, int(version), _STAGE_DELETED),
            ).fetchone()
            if exists is None:
                return False
            conn.execute(
                self._q(
                    "INSERT INTO registered_model_aliases (workspace, name, alias, version) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (workspace, name, alias) DO UPDATE SET version = excluded.version"
                ),
                (WORKSPACE, name, alias, int(version)),
            )
        return True


def sql_alias_store(tracking_uri: str) -> SqlAliasStore | None:
    """A :class:`SqlAliasStore` on ``tracking_uri`` when it is a SQLite or PostgreSQL database at
    :data:`SCHEMA_REVISION`; None otherwise (the caller then uses ``MlflowClient``)."""
    scheme = tracking_uri.split("://", 1)[0].lower()
    if scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        store = SqlAliasStore(tracking_uri)
        if not store.path.is_file():
            return None  # MlflowClient creates the database; this module never does
        errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        try:
            import psycopg
        except ImportError:
            return None
        store = SqlAliasStore(tracking_uri)
        errors = (psycopg.Error,)
    else:
        return None
    try:
        revision = store.schema_revision()
    except errors:
        # No alembic_version table, a server that refuses us: not a database this module knows; MlflowClient
        # then meets the same problem and reports it in its own words.
        return None
    return store if revision == SCHEMA_REVISION else None
