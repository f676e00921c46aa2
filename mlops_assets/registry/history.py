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

    from mlops_assets.alerts.dispatch import AlertRecord

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
    # Who or what made each champion move, the override reason if the gates were overridden, the gate record it
    # relied on and the sha256 of the model it moved to (one row per mlops_deployments row).
    """CREATE TABLE IF NOT EXISTS mlops_alias_moves (
        deployment_id BIGINT PRIMARY KEY,
        model_name TEXT NOT NULL,
        moved_by TEXT NOT NULL,
        override_reason TEXT,
        gate_record TEXT,
        sha256 TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS mlops_alerts (
        id {serial},
        model_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        summary TEXT NOT NULL,
        dedup_key TEXT,
        payload TEXT NOT NULL,
        deliveries TEXT NOT NULL,
        at TEXT NOT NULL,
        deployment_id BIGINT
    )""",
    "CREATE INDEX IF NOT EXISTS mlops_alerts_incident ON mlops_alerts (model_name, dedup_key, id)",
    """CREATE TABLE IF NOT EXISTS mlops_approvals (
        id {serial},
        model_name TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        expires_at TEXT,
        run_id TEXT,
        decided_at TEXT,
        decided_by TEXT,
        reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS mlops_approvals_model ON mlops_approvals (model_name, version, id)",
    # Challengers run in shadow beside the champion (rollout.mode: shadow), and how each shadow ended.
    """CREATE TABLE IF NOT EXISTS mlops_shadows (
        id {serial},
        model_name TEXT NOT NULL,
        version TEXT NOT NULL,
        champion_version TEXT,
        reason TEXT NOT NULL,
        run_id TEXT,
        started_at TEXT NOT NULL,
        state TEXT NOT NULL,
        ended_at TEXT,
        verdict TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS mlops_shadows_model ON mlops_shadows (model_name, id)",
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
    # Who or what moved the alias (a run, a person), the override reason when the gates were overridden, the
    # gate record the move relied on, and the sha256 of the model moved to. None for moves recorded before these
    # were kept.
    moved_by: str | None = None
    override_reason: str | None = None
    gate_record: dict[str, Any] | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Approval:
    """A challenger that passed its gates, waiting for (or decided by) a person: ``state`` is
    ``awaiting``, ``approved``, ``rejected`` or ``expired``."""

    model_name: str
    version: str
    state: str
    requested_at: str
    expires_at: str | None
    run_id: str | None
    decided_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shadow:
    """A challenger scored beside the champion without answering: ``state`` is ``running``, ``promoted`` (its
    comparison passed), ``refused`` (it failed; ``verdict`` says why) or ``superseded`` (a newer challenger took its
    place before it was judged). ``reason``: the trigger of the retrain that made it, the promotion's reason."""

    model_name: str
    version: str
    champion_version: str | None
    reason: str
    run_id: str | None
    started_at: str
    state: str = "running"
    ended_at: str | None = None
    verdict: dict[str, Any] | None = None
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

    @property
    def cursor(self) -> Any:
        return self._cur

    def append(
        self,
        *,
        version: str,
        previous_version: str | None,
        reason: str,
        run_id: str | None,
        metrics: Mapping[str, float] | None,
        moved_by: str | None = None,
        override_reason: str | None = None,
        gate_record: Mapping[str, Any] | None = None,
        sha256: str | None = None,
    ) -> Deployment:
        d = Deployment(
            model_name=self.model_name,
            version=str(version),
            previous_version=None if previous_version is None else str(previous_version),
            deployed_at=_now(),
            reason=reason,
            run_id=run_id,
            metrics={k: float(v) for k, v in (metrics or {}).items() if v is not None},
            moved_by=moved_by,
            override_reason=override_reason,
            gate_record=None if gate_record is None else dict(gate_record),
            sha256=sha256,
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
        d = replace(d, id=int(self._cur.fetchone()[0]))
        if moved_by is not None:
            self._cur.execute(
                self._history._q(
                    "INSERT INTO mlops_alias_moves (deployment_id, model_name, moved_by, override_reason, "
                    "gate_record, sha256) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (
                    d.id,
                    d.model_name,
                    moved_by,
                    override_reason,
                    None if gate_record is None else json.dumps(d.gate_record, default=str),
                    sha256,
                ),
            )
        return d

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

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) as a transaction of its own; the rows it returns, if any."""
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._q(sql), params)
            return list(cur.fetchall()) if cur.description is not None else []

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
            "SELECT d.id, d.model_name, d.version, d.previous_version, d.deployed_at, d.reason, d.run_id, "
            "d.metrics, m.moved_by, m.override_reason, m.gate_record, m.sha256 "
            "FROM mlops_deployments d LEFT JOIN mlops_alias_moves m ON m.deployment_id = d.id "
            "WHERE d.model_name = ? ORDER BY d.id DESC"
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
                moved_by=r[8],
                override_reason=r[9],
                gate_record=None if r[10] is None else json.loads(r[10]),
                sha256=r[11],
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
        self._execute(
            "INSERT INTO mlops_gate_results (model_name, version, recorded_at, run_id, results) "
            "VALUES (?, ?, ?, ?, ?)",
            (rec.model_name, rec.version, rec.recorded_at, rec.run_id, json.dumps(rec.results, default=str)),
        )
        return rec

    def latest_gate_results(self, model_name: str, version: str | None = None) -> GateRecord | None:
        """The most recent gate results of ``model_name`` (of one ``version`` when given)."""
        sql = "SELECT model_name, version, recorded_at, run_id, results FROM mlops_gate_results WHERE model_name = ?"
        params: tuple[Any, ...] = (model_name,)
        if version is not None:
            sql += " AND version = ?"
            params += (str(version),)
        rows = self._execute(sql + " ORDER BY id DESC LIMIT 1", params)
        if not rows:
            return None
        row = rows[0]
        return GateRecord(
            model_name=row[0], version=row[1], recorded_at=row[2], run_id=row[3], results=json.loads(row[4])
        )

    # ------------------------------------------------------------------------------------ alerts (AlertLedger)

    def record_alert(self, record: AlertRecord) -> None:
        """Keep one alert (sent, failed, suppressed, resolved or unrouted) with its deliveries."""
        self._execute(
            "INSERT INTO mlops_alerts (model_name, kind, severity, state, summary, dedup_key, payload, "
            "deliveries, at, deployment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.model,
                record.kind,
                record.severity,
                record.state,
                record.summary,
                record.dedup_key,
                json.dumps(record.payload, default=str),
                json.dumps([asdict(d) for d in record.deliveries]),
                record.at,
                record.deployment_id,
            ),
        )

    def _alert_rows(
        self, where: str, params: tuple[Any, ...], limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, model_name, kind, severity, state, summary, dedup_key, payload, deliveries, at, "
            f"deployment_id FROM mlops_alerts WHERE {where} ORDER BY id DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for r in self._execute(sql, params):
            deliveries = json.loads(r[8])
            out.append(
                {
                    "id": r[0],
                    "model": r[1],
                    "kind": r[2],
                    "severity": r[3],
                    "state": r[4],
                    "summary": r[5],
                    "dedup_key": r[6],
                    "payload": json.loads(r[7]),
                    "deliveries": deliveries,
                    "delivered": any(d.get("ok") for d in deliveries),
                    "at": r[9],
                    "deployment_id": r[10],
                }
            )
        return out[::-1]

    def incident_alerts(self, model: str, dedup_key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` records of incident ``dedup_key``, oldest first."""
        return self._alert_rows("model_name = ? AND dedup_key = ?", (model, dedup_key), limit=limit)

    def alerts(self, model_name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Every alert recorded for ``model_name``, oldest first (the newest ``limit`` when given)."""
        return self._alert_rows("model_name = ?", (model_name,), limit)

    # ------------------------------------------------------------------------------------ approvals

    def request_approval(
        self, model_name: str, version: str, run_id: str | None, expires_at: str | None
    ) -> Approval:
        a = Approval(
            model_name=model_name,
            version=str(version),
            state="awaiting",
            requested_at=_now(),
            expires_at=expires_at,
            run_id=run_id,
        )
        rows = self._execute(
            "INSERT INTO mlops_approvals (model_name, version, state, requested_at, expires_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (a.model_name, a.version, a.state, a.requested_at, a.expires_at, a.run_id),
        )
        return replace(a, id=int(rows[0][0]))

    def approvals(self, model_name: str, version: str | None = None) -> list[Approval]:
        """Approval requests of ``model_name`` (of one ``version``), oldest first; an undecided request past its
        expiry reads as ``expired``."""
        sql = (
            "SELECT id, model_name, version, state, requested_at, expires_at, run_id, decided_at, decided_by, "
            "reason FROM mlops_approvals WHERE model_name = ?"
        )
        params: tuple[Any, ...] = (model_name,)
        if version is not None:
            sql += " AND version = ?"
            params += (str(version),)
        now = _now()
        out = []
        for r in self._execute(sql + " ORDER BY id", params):
            state = r[3]
            if state == "awaiting" and r[5] is not None and r[5] < now:
                state = "expired"
            out.append(
                Approval(
                    id=r[0],
                    model_name=r[1],
                    version=r[2],
                    state=state,
                    requested_at=r[4],
                    expires_at=r[5],
                    run_id=r[6],
                    decided_at=r[7],
                    decided_by=r[8],
                    reason=r[9],
                )
            )
        return out

    def decide_approval(self, approval_id: int, state: str, by: str, reason: str | None) -> None:
        """Record the decision on request ``approval_id`` (only while it is awaiting)."""
        self._execute(
            "UPDATE mlops_approvals SET state = ?, decided_at = ?, decided_by = ?, reason = ? "
            "WHERE id = ? AND state = 'awaiting'",
            (state, _now(), by, reason, approval_id),
        )

    # ------------------------------------------------------------------------------------ shadows

    _SHADOW_COLUMNS = (
        "id, model_name, version, champion_version, reason, run_id, started_at, state, ended_at, verdict"
    )

    def start_shadow(
        self, model_name: str, version: str, champion_version: str | None, reason: str, run_id: str | None
    ) -> Shadow:
        """Put ``version`` in shadow; a shadow still running for the model is superseded (one at a time)."""
        now = _now()
        with self.locked(model_name) as txn:
            cur = txn.cursor
            cur.execute(
                self._q(
                    "UPDATE mlops_shadows SET state = 'superseded', ended_at = ? "
                    "WHERE model_name = ? AND state = 'running'"
                ),
                (now, model_name),
            )
            cur.execute(
                self._q(
                    "INSERT INTO mlops_shadows (model_name, version, champion_version, reason, run_id, "
                    "started_at, state) VALUES (?, ?, ?, ?, ?, ?, 'running') RETURNING id"
                ),
                (model_name, str(version), champion_version, reason, run_id, now),
            )
            shadow_id = int(cur.fetchall()[0][0])
        return Shadow(model_name, str(version), champion_version, reason, run_id, now, id=shadow_id)

    def shadows(self, model_name: str, shadow_id: int | None = None) -> list[Shadow]:
        """The shadows of ``model_name`` (or the one with ``shadow_id``), oldest first."""
        sql = f"SELECT {self._SHADOW_COLUMNS} FROM mlops_shadows WHERE model_name = ?"
        params: tuple[Any, ...] = (model_name,)
        if shadow_id is not None:
            sql += " AND id = ?"
            params += (int(shadow_id),)
        return [
            Shadow(
                id=r[0],
                model_name=r[1],
                version=r[2],
                champion_version=r[3],
                reason=r[4],
                run_id=r[5],
                started_at=r[6],
                state=r[7],
                ended_at=r[8],
                verdict=json.loads(r[9]) if r[9] else None,
            )
            for r in self._execute(sql + " ORDER BY id", params)
        ]

    def active_shadow(self, model_name: str) -> Shadow | None:
        running = [s for s in self.shadows(model_name) if s.state == "running"]
        return running[-1] if running else None

    def end_shadow(self, shadow_id: int, state: str, verdict: Mapping[str, Any] | None) -> bool:
        """Record how shadow ``shadow_id`` ended (only while it runs; ``verdict`` None keeps the one recorded);
        False when it had already ended."""
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(
                self._q(
                    "UPDATE mlops_shadows SET state = ?, ended_at = ?, verdict = COALESCE(?, verdict) "
                    "WHERE id = ? AND state = 'running'"
                ),
                (state, _now(), json.dumps(verdict, default=str) if verdict is not None else None, shadow_id),
            )
            return bool(cur.rowcount)

    def record_shadow_verdict(self, shadow_id: int, verdict: Mapping[str, Any]) -> None:
        """The comparison that cleared shadow ``shadow_id``, kept with it until its promotion ends it."""
        self._execute(
            "UPDATE mlops_shadows SET verdict = ? WHERE id = ? AND state = 'running'",
            (json.dumps(verdict, default=str), shadow_id),
        )
