"""Reading the configured source: CSV/Parquet files or globs, SQL queries, and bundled package data.

Every reader returns a frame whose timestamp column is tz-aware UTC, whatever the source held: aware timestamps are
converted (the instant stays the same), naive ones are taken as UTC, strings are parsed with ``timestamp_format``
when given. Errors name the file, the column or the URL.
"""

from __future__ import annotations

import glob
import importlib.resources
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_assets.config import ConfigError, MlopsConfig

PACKAGE_SCHEME = "package://"
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
SCAN_ROWS = 1_000_000  # rows per batch when only scanning the source (its time range)


class SourceError(ConfigError):
    """The configured data source cannot be read; the message names the file, column or URL."""


@dataclass(frozen=True)
class TimeRange:
    start: pd.Timestamp  # first timestamp (UTC)
    end: pd.Timestamp  # last timestamp (UTC), inclusive


def _is_database_url(source: str) -> bool:
    return "://" in source and not source.startswith((PACKAGE_SCHEME, "file://"))


def resolve_files(cfg: MlopsConfig) -> list[Path]:
    """The files a file source names (a path, a glob, or ``package://pkg/path``), in sorted order."""
    src = cfg.resolve_source()
    if src.startswith(PACKAGE_SCHEME):
        package, _, rel = src[len(PACKAGE_SCHEME) :].partition("/")
        try:
            path = Path(str(importlib.resources.files(package) / rel))
        except ModuleNotFoundError:
            raise SourceError(f"dataset.source {src!r}: package {package!r} is not installed") from None
        if not path.is_file():
            raise SourceError(f"dataset.source {src!r}: no file {rel!r} in package {package!r}")
        return [path]
    if src.startswith("file://"):
        src = src[len("file://") :]
    if glob.has_magic(src):
        files = sorted(Path(p) for p in glob.glob(src))
        if not files:
            raise SourceError(f"dataset.source {src!r}: the glob matches no file")
        return files
    path = Path(src)
    if not path.exists():
        raise SourceError(f"dataset.source {src!r}: file not found")
    if path.is_dir():
        raise SourceError(
            f"dataset.source {src!r}: is a directory; give a file or a glob such as {src}/*.parquet"
        )
    return [path]


def _read_file(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, columns=columns)
        if suffix in (".csv", ".csv.gz", ".txt"):
            frame = pd.read_csv(path, usecols=columns)
            # A leading unnamed column is a writer's row index, not data.
            if columns is None and len(frame.columns) and str(frame.columns[0]).startswith("Unnamed: 0"):
                frame = frame.drop(columns=frame.columns[0])
            return frame
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read: {err}") from None
    raise SourceError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")


def _read_sql(cfg: MlopsConfig, batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The query's rows, all at once or in batches of ``batch_rows`` fetched from a server-side cursor."""
    import sqlalchemy as sa

    url = cfg.dataset.source
    if not cfg.dataset.query:
        raise SourceError("dataset.query is required when dataset.source is a database URL")
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ModuleNotFoundError) as err:
        raise SourceError(f"dataset.source: not a usable database URL: {err}") from None
    try:
        with engine.connect() as conn:
            # Read-only: the pipeline never writes to a source database.
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            # Through a server-side cursor (stream_results), which takes exactly one SELECT/VALUES statement:
            # "COMMIT; DELETE ..." cannot end the read-only transaction and write.
            conn.execution_options(stream_results=True)
            if batch_rows is None:
                yield pd.read_sql_query(sa.text(cfg.dataset.query), conn)
            else:
                yield from pd.read_sql_query(sa.text(cfg.dataset.query), conn, chunksize=batch_rows)
    except sa.exc.SQLAlchemyError as err:
        raise SourceError(
            f"dataset.query failed on {engine.url.render_as_string(hide_password=True)}: {err}"
        ) from None
    finally:
        engine.dispose()


def _read_file_batches(
    path: Path, batch_rows: int | None, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """A file whole (``batch_rows`` None) or in batches: slices of Parquet row groups, CSV chunks; only
    ``columns`` when given."""
    if batch_rows is None:
        yield _read_file(path, columns)
        return
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            # Row group by row group: ParquetFile.iter_batches keeps what it has decoded until the file is done
            # (measured: 700 MB held after 10M rows), one row group at a time is released as it goes.
            pf = pq.ParquetFile(path)
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group, columns=columns)
                for start in range(0, table.num_rows, batch_rows):
                    # The table's schema carries the pandas metadata (index columns, categoricals), as
                    # read_parquet would apply it; the index itself is not data.
                    yield table.slice(start, batch_rows).to_pandas().reset_index(drop=True)
                del table
            return
        if suffix not in (".csv", ".gz", ".txt"):
            yield _read_file(path)  # names the unsupported type
            return
        with pd.read_csv(path, usecols=columns, chunksize=batch_rows) as reader:
            for frame in reader:
                if len(frame.columns) and str(frame.columns[0]).startswith("Unnamed: 0"):
                    frame = frame.drop(columns=frame.columns[0])
                yield frame.reset_index(drop=True)
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read: {err}") from None


def normalize_timestamps(
    frame: pd.DataFrame, cfg: MlopsConfig, origin: str, *, row_offset: int = 0
) -> pd.DataFrame:
    """Make the timestamp column tz-aware UTC (or derive it from row order when configured; ``row_offset`` is
    the position of the frame's first row in the source)."""
    ds = cfg.dataset
    col = ds.timestamp_column
    if ds.timestamp_from_row_order is not None:
        if col in frame.columns:
            raise SourceError(
                f"{origin}: column {col!r} exists but dataset.timestamp_from_row_order would replace it"
            )
        start = pd.Timestamp(ds.timestamp_from_row_order.start, tz="UTC")
        step = pd.Timedelta(ds.timestamp_from_row_order.step)
        frame = frame.copy()
        stamps = pd.Series(start + step * np.arange(row_offset, row_offset + len(frame)), index=frame.index)
        frame.insert(0, col, stamps.astype(TIMESTAMP_DTYPE))
        return frame
    if col not in frame.columns:
        raise SourceError(f"{origin}: timestamp column {col!r} not found (columns: {list(frame.columns)})")
    values = frame[col]
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            ts = values
        elif ds.timestamp_format:
            ts = pd.to_datetime(values, format=ds.timestamp_format, utc=True)
        else:
            ts = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        bad = _first_unparseable(values, ds.timestamp_format)
        raise SourceError(
            f"{origin}: timestamp column {col!r} does not parse"
            + (f" (first bad value: {bad!r})" if bad is not None else "")
            + f": {err}"
        ) from None
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    if ts.isna().any():
        n = int(ts.isna().sum())
        raise SourceError(f"{origin}: timestamp column {col!r} has {n} missing value(s)")
    frame = frame.copy()
    frame[col] = ts.astype(TIMESTAMP_DTYPE)
    return frame


def _first_unparseable(values: pd.Series, fmt: str | None) -> object:
    for v in values.dropna().head(10_000):
        try:
            pd.to_datetime(v, format=fmt, utc=True) if fmt else pd.Timestamp(v)
        except (ValueError, TypeError):
            return v
    return None


def iter_source(cfg: MlopsConfig, batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The source in source order, in frames of at most ``batch_rows`` rows (one frame when ``None``): the
    timestamp column UTC, the label and entity columns checked, ``drop_columns`` removed.

    Files are read batch by batch (Parquet record batches, CSV chunks) and queries through a server-side cursor,
    so a source of any size streams through bounded memory.
    """
    src = cfg.resolve_source()
    if _is_database_url(src):
        pieces: Iterator[tuple[str, pd.DataFrame]] = (
            ("dataset.query", f) for f in _read_sql(cfg, batch_rows)
        )
    else:
        files = resolve_files(cfg)
        pieces = ((str(path), f) for path in files for f in _read_file_batches(path, batch_rows))
    rows = 0
    for origin, frame in pieces:
        if frame.empty and rows:
            continue
        frame = normalize_timestamps(frame, cfg, origin, row_offset=rows)
        if cfg.dataset.label_column not in frame.columns:
            raise SourceError(
                f"{origin}: label column {cfg.dataset.label_column!r} not found (columns: {list(frame.columns)})"
            )
        for col in cfg.dataset.entity_columns:
            if col not in frame.columns:
                raise SourceError(f"{origin}: entity column {col!r} not found")
        if frame.empty:
            continue
        rows += len(frame)
        yield frame.drop(columns=[c for c in cfg.dataset.drop_columns if c in frame.columns])
    if rows == 0:
        raise SourceError(f"dataset.source {describe_source(cfg)!r}: the source holds no rows")


def read_source(cfg: MlopsConfig) -> pd.DataFrame:
    """The whole source as one frame, sorted by time (see :func:`iter_source`)."""
    parts = list(iter_source(cfg))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame.sort_values(cfg.dataset.timestamp_column, kind="stable").reset_index(drop=True)


def source_time_range(cfg: MlopsConfig) -> TimeRange:
    """First and last timestamp of the source, read as cheaply as the source allows."""
    ds = cfg.dataset
    src = cfg.resolve_source()
    if ds.timestamp_from_row_order is not None and not _is_database_url(src):
        n = 0
        for path in resolve_files(cfg):
            if path.suffix.lower() in (".parquet", ".pq"):
                import pyarrow.parquet as pq

                n += pq.ParquetFile(path).metadata.num_rows
            else:
                with open(path, "rb") as fh:
                    n += max(sum(1 for _ in fh) - 1, 0)
        if n == 0:
            raise SourceError(f"dataset.source {ds.source!r}: the source holds no rows")
        start = pd.Timestamp(ds.timestamp_from_row_order.start, tz="UTC")
        return TimeRange(start, start + pd.Timedelta(ds.timestamp_from_row_order.step) * (n - 1))
    # Streamed, the timestamp column alone where the format allows: the range of a source of any size in bounded
    # memory.
    first = last = None
    if _is_database_url(src):
        stamps = (f[ds.timestamp_column] for f in iter_source(cfg, SCAN_ROWS))
    else:
        stamps = (
            normalize_timestamps(part, cfg, str(path))[ds.timestamp_column]
            for path in resolve_files(cfg)
            for part in _timestamp_batches(path, ds.timestamp_column)
        )
    for ts in stamps:
        if ts.empty:
            continue
        lo, hi = ts.min(), ts.max()
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    if first is None:
        raise SourceError(f"dataset.source {ds.source!r}: the source holds no rows")
    return TimeRange(first, last)


def _timestamp_batches(path: Path, column: str) -> Iterator[pd.DataFrame]:
    if not _has_column(path, column):
        raise SourceError(f"{path}: timestamp column {column!r} not found")
    yield from _read_file_batches(path, SCAN_ROWS, columns=[column])


def peek_source(cfg: MlopsConfig, rows: int = 1000) -> pd.DataFrame:
    """The first rows of the source (cheap for files), with the same column handling as :func:`read_source`."""
    src = cfg.resolve_source()
    if _is_database_url(src):
        return read_source(cfg).head(rows)
    path = resolve_files(cfg)[0]
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows), None)
        frame = batch.to_pandas() if batch is not None else pd.DataFrame()
    else:
        frame = pd.read_csv(path, nrows=rows)
        if len(frame.columns) and str(frame.columns[0]).startswith("Unnamed: 0"):
            frame = frame.drop(columns=frame.columns[0])
    frame = normalize_timestamps(frame, cfg, str(path))
    return frame.drop(columns=[c for c in cfg.dataset.drop_columns if c in frame.columns])


def _has_column(path: Path, column: str) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return column in pq.ParquetFile(path).schema_arrow.names
    header = pd.read_csv(path, nrows=0)
    return column in header.columns


def describe_source(cfg: MlopsConfig) -> str:
    src = cfg.dataset.source
    if _is_database_url(src):
        import sqlalchemy as sa

        return sa.engine.make_url(src).render_as_string(hide_password=True)
    return os.fspath(src)
