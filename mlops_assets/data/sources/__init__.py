"""Reading the configured source: CSV/Parquet files or globs, SQL queries, and bundled package data.

:func:`open_source` picks the :class:`Source` for a configuration (:mod:`.files` or :mod:`.sql`); the functions
below are the same operations for callers holding only the configuration. Every frame's timestamp column is tz-aware
UTC (see :func:`normalize_timestamps`); errors are :class:`SourceError` naming the file, the column or the URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.sources.base import (
    PACKAGE_SCHEME,
    SCAN_ROWS,
    TIMESTAMP_DTYPE,
    Source,
    SourceError,
    SourceUnavailableError,
    TimeRange,
    describe_config_source,
    is_database_url,
    normalize_timestamps,
)
from mlops_assets.data.sources.files import FORMATS, FileSource, resolve_files
from mlops_assets.data.sources.sql import SqlSource

__all__ = [
    "FORMATS",
    "PACKAGE_SCHEME",
    "SCAN_ROWS",
    "TIMESTAMP_DTYPE",
    "FileSource",
    "Source",
    "SourceError",
    "SourceUnavailableError",
    "SqlSource",
    "TimeRange",
    "describe_source",
    "iter_source",
    "normalize_timestamps",
    "open_source",
    "peek_source",
    "read_source",
    "resolve_files",
    "source_time_range",
]


def open_source(cfg: MlopsConfig) -> Source:
    """The source the configuration names. Files are resolved now (a missing file or an unsupported type is an
    error here); a database is not contacted until something is read."""
    if is_database_url(cfg.resolve_source()):
        return SqlSource(cfg)
    return FileSource(cfg, resolve_files(cfg))


def iter_source(cfg: MlopsConfig, batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The source in source order, in frames of at most ``batch_rows`` rows (one frame per file or query when
    ``None``): the timestamp column UTC, the label and entity columns checked, ``drop_columns`` removed.

    Files are read batch by batch (Parquet row groups, CSV chunks) and queries through a server-side cursor, so a
    source of any size streams through bounded memory.
    """
    return open_source(cfg).batches(batch_rows)


def read_source(cfg: MlopsConfig) -> pd.DataFrame:
    """The whole source as one frame, sorted by time (see :func:`iter_source`)."""
    parts = list(iter_source(cfg))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame.sort_values(cfg.dataset.timestamp_column, kind="stable").reset_index(drop=True)


def source_time_range(cfg: MlopsConfig) -> TimeRange:
    """First and last timestamp of the source, read as cheaply as the source allows (see ``Source.time_range``)."""
    return open_source(cfg).time_range()


def peek_source(cfg: MlopsConfig, rows: int = 1000) -> pd.DataFrame:
    """The first rows of the source, with the same column handling as :func:`read_source`."""
    return open_source(cfg).peek(rows)


def describe_source(cfg: MlopsConfig) -> str:
    """The source for logs and metadata (a database URL's password hidden); reads nothing."""
    return describe_config_source(cfg)
