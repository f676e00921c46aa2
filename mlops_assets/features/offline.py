"""The offline store: the features frame of every partition, for training and point-in-time lookups.

Locally one Parquet file per partition (written to a temporary file, then renamed: a reader never sees half a
partition); with a SQLAlchemy URL, one table with a partition column (PostgreSQL in production). Writing a
partition replaces it, so rematerializing is idempotent and late rows of an old partition are picked up.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import pandas as pd
import sqlalchemy as sa

from mlops_assets.data.store import (
    CorruptPartitionError,
    arrow_slices,
    check_file,
    file_digest,
    join_alike,
    keep_snapshot,
    read_table,
    table_to_pandas,
    to_arrow,
    write_table,
)

if TYPE_CHECKING:
    from mlops_assets.storage import Storage

SNAPSHOTS = ".snapshots"
PARTITION_COLUMN = "_partition"
ROW_COLUMN = "_row"


class OfflineStoreError(RuntimeError):
    """The offline store cannot serve a request; the message names the partition or table."""


def _valid_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"offline store name {name!r}: letters, digits and underscores only")
    return name


class OfflineStore:
    """Features per partition: Parquet files under ``root/name`` or a table ``name`` at a SQLAlchemy ``url``."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        name: str = "features",
        through: str | None = None,
    ):
        if (root is None) == (url is None):
            raise ValueError("OfflineStore needs exactly one of root (Parquet folder) or url (SQL database)")
        self.name = _valid_name(name)
        self.url = url
        self.root = Path(root) / name if root is not None else None
        self._engine = sa.create_engine(url) if url is not None else None
        # Partitions newer than this key are not seen (None: all): a run reads the data of its own range only.
        self.through = through
        # partition -> file digest: this view reads those bytes (the current file or a kept snapshot); see pinned.
        self.pins: dict[str, str] | None = None

    def until(self, through: str | None) -> OfflineStore:
        """This store seen up to partition ``through`` (included; None: every partition), for a run that must
        not read partitions another run wrote beyond its own range."""
        view = copy.copy(self)
        view.through = through
        return view

    def pinned(self, digests: dict[str, str]) -> OfflineStore:
        """This store as it was: each partition in ``digests`` read from the file with that digest (the current
        one, or the snapshot a rewrite kept); a partition whose bytes are nowhere any more raises
        :class:`OfflineStoreError` naming it. Parquet stores only (a SQL store keeps no snapshots)."""
        if self._engine is not None:
            raise OfflineStoreError(f"{self!r}: a SQL offline store keeps no snapshots")
        view = copy.copy(self)
        view.pins = dict(digests)
        return view

    @classmethod
    def from_storage(cls, storage: Storage, *, name: str = "features") -> OfflineStore:
        """The configured store: ``storage.offline_store_url`` when set, else Parquet under ``storage.offline_store``."""
        if storage.offline_store_url:
            return cls(url=storage.offline_store_url, name=name)
        return cls(storage.offline_store, name=name)

    def __repr__(self) -> str:
        return f"OfflineStore({self.url or self.root}, name={self.name!r})"

    # -------------------------------------------------------------------------------------------- writing
    def write_partition(self, partition_key: str, frame: pd.DataFrame) -> None:
        """Store ``frame`` as the whole content of ``partition_key`` (replacing what was there)."""
        reserved = {PARTITION_COLUMN, ROW_COLUMN} & set(frame.columns)
        if reserved:
            raise OfflineStoreError(f"columns {sorted(reserved)} are reserved by the offline store")
        frame = frame.reset_index(drop=True)
        if self._engine is None:
            write_table(
                to_arrow(frame), self._path(partition_key), snapshots=self.snapshot_folder(partition_key)
            )
            return
        dtypes = {c: str(t) for c, t in frame.dtypes.items()}
        with self._engine.begin() as conn:
            if self._table_exists():
                stored = self._dtypes(conn)
                if stored != dtypes:
                    raise OfflineStoreError(
                        f"{self!r}: partition {partition_key!r} has columns/dtypes {dtypes}, the table holds "
                        f"{stored}; delete the table (or use a new store name) after changing the features"
                    )
                conn.execute(
                    sa.text(f'DELETE FROM "{self.name}" WHERE "{PARTITION_COLUMN}" = :k'),
                    {"k": partition_key},
                )
            else:
                pd.DataFrame({"column": list(dtypes), "dtype": list(dtypes.values())}).to_sql(
                    self._schema_table, conn, if_exists="replace", index=False
                )
            stored_columns: dict[str, str | range] = {
                PARTITION_COLUMN: partition_key,
                ROW_COLUMN: range(len(frame)),
            }
            frame.assign(**stored_columns).to_sql(
                self.name, conn, if_exists="append", index=False, chunksize=10_000
            )

    def write_partitions(self, frame: pd.DataFrame, parts: Sequence[tuple[str, int]]) -> None:
        """Store consecutive row slices of ``frame`` as partitions (``parts``: key and rows, in row order), each as
        :meth:`write_partition` would; locally converted to Arrow in runs of slices where that gives the same files
        (:func:`~mlops_assets.data.store.arrow_slices`)."""
        if sum(n for _, n in parts) != len(frame):
            raise ValueError(f"slices of {sum(n for _, n in parts)} rows for a frame of {len(frame)}")
        if self._engine is not None:
            start = 0
            for key, n in parts:
                self.write_partition(key, frame.iloc[start : start + n])
                start += n
            return
        reserved = {PARTITION_COLUMN, ROW_COLUMN} & set(frame.columns)
        if reserved:
            raise OfflineStoreError(f"columns {sorted(reserved)} are reserved by the offline store")
        for (key, _), table in zip(parts, arrow_slices(frame, [n for _, n in parts]), strict=True):
            write_table(table, self._path(key), snapshots=self.snapshot_folder(key))

    def delete_partition(self, partition_key: str) -> None:
        """Remove a partition (no error when it is absent); in a Parquet store its file is kept as a snapshot."""
        if self._engine is None:
            path = self._path(partition_key)
            if path.is_file():
                keep_snapshot(path, self.snapshot_folder(partition_key))
            path.unlink(missing_ok=True)
        elif self._table_exists():
            with self._engine.begin() as conn:
                conn.execute(
                    sa.text(f'DELETE FROM "{self.name}" WHERE "{PARTITION_COLUMN}" = :k'),
                    {"k": partition_key},
                )

    # -------------------------------------------------------------------------------------------- reading
    def partitions(self) -> list[str]:
        """The stored partition keys, sorted."""
        if self._engine is None:
            if self.root is None or not self.root.is_dir():
                return []
            keys = [unquote(p.name[: -len(".parquet")]) for p in self.root.glob("*.parquet")]
            if self.pins:
                keys = sorted({*keys, *(k for k, d in self.pins.items() if self._snapshot(k, d).is_file())})
        elif not self._table_exists():
            return []
        else:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.text(f'SELECT DISTINCT "{PARTITION_COLUMN}" FROM "{self.name}"')).all()
            keys = [r[0] for r in rows]
        return sorted(k for k in keys if self.through is None or k <= self.through)

    def read(
        self, partition_keys: list[str] | None = None, *, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """The rows of the given partitions (all when ``None``), partitions in key order, rows in stored order;
        only ``columns`` when given."""
        stored = self.partitions()
        keys = stored if partition_keys is None else sorted(partition_keys)
        missing = sorted(set(keys) - set(stored))
        lost = [k for k in missing if k in (self.pins or {})]
        if lost:
            raise OfflineStoreError(
                f"{self!r}: partitions {lost[:10]} as pinned: removed since, and no snapshot is kept"
            )
        if missing:
            raise OfflineStoreError(f"{self!r}: partitions not materialized: {missing[:10]}")
        if not keys:
            return pd.DataFrame()
        if self._engine is None:
            return self._read_files(keys, columns)
        with self._engine.connect() as conn:
            dtypes = self._dtypes(conn)
            if columns is not None:
                unknown = sorted(set(columns) - set(dtypes))
                if unknown:
                    raise OfflineStoreError(f"{self!r}: no column(s) {unknown}")
                dtypes = {c: t for c, t in dtypes.items() if c in columns}
            table = sa.Table(self.name, sa.MetaData(), autoload_with=conn)
            col = table.c[PARTITION_COLUMN]
            query = sa.select(*(table.c[c] for c in [*dtypes, PARTITION_COLUMN, ROW_COLUMN]))
            if partition_keys is not None or self.through is not None:
                query = query.where(col.in_(keys))
            frame = pd.read_sql(query.order_by(col, table.c[ROW_COLUMN]), conn)
        frame = frame.drop(columns=[PARTITION_COLUMN, ROW_COLUMN])
        for c, t in dtypes.items():
            # SQLite hands datetimes back as text and PostgreSQL in the session's zone: restore the stored dtype.
            if t.startswith("datetime64"):
                s = pd.to_datetime(frame[c], utc=True, format="ISO8601")
                dtype = pd.api.types.pandas_dtype(t)
                frame[c] = s.astype(dtype) if "UTC" in t else s.dt.tz_localize(None).astype(dtype)
            elif str(frame[c].dtype) != t:
                frame[c] = frame[c].astype(pd.api.types.pandas_dtype(t))
        return frame[list(dtypes)]

    # -------------------------------------------------------------------------------------------- helpers
    def _read_files(self, keys: list[str], columns: list[str] | None) -> pd.DataFrame:
        """The partitions' files as one frame: joined as Arrow and converted once when the files share a schema
        (a millisecond a file saved on a read of hundreds); else each file converted, then concatenated."""
        tables = [read_table(self._file(k), columns, asset=self.asset_label) for k in keys]
        joined = join_alike(tables) if len(tables) > 1 else tables[0]
        if joined is not None:
            return table_to_pandas(joined)
        return pd.concat([table_to_pandas(t) for t in tables], ignore_index=True)

    @property
    def asset_label(self) -> str:
        """How errors name this store's partitions: the features asset, in this offline store."""
        return f"features (offline store {self.name})"

    def unreadable(self, *, footer_only: bool = False) -> list[CorruptPartitionError]:
        """The stored partition files that cannot be read in full, or, ``footer_only``, whose footer cannot be read
        (none for a SQL store)."""
        found = []
        for key in self.partitions() if self._engine is None else []:
            try:
                check_file(self._path(key), footer_only=footer_only, asset=self.asset_label)
            except CorruptPartitionError as err:
                found.append(err)
        return found

    def _path(self, partition_key: str) -> Path:
        assert self.root is not None
        return self.root / f"{quote(partition_key, safe='')}.parquet"

    # -------------------------------------------------------------------------------------------- snapshots
    # A Parquet store keeps every file a rewrite replaces (or a delete removes) as
    # ``.snapshots/<partition>/<sha256 of its bytes>.parquet``: content-addressed, so rewriting the same bytes adds
    # nothing. A registered version records the digest of each partition it read (``file_digests``); ``pinned``
    # reads them back, and ``mlops-assets gc`` removes the snapshots no version to keep needs.

    def snapshot_folder(self, partition_key: str) -> Path:
        assert self.root is not None
        return self.root / SNAPSHOTS / quote(partition_key, safe="")

    def _snapshot(self, partition_key: str, digest: str) -> Path:
        return self.snapshot_folder(partition_key) / f"{digest}.parquet"

    def file_digests(self, partition_keys: Sequence[str]) -> dict[str, str]:
        """partition -> digest of the file a read of it reads now ({} for a SQL store)."""
        if self._engine is not None:
            return {}
        return {k: file_digest(self._file(k)) for k in partition_keys}

    def missing_snapshots(self) -> list[str]:
        """The pinned partitions whose bytes are neither the current file nor a kept snapshot."""
        return sorted(
            k
            for k, d in (self.pins or {}).items()
            if not self._snapshot(k, d).is_file()
            and not (self._path(k).is_file() and file_digest(self._path(k)) == d)
        )

    def snapshots(self) -> list[tuple[str, str, Path]]:
        """Every kept snapshot: (partition, digest, path)."""
        if self._engine is not None or self.root is None or not (self.root / SNAPSHOTS).is_dir():
            return []
        return sorted(
            (unquote(folder.name), path.stem, path)
            for folder in (self.root / SNAPSHOTS).iterdir()
            for path in folder.glob("*.parquet")
        )

    def _file(self, partition_key: str) -> Path:
        """The file a read of ``partition_key`` reads: the current one, or, pinned to other bytes, their snapshot."""
        path = self._path(partition_key)
        digest = (self.pins or {}).get(partition_key)
        if digest is None:
            return path
        snapshot = self._snapshot(partition_key, digest)
        if snapshot.is_file():
            return snapshot
        if path.is_file() and file_digest(path) == digest:
            return path
        raise OfflineStoreError(
            f"{self!r}: partition {partition_key!r} as of {digest}: rewritten since, and no snapshot is kept"
        )

    @property
    def _schema_table(self) -> str:
        return f"{self.name}__columns"

    def _dtypes(self, conn: sa.Connection) -> dict[str, str]:
        rows = conn.execute(sa.text(f'SELECT "column", "dtype" FROM "{self._schema_table}"')).all()
        return {r[0]: r[1] for r in rows}

    def _table_exists(self) -> bool:
        assert self._engine is not None
        return sa.inspect(self._engine).has_table(self.name)
