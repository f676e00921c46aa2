"""The embedded instance's event log: Dagster's SQLite event log, with its connections kept instead of remade.

Dagster's :class:`SqliteEventLogStorage` builds a new SQLAlchemy engine and opens a new SQLite connection for every
event it stores, and again for ``index.db`` (the cross-run index) and to ask whether a table exists. A run over
hundreds of partitions stores thousands of events, and each one then pays for engines, a cold SQL compile cache and,
on every file, the WAL checkpoint SQLite runs when the last connection to a file closes: three fsyncs per event.
This storage keeps:

* one engine per file, so SQLAlchemy's compiled-statement cache survives from one event to the next;
* one open connection per file (``index.db`` and the newest runs' files), so closing after an event no longer
  checkpoints: SQLite checkpoints the WAL by itself every 1,000 pages instead;
* the tables and columns it has seen, instead of asking SQLite on every materialization.

Durability is unchanged: the files stay in WAL mode (Dagster sets it when it creates them) with
``synchronous=NORMAL`` on every connection, so a crash of the process loses nothing committed and a power cut may
lose the newest events; a WAL left by a crash is replayed by the next connection. Only files under this storage's
``base_dir`` are opened. Configured in the repository's ``dagster.yaml``; production instances use PostgreSQL.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# Dagster's own busy timeout for its SQLite files (dagster._core.storage.sqlite.SQLITE_BUSY_TIMEOUT_SECONDS).
_BUSY_TIMEOUT_SECONDS = 30
# Run files this process keeps a connection to (three file descriptors each), besides index.db.
_KEPT_RUN_FILES = 8


def _synchronous_normal(dbapi_conn, _record) -> None:
    # WAL is a property of the file and persists; `synchronous` belongs to the connection and must be set on each.
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")


class EmbeddedSqliteEventLogStorage(SqliteEventLogStorage):
    """:class:`SqliteEventLogStorage` with one engine and one kept connection per file.

    ``base_dir`` defaults to ``$DAGSTER_HOME/history/runs`` (``DAGSTER_HOME`` defaulting to ``$MLOPS_HOME/dagster``,
    as everywhere in the project), where Dagster's default SQLite storage keeps its
    event logs, so an instance home made before this class existed keeps its history.
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        if base_dir is None:
            # DAGSTER_HOME, else the project's default ($MLOPS_HOME/dagster): a CLI's temporary instance (`dg check
            # defs`, `dagster definitions validate` without DAGSTER_HOME) reads this dagster.yaml without setting it.
            from mlops_assets.storage import storage_from_env

            base_dir = os.path.join(storage_from_env().dagster_home, "history", "runs")
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._schema_present: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]  # the parent narrows the config type; ours is its dict
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> EmbeddedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        # One connection kept per file: `_connect` holds the storage lock while it is out, so no two users share
        # it at once, and it may move between threads (the webserver's, the daemon's). The overflow serves
        # Dagster's own second connection while it creates a file's tables (`_initdb` inspects the engine).
        engine = create_engine(
            create_db_conn_string(self._base_dir, shard),
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=4,
            connect_args={"timeout": _BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        event.listen(engine, "connect", _synchronous_normal)
        self._engines[shard] = engine
        while len(self._engines) > _KEPT_RUN_FILES + 1:
            # Disposing closes the kept connection: SQLite checkpoints that file's WAL into it.
            oldest = next(s for s in self._engines if s != INDEX_SHARD_NAME)
            self._engines.pop(oldest).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As the parent's, with the engine and its connection kept instead of made and disposed each time.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None  # a checked-out connection holds its DBAPI connection
                changes = raw.total_changes
                with conn.begin():
                    yield conn
                if shard != INDEX_SHARD_NAME and raw.total_changes != changes:
                    # The webserver follows a live run by watching its file for changes (watchdog, inotify). With
                    # the connection kept, new events stay in the WAL until a checkpoint and the file itself does
                    # not change; its modification time, set here after each write, tells the watcher instead.
                    os.utime(self.path_for_shard(shard))

    def has_table(self, table_name: str) -> bool:
        # Asked once per stored materialization (whether `asset_event_tags` exists yet), each time over a new
        # engine and connection. A table, once there, stays (migrations add tables, `wipe` empties them), so a
        # yes is remembered; a no is asked again, in case `dagster instance migrate` has run since.
        if table_name in self._schema_present:
            return True
        present = super().has_table(table_name)
        if present:
            self._schema_present.add(table_name)
        return present

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        # Asked once per stored materialization too (an inspection of `asset_keys`); remembered as tables are.
        key = f"asset_keys.{column_name}"
        if key in self._schema_present:
            return True
        present = super()._has_asset_key_col_on_connection(conn, column_name)
        if present:
            self._schema_present.add(key)
        return present

    def _store_asset_check_evaluation_planned(self, event_entry, event_id: int | None) -> None:
        # The parent writes one row per partition of the run and serializes the whole event (with the run's
        # partition subset) again for each row: 600 serializations for one check of a 600-partition run. The rows
        # are the same here; the event is serialized once.
        planned = event_entry.dagster_event.event_specific_data
        partition_keys = (
            planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        )
        serialized = serialize_value(event_entry)
        timestamp = self._event_insert_timestamp(event_entry)
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(),
                [
                    dict(
                        asset_key=planned.asset_key.to_string(),
                        check_name=planned.check_name,
                        partition=partition_key,
                        run_id=event_entry.run_id,
                        execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                        evaluation_event=serialized,
                        evaluation_event_timestamp=timestamp,
                        evaluation_event_storage_id=event_id,
                    )
                    for partition_key in partition_keys
                ],
            )

    def wipe(self) -> None:
        # Run files are deleted: forget their engines first so none points at a removed file.
        with self._db_lock:
            for shard in [s for s in self._engines if s != INDEX_SHARD_NAME]:
                self._engines.pop(shard).dispose()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
