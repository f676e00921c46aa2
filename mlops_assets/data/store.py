"""Per-partition Parquet files: the local store behind raw and validated data.

A partition is one file, written to a temporary name and renamed into place, so a crash mid-write never leaves a
half-written partition and rematerializing a partition replaces it whole.

Files are written and read through pyarrow directly: the same files and frames as ``DataFrame.to_parquet`` and
``pd.read_parquet`` (pandas metadata and ``attrs`` included), without pandas' per-call path handling, which a run
over hundreds of partitions otherwise pays once per file. A backfill writes a group of partitions from one frame
(:meth:`PartitionStore.write_slices`), converting it to Arrow once where that gives the same files, and reads a
group as runs of files whose schemas join alike (:meth:`PartitionStore.read_runs`), converting each run once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

_ATTRS_KEY = b"PANDAS_ATTRS"  # where pandas keeps DataFrame.attrs in a Parquet file
REPAIR_HINT = "`mlops-assets repair` moves it aside and rebuilds it from the source"


class CorruptPartitionError(RuntimeError):
    """A stored partition file that cannot be read (empty, truncated, overwritten): names the asset, the
    partition and the file."""

    def __init__(self, asset: str, partition: str, path: Path, cause: str):
        self.asset, self.partition, self.path, self.cause = asset, partition, Path(path), cause
        super().__init__(
            f"{asset} partition {partition}: the stored file {path} cannot be read ({cause}); {REPAIR_HINT}"
        )


class PartitionStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid partition key {key!r}")
        return self.root / f"{key}.parquet"

    def write(self, key: str, frame: pd.DataFrame) -> Path:
        target = self.path(key)
        write_table(to_arrow(frame), target, prefix=f".{key}.")
        return target

    def write_slices(self, frame: pd.DataFrame, parts: Sequence[tuple[str, int]]) -> None:
        """Write consecutive row slices of ``frame`` as partitions: ``parts`` is (key, rows) in row order.

        Each file is the one :meth:`write` would write for that slice (with a fresh index).
        """
        for (key, _), table in zip(parts, arrow_slices(frame, [n for _, n in parts]), strict=True):
            write_table(table, self.path(key), prefix=f".{key}.")

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.parquet"))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(
        self, keys: list[str] | None = None, *, missing_ok: bool = False, columns: list[str] | None = None
    ) -> pd.DataFrame:
        keys = self.keys() if keys is None else keys
        paths = []
        for key in keys:
            p = self.path(key)
            if not p.is_file():
                if missing_ok:
                    continue
                raise FileNotFoundError(f"partition {key!r} has not been materialized ({p})")
            paths.append(p)
        if not paths:
            return pd.DataFrame()
        if len(paths) == 1:
            return read_parquet(paths[0], columns)
        return _read_many(paths, columns)

    def read_runs(self, keys: list[str]) -> Iterator[tuple[list[str], pd.DataFrame, list[int]]]:
        """The partitions ``keys`` in runs of consecutive keys whose files join alike: each run's keys, its rows
        as one frame and each partition's row count. Each partition's slice of a run's frame is exactly the frame
        :meth:`read` gives for that key alone."""
        run: list[str] = []
        tables: list[pa.Table] = []
        for key in keys:
            table = read_table(self.path(key), None)
            if tables and not joins_alike(tables[0].schema, table.schema):
                yield self._joined(run, tables)
                run, tables = [], []
            run.append(key)
            tables.append(table)
        if run:
            yield self._joined(run, tables)

    @staticmethod
    def _joined(run: list[str], tables: list[pa.Table]) -> tuple[list[str], pd.DataFrame, list[int]]:
        joined = join_alike(tables) if len(tables) > 1 else tables[0]
        assert joined is not None  # a run holds tables that join alike
        return run, table_to_pandas(joined), [t.num_rows for t in tables]

    def row_count(self, key: str) -> int:
        """Rows of a stored partition, from the Parquet footer."""
        import pyarrow.parquet as pq

        path = self.path(key)
        with _named_errors(path):
            return pq.ParquetFile(path).metadata.num_rows

    def unreadable(
        self, keys: list[str] | None = None, *, footer_only: bool = False
    ) -> list[CorruptPartitionError]:
        """The stored partitions (of ``keys``, else all) whose file cannot be read in full, or, ``footer_only``,
        whose Parquet footer cannot be read (an empty or truncated file: one small read a file)."""
        found = []
        for key in self.keys() if keys is None else keys:
            if not self.exists(key):
                continue
            try:
                check_file(self.path(key), footer_only=footer_only)
            except CorruptPartitionError as err:
                found.append(err)
        return found


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table ``frame.to_parquet(index=False)`` writes: no index, pandas metadata, ``attrs`` kept."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if frame.attrs:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _ATTRS_KEY: json.dumps(frame.attrs).encode()}
        )
    return table


def arrow_slices(frame: pd.DataFrame, sizes: Sequence[int]) -> Iterator[pa.Table]:
    """``to_arrow`` of each consecutive slice of ``frame`` (``sizes`` rows each, with a fresh index), converting
    runs of slices at once where that gives the same tables.

    A column of numbers, booleans or times converts to the same Arrow type whatever its rows, so such a frame is
    converted once and sliced. A column of Python objects converts to a type inferred from its values (text, or
    null when every value is missing), so slices are converted together only in runs whose object columns infer
    alike, as text or as all missing; any other object column (decimals, whose precision depends on the values,
    mixed values) or a categorical column converts each slice alone.
    """
    if sum(sizes) != len(frame):
        raise ValueError(f"slices of {sum(sizes)} rows for a frame of {len(frame)}")
    bounds = [0, *itertools.accumulate(sizes)]
    if any(isinstance(t, pd.CategoricalDtype) for t in frame.dtypes):
        for a, b in itertools.pairwise(bounds):
            yield to_arrow(frame.iloc[a:b].reset_index(drop=True))
        return
    objects = [frame[c].to_numpy() for c, t in frame.dtypes.items() if pd.api.types.is_object_dtype(t)]
    kinds = [
        tuple(pd.api.types.infer_dtype(values[a:b], skipna=True) for values in objects)
        for a, b in itertools.pairwise(bounds)
    ]
    i = 0
    while i < len(sizes):
        j = i + 1
        if all(k in _ALIKE for k in kinds[i]):
            while j < len(sizes) and kinds[j] == kinds[i]:
                j += 1
        run = frame.iloc[bounds[i] : bounds[j]].reset_index(drop=True)
        table = to_arrow(run)
        for a, b in itertools.pairwise(bounds[i : j + 1]):
            yield table.slice(a - bounds[i], b - a)
        i = j


# What pandas infers for an object column whose Arrow type is then fixed: text, or no value at all (null).
_ALIKE = {"string", "empty"}


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (20 hex digits): the name a kept snapshot of it has."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def keep_snapshot(path: Path, snapshots: Path) -> Path:
    """Keep the file at ``path`` as ``snapshots/<digest>.parquet`` (a hard link where the file system allows it,
    else a copy); returns the snapshot's path. An existing snapshot of the same bytes is left as it is."""
    snapshot = snapshots / f"{file_digest(path)}.parquet"
    if not snapshot.exists():
        snapshots.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, snapshot)
        except OSError:
            shutil.copyfile(path, snapshot)
    return snapshot


def write_table(table: pa.Table, target: Path, *, prefix: str = ".", snapshots: Path | None = None) -> None:
    """Write ``table`` to ``target`` through a temporary file renamed into place. With ``snapshots``, a file it
    replaces whose bytes differ is kept there first (:func:`keep_snapshot`): a rewrite never destroys a version."""
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        if snapshots is not None and target.is_file() and file_digest(target) != file_digest(Path(tmp)):
            keep_snapshot(target, snapshots)
        os.replace(tmp, target)
    except OSError as err:
        if err.errno is None or err.filename is not None:
            raise
        # Arrow's error names no file: name the partition that could not be written (a full disk, a quota).
        raise OSError(err.errno, os.strerror(err.errno), str(target)) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_table(path: Path, columns: list[str] | None, *, asset: str | None = None) -> pa.Table:
    """One file as Arrow, as ``pd.read_parquet`` reads it (the file's reader directly: no dataset discovery).

    A file that is not a readable Parquet file raises :class:`CorruptPartitionError` naming ``asset`` (default: the
    file's folder, which is the asset's name in a :class:`PartitionStore`), the partition and the path."""
    import pyarrow.parquet as pq

    with _named_errors(path, asset):
        file = pq.ParquetFile(path)
    if columns is not None and not set(columns) <= set(file.schema_arrow.names):
        # A column the file does not have: the reader's own error, naming it (the file is not damaged).
        return file.read(columns=columns, use_pandas_metadata=True)
    with _named_errors(path, asset):
        return file.read(columns=columns, use_pandas_metadata=True)


def check_file(path: Path, *, footer_only: bool = False, asset: str | None = None) -> None:
    """Raise :class:`CorruptPartitionError` when the file at ``path`` cannot be read in full (``footer_only``: when
    its footer cannot be read, which an empty or cut-short file fails)."""
    import pyarrow.parquet as pq

    if footer_only:
        with _named_errors(path, asset):
            pq.ParquetFile(path).close()
    else:
        read_table(path, None, asset=asset)


@contextmanager
def _named_errors(path: Path, asset: str | None = None) -> Iterator[None]:
    """Arrow's errors on a damaged file ("Parquet file size is 0 bytes", "Could not open Parquet input source
    '<Buffer>'") as :class:`CorruptPartitionError`, which says which file."""
    import pyarrow as pa

    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise  # not a damaged file: a partition never written, a permission to fix
    except (pa.ArrowException, OSError) as err:
        partition = unquote(Path(path).name.removesuffix(".parquet"))
        cause = " ".join(str(err).split()) or type(err).__name__
        raise CorruptPartitionError(asset or Path(path).parent.name, partition, Path(path), cause) from err


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The frame ``pd.read_parquet(path, columns=columns)`` returns."""
    return table_to_pandas(read_table(path, columns))


def join_alike(tables: list[pa.Table]) -> pa.Table | None:
    """The tables joined, when converting the join to pandas gives the frames converted one by one and
    concatenated (see :func:`joins_alike`); else None."""
    import pyarrow as pa

    if not tables or any(not joins_alike(tables[0].schema, t.schema) for t in tables):
        return None
    if all(t.schema.equals(tables[0].schema) for t in tables):
        return pa.concat_tables(tables)
    return pa.concat_tables(tables, promote_options="permissive")  # null columns joined to text ones


def joins_alike(first: pa.Schema, other: pa.Schema) -> bool:
    """Whether tables of these schemas join into a table whose pandas frame is their frames concatenated.

    They must have one schema, metadata included, with one exception: a column may be text in one and null (no
    value at all) in the other, as an annotation column is in partitions with and without quarantined rows;
    pandas makes an object column of either, and of their join. No dictionary (categorical) columns, whose
    categories pandas would not unify.
    """
    import pyarrow as pa

    if any(pa.types.is_dictionary(f.type) for f in first):
        return False
    if first is other or first.equals(other, check_metadata=True):
        return True
    if first.names != other.names:
        return False
    loose = set()
    for f, o in zip(first, other, strict=True):
        if f.equals(o, check_metadata=True):
            continue
        kinds = {_text_or_null(f.type), _text_or_null(o.type)}
        if kinds != {"text", "null"} or not (f.nullable and o.nullable) or f.metadata or o.metadata:
            return False
        loose.add(f.name)
    return _metadata_except(first, loose) == _metadata_except(other, loose)


def _text_or_null(t: pa.DataType) -> str | None:
    import pyarrow as pa

    return "text" if pa.types.is_string(t) else "null" if pa.types.is_null(t) else None


def _metadata_except(schema: pa.Schema, columns: set[str]) -> dict:
    """The schema's metadata with the pandas descriptions of ``columns`` left out."""
    metadata = dict(schema.metadata or {})
    described = json.loads(metadata.pop(b"pandas", b"{}"))
    described["columns"] = [c for c in described.get("columns", []) if c.get("name") not in columns]
    return {**metadata, b"pandas": described}


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """The frame ``pd.read_parquet`` makes of a table read from a file (``attrs`` restored)."""
    frame = table.to_pandas()
    metadata = table.schema.metadata or {}
    if _ATTRS_KEY in metadata:
        frame.attrs = json.loads(metadata[_ATTRS_KEY])
    return frame


def _read_many(paths: list[Path], columns: list[str] | None) -> pd.DataFrame:
    """The files' rows in order, as one frame: Arrow tables joined, then converted to pandas once.

    Converting each file to pandas and concatenating the frames costs about a millisecond per file in conversion
    alone, which a run over hundreds of partitions pays on every multi-partition read. Files whose columns Arrow
    cannot reconcile (a column holding integers in one file and text in another) are read the pandas way, with
    pandas' own type widening.
    """
    import pyarrow as pa

    tables = [read_table(p, columns) for p in paths]
    try:
        joined = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return joined.to_pandas()
