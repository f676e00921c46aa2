"""Deployment history and the promotion lock, on SQLite (default) or PostgreSQL.

MLflow alias moves are not compare-and-swap, so every change of champion happens inside
:meth:`DeploymentHistory.locked`: a database lock held for one transaction, in which the caller reads the current
aliases, moves them and appends the history row. On SQLite the lock is ``BEGIN IMMEDIATE`` (the database's write
lock, which other writers wait for); on PostgreSQL it is a transaction-scoped advisory lock keyed by the model name,
so promotions of different models do not wait for each other.

Plain DB-API (``sqlite3``, ``psycopg``) rather than SQLAlchemy: the transaction boundaries are the point here, and
the rollback command should not pay for more imports than it needs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS mlops_deployments (
        id {serial},
        model_name TEXT NOT NULL,
        version TEXT NOT NULL,
        previous_version TEXT,
        deployed_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        run_id TEXT,
        metrics TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS mlops_deployments_model ON mlops_deployments (model_name, id)",
    """CREATE TABLE IF NOT EXISTS mlops_gate_results (
        id {serial},
        model_name TEXT NOT NULL,
        version TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        run_id TEXT,
        results TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS mlops_gate_results_model ON mlops_gate_results (model_name, id)",
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _lock_key(model_name: str) -> int:
    """A stable signed 64-bit advisory-lock key for one model."""
    digest = hashlib.sha256(f"mlops_assets.promote:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class Deployment:
    """One change of champion: ``version`` replaced ``previous_version`` at ``deployed_at`` for ``reason``."""

    model_name: str
    version: str
    previous_version: str | None
    deployed_at: str
    reason: str
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateRecord:
    """Gate results recorded for one version (the latest ones are shown by ``mlops-assets status``)."""

    model_name: str
    version: str
    recorded_at: str
    run_id: str | None
    results: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Txn:
    """The open, locked transaction handed to the caller of :meth:`DeploymentHistory.locked`."""

    def __init__(self, history: DeploymentHistory, cursor: Any, model_name: str):
        self._history = history
        self._cur = cursor
        self.model_name = model_name

    def append(
        self,
        *,
        version: str,
        previous_version: str | None,
        reason: str,
        run_id: str | None,
        metrics: Mapping[str, float] | None,
    ) -> Deployment:
        d = Deployment(
            model_name=self.model_name,
            version=str(version),
            previous_version=None if previous_version is None else str(previous_version),
            deployed_at=_now(),
            reason=reason,
            run_id=run_id,
            metrics={k: float(v) for k, v in (metrics or {}).items() if v is not None},
        )
        self._cur.execute(
            self._history._q(
                "INSERT INTO mlops_deployments (model_name, version, previous_version, deployed_at, reason, "
                "run_id, metrics) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
            ),
            (
                d.model_name,
                d.version,
                d.previous_version,
                d.deployed_at,
                d.reason,
                d.run_id,
                json.dumps(d.metrics),
            ),
        )
        return replace(d, id=int(self._cur.fetchone()[0]))

    def latest(self) -> Deployment | None:
        """The newest deployment of the model, read inside this transaction."""
        rows = self._history._select_deployments(self._cur, self.model_name, 1)
        return rows[0] if rows else None


class DeploymentHistory:
    """The deployment history at ``url``: ``sqlite:///path`` or ``postgresql://...`` (``+psycopg`` accepted)."""

    def __init__(self, url: str, *, lock_timeout_s: float = 60.0):
        if not url:
            raise ValueError("deployment history URL is empty (see MLOPS_DEPLOYMENT_HISTORY_URL)")
        self.url = url
        self.lock_timeout_s = lock_timeout_s
        scheme = url.split("://", 1)[0].lower()
        if scheme.startswith("sqlite"):
            self.kind = "sqlite"
            if not url.startswith("sqlite:///"):
                raise ValueError(f"deployment history URL {url!r}: expected sqlite:///PATH")
            self._path = Path(url[len("sqlite:///") :])
            self._path.parent.mkdir(parents=True, exist_ok=True)
        elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            self.kind = "postgresql"
            self._dsn = "postgresql://" + url.split("://", 1)[1]
        else:
            raise ValueError(
                f"deployment history URL {url!r}: only sqlite:/// and postgresql:// are supported"
            )
        self._ready = False

    # ------------------------------------------------------------------------------------ connections

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn: sqlite3.Connection | psycopg.Connection[Any]
        if self.kind == "sqlite":
            # isolation_level=None: we issue BEGIN ourselves, so the lock is taken exactly where we say.
            conn = sqlite3.connect(self._path, timeout=self.lock_timeout_s, isolation_level=None)
        else:
            import psycopg

            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        try:
            self._ensure_schema(conn)
            yield conn
        finally:
            conn.close()

    def _ensure_schema(self, conn: Any) -> None:
        if self._ready:
            return
        serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if self.kind == "sqlite" else "BIGSERIAL PRIMARY KEY"
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        try:
            if self.kind == "postgresql":
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide on PostgreSQL: serialize it.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("<schema>"),))
            for stmt in _SCHEMA:
                cur.execute(stmt.format(serial=serial))
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        self._ready = True

    @contextmanager
    def locked(self, model_name: str) -> Iterator[_Txn]:
        """One transaction holding the promotion lock for ``model_name``; committed on success, rolled back on
        any exception (which propagates)."""
        with self._connection() as conn:
            cur = conn.cursor()
            if self.kind == "sqlite":
                cur.execute("BEGIN IMMEDIATE")  # waits (up to lock_timeout_s) for any other writer
            else:
                cur.execute("BEGIN")
                cur.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(model_name),))
            try:
                yield _Txn(self, cur, model_name)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # ------------------------------------------------------------------------------------ reads

    def _select_deployments(self, cur: Any, model_name: str, limit: int | None) -> list[Deployment]:
        sql = (
            "SELECT id, model_name, version, previous_version, deployed_at, reason, run_id, metrics "
            "FROM mlops_deployments WHERE model_name = ? ORDER BY id DESC"
        )
        params: tuple[Any, ...] = (model_name,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (int(limit),)
        cur.execute(self._q(sql), params)
        return [
            Deployment(
                id=r[0],
                model_name=r[1],
                version=r[2],
                previous_version=r[3],
                deployed_at=r[4],
                reason=r[5],
                run_id=r[6],
                metrics=json.loads(r[7]),
            )
            for r in cur.fetchall()
        ]

    def entries(self, model_name: str, limit: int | None = None) -> list[Deployment]:
        """The history of ``model_name``, oldest first (the newest ``limit`` entries when given)."""
        with self._connection() as conn:
            rows = self._select_deployments(conn.cursor(), model_name, limit)
        return rows[::-1]

    # ------------------------------------------------------------------------------------ gate results

    def record_gate_results(
        self, model_name: str, version: str, results: Sequence[Mapping[str, Any]], run_id: str | None = None
    ) -> GateRecord:
        rec = GateRecord(
            model_name=model_name,
            version=str(version),
            recorded_at=_now(),
            run_id=run_id,
            results=[dict(r) for r in results],
        )
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute("BEGIN")
            cur.execute(
                self._q(
                    "INSERT INTO mlops_gate_results (model_name, version, recorded_at, run_id, results) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                (
                    rec.model_name,
                    rec.version,
                    rec.recorded_at,
                    rec.run_id,
                    json.dumps(rec.results, default=str),
                ),
            )
            cur.execute("COMMIT")
        return rec

    def latest_gate_results(self, model_name: str, version: str | None = None) -> GateRecord | None:
        """The most recent gate results of ``model_name`` (of one ``version`` when given)."""
        sql = "SELECT model_name, version, recorded_at, run_id, results FROM mlops_gate_results WHERE model_name = ?"
        params: tuple[Any, ...] = (model_name,)
        if version is not None:
            sql += " AND version = ?"
            params += (str(version),)
        sql += " ORDER BY id DESC LIMIT 1"
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._q(sql), params)
            row = cur.fetchone()
        if row is None:
            return None
        return GateRecord(
            model_name=row[0], version=row[1], recorded_at=row[2], run_id=row[3], results=json.loads(row[4])
        )
