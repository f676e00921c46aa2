"""The online store: what serving needs to answer "as of t" without the offline data.

Three tables in any SQLAlchemy database (SQLite by default, PostgreSQL through ``MLOPS_ONLINE_STORE_URL``):

- ``<name>_events``: the recent raw events in numeric form (entity key, timestamp, one column per feature
  source), everything within ``features.online_retention`` (default: the longest window) of the newest event.
  From them the engine completes the window features of a row to score, as of that row's own timestamp.
- ``<name>_latest``: every feature of every entity as of just after the newest materialized event, for
  ``get_online_features`` (one indexed read).
- ``<name>_meta``: the feature code version the tables were built with, the retention horizon, the as-of time.

Reads check the code version against the configuration, so a changed definition cannot silently serve values
computed by the old one. Materializing a time range replaces the events in it: idempotent.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlops_assets.features.engine import (
    Events,
    FeatureInputError,
    _assemble,
    entity_keys,
    evaluate,
    key_strings,
    source_columns,
    source_values,
    timestamps_ns,
)
from mlops_assets.features.feature_set import (
    feature_registry,
    features_code_version,
    lookback,
    online_retention,
)

if TYPE_CHECKING:
    import psycopg

    from mlops_assets.config import MlopsConfig
    from mlops_assets.storage import Storage

_ENGINES: dict[tuple[str, bool, bool], sa.Engine] = {}  # (url, writer, hot)
_ENGINES_LOCK = threading.Lock()
_INSERT_BATCH = 20_000
_MIRROR_MAX_ROWS = 200_000  # a larger latest table is read per lookup (its reload would stall a lookup)


class OnlineStoreError(RuntimeError):
    """The online store cannot answer: not materialized, built from other definitions, or too little history."""


def _engine(url: str, *, writer: bool, hot: bool = False) -> sa.Engine:
    """One engine per URL (and role), shared by every store object: connection pools are reused.

    ``hot``: the pool of the ``latest`` lookups. On PostgreSQL its connections are in autocommit and are not
    pinged at checkout, so a lookup is one round trip instead of four (ping, BEGIN, SELECT, ROLLBACK); a
    connection the server dropped is retried once by :meth:`OnlineStore._fetch`. SQLite readers already run
    without a driver transaction, so there it is the reader pool.
    """
    sqlite = url.startswith("sqlite")
    if hot and sqlite:
        return _engine(url, writer=False)
    key = (url, writer, hot)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            if sqlite:
                eng = sa.create_engine(url, connect_args={"timeout": 60})
                _sqlite_setup(eng, immediate=writer)
            elif hot:
                eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            else:
                eng = sa.create_engine(url, pool_pre_ping=True)
            _ENGINES[key] = eng
        return eng


def _sqlite_setup(eng: sa.Engine, *, immediate: bool) -> None:
    @sa.event.listens_for(eng, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for a materialization
        cur.close()

    @sa.event.listens_for(eng, "begin")
    def _begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front: two materializations queue instead of deadlocking.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class OnlineStore:
    """Latest feature values and recent raw events per entity, in the database at ``url``."""

    def __init__(self, url: str, *, name: str = "features"):
        if not name.replace("_", "").isalnum():
            raise ValueError(f"online store name {name!r}: letters, digits and underscores only")
        self.url = url
        self.name = name
        self._read = _engine(url, writer=False)
        self._write = _engine(url, writer=True)
        self._hot = _engine(url, writer=False, hot=True)
        self._pg = self._hot.dialect.name == "postgresql"
        self._latest_sql: tuple[str, str, int] | None = (
            None  # (code version, SELECT of the latest, n features)
        )
        self._missing: tuple[str, tuple[float, ...]] | None = None  # (code version, values of a new entity)
        self._mirror = _LatestMirror(self) if not self._pg else None
        self._schema_cache: tuple[str, sa.Table, sa.Table, sa.Table] | None = None
        self._ready: str | None = None  # code version verified against the meta table

    @classmethod
    def from_storage(cls, storage: Storage, *, name: str = "features") -> OnlineStore:
        """The store at ``storage.online_store_url``."""
        return cls(storage.online_store_url, name=name)

    def __repr__(self) -> str:
        return f"OnlineStore({self._read.url.render_as_string(hide_password=True)}, name={self.name!r})"

    # -------------------------------------------------------------------------------------------- schema
    def _tables(self, cfg: MlopsConfig) -> tuple[sa.Table, sa.Table, sa.Table]:
        version = features_code_version(cfg)
        if self._schema_cache is not None and self._schema_cache[0] == version:
            return self._schema_cache[1:]
        defs = feature_registry(cfg)
        md = sa.MetaData()
        events = sa.Table(
            f"{self.name}_events",
            md,
            sa.Column("entity_key", sa.String(512), nullable=False),
            sa.Column("ts", sa.BigInteger, nullable=False),
            *[sa.Column(f"v{i}", sa.Double) for i in range(len(source_columns(defs)))],
            sa.Index(f"ix_{self.name}_events_key_ts", "entity_key", "ts"),
            sa.Index(f"ix_{self.name}_events_ts", "ts"),
        )
        latest = sa.Table(
            f"{self.name}_latest",
            md,
            sa.Column("entity_key", sa.String(512), primary_key=True),
            sa.Column("as_of", sa.BigInteger, nullable=False),
            sa.Column("code_version", sa.String(64), nullable=False),
            *[sa.Column(f"f{i}", sa.Double) for i in range(len(defs))],
        )
        meta = sa.Table(
            f"{self.name}_meta",
            md,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        self._schema_cache = (version, events, latest, meta)
        return events, latest, meta

    def _meta(self, conn: sa.Connection, meta: sa.Table) -> dict[str, Any]:
        if not sa.inspect(conn).has_table(meta.name):
            return {}
        return {k: json.loads(v) for k, v in conn.execute(sa.select(meta.c.key, meta.c.value)).all()}

    def _lock(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(self.name.encode())})

    def info(self, cfg: MlopsConfig) -> dict[str, Any]:
        """Code version, retention horizon and as-of time the store was materialized with ({} when empty)."""
        _, _, meta = self._tables(cfg)
        with self._read.connect() as conn:
            return self._meta(conn, meta)

    # -------------------------------------------------------------------------------------------- writing
    def materialize(
        self,
        cfg: MlopsConfig,
        frame: pd.DataFrame,
        *,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        as_of: pd.Timestamp | None = None,
    ) -> dict[str, Any]:
        """Replace the events in ``[start, end)`` with ``frame``'s rows, then refresh the latest values.

        ``frame``: validated rows (or the features frame) of one partition: timestamp, entity columns and
        every feature source column (the label included when a feature reads it). ``start``/``end`` default
        to the frame's first timestamp and just after its last. Latest values are computed as of ``as_of``
        (default: just after the newest stored event). Returns counts for the materialization's metadata.
        """
        ds = cfg.dataset
        defs = feature_registry(cfg)
        sources = source_columns(defs)
        version = features_code_version(cfg)
        ts = timestamps_ns(frame, ds.timestamp_column)
        lo = _ns(start) if start is not None else (int(ts.min()) if len(ts) else None)
        hi = _ns(end) if end is not None else (int(ts.max()) + 1 if len(ts) else None)
        if len(ts) and (ts.min() < lo or ts.max() >= hi):
            raise FeatureInputError(f"rows outside the materialized range [{start}, {end})")
        keys = key_strings(entity_keys(frame, ds.entity_columns))
        vals = source_values(cfg, frame, sources)
        events_t, latest_t, meta_t = self._tables(cfg)
        window = int(lookback(cfg).value)
        retention = int(online_retention(cfg).value)

        with self._write.begin() as conn:
            self._lock(conn)
            meta = self._meta(conn, meta_t)
            reset = bool(meta) and meta.get("code_version") != version
            if reset:
                # Definitions changed: the stored numbers mean something else now; start over.
                for t in (latest_t, events_t, meta_t):
                    t.drop(conn, checkfirst=True)
                meta = {}
            for t in (events_t, latest_t, meta_t):
                t.create(conn, checkfirst=True)
            if lo is not None:
                conn.execute(sa.delete(events_t).where(events_t.c.ts >= lo, events_t.c.ts < hi))
            horizon = meta.get("horizon")
            keep = ts >= horizon if horizon is not None else np.ones(len(ts), bool)
            cols = ["entity_key", "ts", *[f"v{i}" for i in range(len(sources))]]
            data = [keys[keep], ts[keep].tolist(), *[_nullable(vals[s][keep]) for s in sources]]
            _insert(conn, events_t, cols, data)
            newest = conn.execute(sa.select(sa.func.max(events_t.c.ts))).scalar()
            if newest is None:
                conn.execute(sa.delete(latest_t))
                conn.execute(sa.delete(meta_t))
                return {"events": 0, "entities": 0, "reset": reset}
            new_horizon = max(int(newest) - retention, horizon if horizon is not None else -(2**63))
            conn.execute(sa.delete(events_t).where(events_t.c.ts < new_horizon))
            as_of_ns = _ns(as_of) if as_of is not None else int(newest) + 1
            known = self._load(conn, cfg, events_t, None, as_of_ns - window, as_of_ns)
            all_keys = np.array(
                [r[0] for r in conn.execute(sa.select(events_t.c.entity_key).distinct()).all()], dtype=object
            )
            values = evaluate(defs, known, all_keys, np.full(len(all_keys), as_of_ns, dtype="int64"))
            conn.execute(sa.delete(latest_t))
            lcols = ["entity_key", "as_of", "code_version", *[f"f{i}" for i in range(len(defs))]]
            ldata: list[np.ndarray | Sequence[Any]] = [
                all_keys,
                [as_of_ns] * len(all_keys),
                [version] * len(all_keys),
                *[_nullable(values[d.name]) for d in defs],
            ]
            _insert(conn, latest_t, lcols, ldata)
            new_meta = {
                "code_version": version,
                "horizon": new_horizon,
                "as_of": as_of_ns,
                "sources": sources,
                "features": [d.name for d in defs],
                "entity_columns": list(ds.entity_columns),
            }
            conn.execute(sa.delete(meta_t))
            conn.execute(sa.insert(meta_t), [{"key": k, "value": json.dumps(v)} for k, v in new_meta.items()])
            stored = conn.execute(sa.select(sa.func.count()).select_from(events_t)).scalar_one()
        return {
            "events": int(stored),
            "entities": len(all_keys),
            "as_of": pd.Timestamp(as_of_ns, tz="UTC"),
            "horizon": pd.Timestamp(new_horizon, tz="UTC"),
            "reset": reset,
        }

    # -------------------------------------------------------------------------------------------- reading
    def _load(
        self,
        conn: sa.Connection,
        cfg: MlopsConfig,
        events_t: sa.Table,
        keys: Sequence[str] | None,
        lo: int,
        hi: int,
    ) -> Events:
        sources = source_columns(feature_registry(cfg))
        q = sa.select(events_t).where(events_t.c.ts >= lo, events_t.c.ts < hi)
        if keys is not None:
            q = q.where(events_t.c.entity_key.in_(list(dict.fromkeys(keys))))
        rows = conn.execute(q).all()
        if not rows:
            return Events.concat([], sources)
        cols = list(zip(*rows, strict=True))
        return Events(
            keys=np.array(cols[0], dtype=object),
            ts=np.array(cols[1], dtype="int64"),
            values={s: np.array(cols[2 + i], dtype="float64") for i, s in enumerate(sources)},
        )

    def _checked_meta(self, conn: sa.Connection, cfg: MlopsConfig, meta_t: sa.Table) -> dict[str, Any]:
        meta = self._meta(conn, meta_t)
        if not meta:
            raise OnlineStoreError(f"{self!r} has not been materialized (materialize the features asset)")
        version = features_code_version(cfg)
        if meta["code_version"] != version:
            raise OnlineStoreError(
                f"{self!r} holds features of code version {meta['code_version']}, the configuration defines "
                f"{version}: rematerialize the features before serving them"
            )
        return meta

    def events(self, cfg: MlopsConfig, keys: Sequence[str], lo: int, hi: int) -> Events:
        """Stored events of ``keys`` with timestamps in ``[lo, hi)`` (ns); refuses ranges before the horizon."""
        events_t, _, meta_t = self._tables(cfg)
        with self._read.connect() as conn:
            meta = self._checked_meta(conn, cfg, meta_t)
            if lo < meta["horizon"]:
                raise OnlineStoreError(
                    f"{self!r} keeps events since {pd.Timestamp(meta['horizon'], tz='UTC')}; a row needs "
                    f"events since {pd.Timestamp(lo, tz='UTC')} (raise features.online_retention to serve older rows)"
                )
            return self._load(conn, cfg, events_t, keys, lo, hi)

    def latest(self, cfg: MlopsConfig, keys: Sequence[str]) -> tuple[int, np.ndarray]:
        """(as_of ns, values): one row per key, one column per feature in registry order; entities never
        seen get the values of an empty history (missing, counts 0).

        The serving hot path: one prepared SELECT on the primary key through the pooled DBAPI connection.
        The meta table is read once per code version; every row carries the code version it was computed
        with, so a rematerialization with other definitions is refused on the next lookup.
        """
        version = features_code_version(cfg)
        if self._ready != version:
            _, _, meta_t = self._tables(cfg)
            with self._read.connect() as conn:
                self._checked_meta(
                    conn, cfg, meta_t
                )  # raises when not materialized or materialized otherwise
            self._ready = version
        if self._mirror is not None:
            hit = self._mirror.latest(cfg, version, keys)
            if hit is not None:
                return hit
        uniq = list(dict.fromkeys(keys))
        sql, n_features = self._latest_query(cfg, version)
        try:
            rows = self._fetch(sql, uniq) if uniq else []
        except self._hot.dialect.loaded_dbapi.Error:
            # Tables rebuilt from other definitions may lack this version's columns: say so if that is why.
            self._ready = None
            _, _, meta_t = self._tables(cfg)
            with self._read.connect() as conn:
                self._checked_meta(conn, cfg, meta_t)
            raise
        found = {}
        for r in rows:
            if r[2] != version:
                self._ready = None
                raise OnlineStoreError(
                    f"{self!r} holds features of code version {r[2]}, the configuration defines {version}: "
                    "rematerialize the features before serving them"
                )
            found[r[0]] = r[3:]
        if not rows or len(found) < len(uniq):
            _, _, meta_t = self._tables(cfg)
            with self._read.connect() as conn:
                as_of = int(self._checked_meta(conn, cfg, meta_t)["as_of"])
            missing_row = self._missing_row(cfg, version)
            values = np.array([found.get(k, missing_row) for k in keys], dtype="float64")
        else:
            as_of = int(rows[0][1])  # one materialization writes every row: one as-of time
            values = np.array([found[k] for k in keys], dtype="float64")
        return as_of, values.reshape(len(keys), n_features)

    def _latest_query(self, cfg: MlopsConfig, version: str) -> tuple[str, int]:
        cached = self._latest_sql
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        n = len(feature_registry(cfg))
        _, latest_t, _ = self._tables(cfg)
        cols = ", ".join(["entity_key", "as_of", "code_version", *[f"f{i}" for i in range(n)]])
        # PostgreSQL: one statement text whatever the number of keys, so the driver prepares it once per
        # connection, with binary parameters and results (no text parsing of 100 keys and 400 floats). SQLite: the module caches a prepared statement per text (one per distinct key count).
        where = "entity_key = ANY(%s)" if self._pg else "entity_key IN ({})"
        sql = f'SELECT {cols} FROM "{latest_t.name}" WHERE {where}'
        self._latest_sql = (version, sql, n)
        return sql, n

    def _missing_row(self, cfg: MlopsConfig, version: str) -> tuple[float, ...]:
        cached = self._missing
        if cached is None or cached[0] != version:
            defs = feature_registry(cfg)
            empty = evaluate(defs, Events.concat([], source_columns(defs)), np.array([0]), np.array([0]))
            cached = self._missing = (version, tuple(float(empty[d.name][0]) for d in defs))
        return cached[1]

    def _fetch(self, sql: str, keys: list[str]) -> Sequence[Any]:
        """Rows of the latest table for ``keys`` through the hot pool (see :func:`_engine`)."""
        if self._pg:
            params: Any = (keys,)
        else:
            sql = sql.format(", ".join("?" * len(keys)))
            params = keys
        for attempt in (1, 2):
            conn = self._hot.raw_connection()
            try:
                cur = conn.cursor()
                if self._pg:
                    # SQLAlchemy types the raw cursor as the generic DBAPI one; on PostgreSQL it is psycopg 3's.
                    cast("psycopg.Cursor[Any]", cur).execute(sql, params, prepare=True, binary=True)
                else:
                    cur.execute(sql, params)
                rows = cur.fetchall()
                cur.close()
                return rows
            except self._hot.dialect.loaded_dbapi.Error as err:
                # Not pinged at checkout: a pooled connection the server has dropped (restart) fails here;
                # discard it and retry once on a fresh one. Anything else, or a second failure, is raised.
                if attempt == 2 or not self._hot.dialect.is_disconnect(err, conn.dbapi_connection, None):
                    raise
                conn.invalidate()
            finally:
                conn.close()
        raise AssertionError("unreachable")


class _LatestMirror:
    """SQLite: the latest table in memory, reloaded when ``PRAGMA data_version`` says the database changed.

    SQLite's driver releases the GIL around every row it steps; with concurrent lookups each of 100 rows can
    then wait for another thread's turn, which is where a 100-entity lookup's tail latency went. From memory a
    lookup is one PRAGMA (a counter SQLite bumps on every commit by another connection) and array indexing.
    The snapshot is read in one read transaction; it only answers when it is unambiguous (one code version,
    one as-of time, the meta table present), else :meth:`latest` asks SQL, which words the refusal.
    """

    def __init__(self, store: OnlineStore):
        self._store = store
        self._lock = threading.Lock()  # the connection and the snapshot are shared by the lookup threads
        self._conn: Any = None  # a DBAPI connection of our own, detached from the pool
        self._loaded: tuple[int, str] | None = None  # (commit counter, code version) of the snapshot
        self._snapshot: tuple[str, int, dict[str, int], np.ndarray] | None = None
        self._pid = os.getpid()

    def latest(self, cfg: MlopsConfig, version: str, keys: Sequence[str]) -> tuple[int, np.ndarray] | None:
        """What :meth:`OnlineStore.latest` returns, or None when the snapshot cannot answer."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not use its parent's SQLite connection (nor close it): its own.
                self._conn, self._loaded, self._snapshot = None, None, None
                self._pid = os.getpid()
            if self._conn is None:
                proxied = self._store._read.raw_connection()
                proxied.detach()  # kept for the PRAGMA: data_version is per connection
                self._conn = proxied
            cur = self._conn.cursor()
            try:
                cur.execute("PRAGMA data_version")
                commits = int(cur.fetchone()[0])  # SQLite's own "data_version": a commit counter
                if (commits, version) != self._loaded:
                    self._loaded = None
                    self._snapshot = self._load(cur, cfg, version)
                    self._loaded = (commits, version)
            finally:
                cur.close()
            snapshot = self._snapshot
        if snapshot is None or snapshot[0] != version:
            return None
        _, as_of, positions, matrix = snapshot
        idx = [positions.get(k, -1) for k in keys]
        values = matrix[idx]  # a copy: the frame may be written by the caller
        if -1 in idx:
            values[np.array(idx) == -1] = self._store._missing_row(cfg, version)
        return as_of, values.reshape(len(keys), matrix.shape[1])

    def _load(
        self, cur: Any, cfg: MlopsConfig, version: str
    ) -> tuple[str, int, dict[str, int], np.ndarray] | None:
        _, latest_t, meta_t = self._store._tables(cfg)
        n = len(feature_registry(cfg))
        cur.execute("BEGIN")  # one snapshot for the checks and the rows
        try:
            names = {
                r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            }
            if latest_t.name not in names or meta_t.name not in names:
                return None
            count = cur.execute(f'SELECT count(*) FROM "{latest_t.name}"').fetchone()[0]
            if not count or count > _MIRROR_MAX_ROWS:
                return None
            meta_as_of = cur.execute(f'SELECT value FROM "{meta_t.name}" WHERE key = ?', ["as_of"]).fetchall()
            stamps = cur.execute(f'SELECT DISTINCT code_version, as_of FROM "{latest_t.name}"').fetchall()
            # Other definitions (maybe other columns) or an inconsistent store: SQL answers, or words the refusal.
            if not meta_as_of or stamps != [(version, json.loads(meta_as_of[0][0]))]:
                return None
            cols = ", ".join(["entity_key", *[f"f{i}" for i in range(n)]])
            rows = cur.execute(f'SELECT {cols} FROM "{latest_t.name}"').fetchall()
        finally:
            cur.execute("COMMIT")
        positions = {r[0]: i for i, r in enumerate(rows)}
        matrix = np.array([r[1:] for r in rows], dtype="float64").reshape(len(rows), n)
        return stamps[0][0], int(stamps[0][1]), positions, matrix


def _insert(
    conn: sa.Connection, table: sa.Table, columns: list[str], data: list[np.ndarray | Sequence[Any]]
) -> None:
    n = len(data[0])
    for b in range(0, n, _INSERT_BATCH):
        chunk = [d[b : b + _INSERT_BATCH] for d in data]
        rows = [dict(zip(columns, r, strict=True)) for r in zip(*chunk, strict=True)]
        conn.execute(sa.insert(table), rows)


def _ns(t: Any) -> int:
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def _nullable(v: np.ndarray) -> list[float | None]:
    return [None if x != x else x for x in v.tolist()]


def complete_features(cfg: MlopsConfig, rows: pd.DataFrame, online: OnlineStore) -> pd.DataFrame:
    """Model inputs for rows to score: their raw columns plus window features as of each row's timestamp.

    ``rows``: raw event columns (timestamp, entity keys, raw columns; no label). Timestamps may be tz-aware,
    ISO strings or naive (taken as UTC). Window features use the online store's events in
    ``[t - window, t)``; the TTL runs from ``t``, not from the wall clock. The request's own rows are not
    history for each other (they are not validated data yet). Same engine as :func:`compute_features`.
    """
    ds = cfg.dataset
    defs = feature_registry(cfg)
    ts = timestamps_ns(rows, ds.timestamp_column, coerce=True)
    keys = entity_keys(rows, ds.entity_columns)
    rows = rows.copy()
    rows[ds.timestamp_column] = pd.to_datetime(ts, utc=True)
    if defs and len(rows):
        known = online.events(
            cfg, list(key_strings(keys)), int(ts.min()) - int(lookback(cfg).value), int(ts.max())
        )
    else:
        known = Events.concat([], source_columns(defs))
    values = evaluate(defs, known, keys, ts)
    return _assemble(cfg, rows.drop(columns=[ds.label_column], errors="ignore"), values, include_label=False)


def online_features_as_of(
    cfg: MlopsConfig, entities: pd.DataFrame, as_of: Any, online: OnlineStore
) -> pd.DataFrame:
    """Window features of each entity as of ``as_of`` (entity keys, timestamp = as_of, features)."""
    ds = cfg.dataset
    t = _ns(as_of)
    frame = entities[list(ds.entity_columns)].copy()
    frame[ds.timestamp_column] = pd.Timestamp(t, tz="UTC")
    keys = entity_keys(frame, ds.entity_columns)
    defs = feature_registry(cfg)
    known = (
        online.events(cfg, list(key_strings(keys)), t - int(lookback(cfg).value), t)
        if defs
        else Events.concat([], source_columns(defs))
    )
    values = evaluate(defs, known, keys, np.full(len(frame), t, dtype="int64"))
    out = frame[[ds.timestamp_column, *ds.entity_columns]]
    return pd.concat([out, pd.DataFrame(values, index=frame.index)], axis=1)
