"""What every source shares: the ``Source`` protocol, its errors and time range, and the one place where a raw
frame becomes a source frame (timestamps UTC, required columns checked, ``drop_columns`` removed).

Every source returns frames whose timestamp column is tz-aware UTC, whatever it held: aware timestamps are converted
(the instant stays the same), naive ones are taken as UTC, strings are parsed with ``timestamp_format`` when given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mlops_assets.config import ConfigError, MlopsConfig

PACKAGE_SCHEME = "package://"
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
SCAN_ROWS = 1_000_000  # rows per batch when only scanning the source (its time range, a row count)


class SourceError(ConfigError):
    """The configured data source cannot be read; the message names the file, column or URL."""


class SourceUnavailableError(SourceError):
    """The source's database could not be connected to, or the connection broke (refused, down, unreachable):
    infrastructure, not the data's shape. Before a run it is reported like any source error; a run that meets it
    in a step failed for the database's sake (exit 1, see :func:`mlops_assets.runner.input_error`)."""


@dataclass(frozen=True)
class TimeRange:
    start: pd.Timestamp  # first timestamp (UTC)
    end: pd.Timestamp  # last timestamp (UTC), inclusive

    def union(self, other: TimeRange | None) -> TimeRange:
        """The smallest range holding both."""
        if other is None:
            return self
        return TimeRange(min(self.start, other.start), max(self.end, other.end))


@runtime_checkable
class Source(Protocol):
    """A readable dataset: files, a glob of them, bundled package data or a SQL query."""

    def batches(self, batch_rows: int | None, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """The rows in source order, in frames of at most ``batch_rows`` rows (``None``: one frame per file or
        query); only ``columns`` (plus the timestamp column) when given. Raises when the source holds no rows."""
        ...

    def time_range(self) -> TimeRange:
        """First and last timestamp, as cheaply as the source allows."""
        ...

    def peek(self, rows: int = 1000) -> pd.DataFrame:
        """The first ``rows`` rows (possibly none), handled like :meth:`batches`."""
        ...

    def columns(self) -> list[str]:
        """The names :meth:`batches` yields, without reading rows where the source allows."""
        ...

    def label_values(self, enough: Callable[[list[Any]], bool]) -> list[Any]:
        """The label column's distinct values (missing ones left out), reading that column alone and stopping as
        soon as ``enough(values found so far)`` holds (a database returns at most three)."""
        ...

    def describe(self) -> str:
        """Where the data comes from, fit for logs and metadata: no password."""
        ...

    def fingerprint(self) -> str:
        """A cheap token that changes when the source's data changes (file sizes and times, a SQL aggregate)."""
        ...


def is_database_url(source: str) -> bool:
    return "://" in source and not source.startswith((PACKAGE_SCHEME, "file://"))


def describe_config_source(cfg: MlopsConfig) -> str:
    """The configured source as written, a database URL with its password hidden; touches nothing."""
    src = cfg.dataset.source
    if is_database_url(src):
        import sqlalchemy as sa

        try:
            return sa.engine.make_url(src).render_as_string(hide_password=True)
        except sa.exc.ArgumentError as err:
            raise SourceError(f"dataset.source: not a usable database URL: {err}") from None
    return os.fspath(src)


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
        frame.insert(0, col, stamps.astype(pd.DatetimeTZDtype("ns", "UTC")))
        return frame
    if col not in frame.columns:
        raise SourceError(
            f"{origin}: timestamp column {col!r} not found (columns: {list(frame.columns)}): set "
            "dataset.timestamp_column to the column that holds each row's time"
        )
    values = frame[col]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.notna().any():
        # Numbers would parse as nanoseconds since 1970 without a word: Excel's day numbers (45292 is 2024-01-01)
        # and epoch seconds among them.
        first = values.dropna().iloc[0]
        raise SourceError(
            f"{origin}: timestamp column {col!r} holds numbers (first: {_plain_number(first)}), not dates "
            "(a spreadsheet's day numbers?): save the column as dates such as 2024-01-31 or 2024-01-31 13:45, "
            "or as text and set dataset.timestamp_format"
        )
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            ts = values
        elif ds.timestamp_format:
            ts = pd.to_datetime(values, format=ds.timestamp_format, utc=True)
        else:
            ts = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        # pandas' own message advises passing `format=` to pandas; the user's lever is the config key.
        bad = _first_unparseable(values, ds.timestamp_format)
        shown = f" (first bad value: {bad!r})" if bad is not None else ""
        if ds.timestamp_format:
            advice = (
                f"does not match dataset.timestamp_format {ds.timestamp_format!r}{shown}: correct the format "
                "(strptime codes, e.g. '%d/%m/%Y %H:%M')"
            )
        else:
            advice = (
                f"does not parse as ISO 8601 dates{shown}: set dataset.timestamp_format to the column's "
                "strptime format, e.g. '%d/%m/%Y %H:%M'"
            )
        raise SourceError(f"{origin}: timestamp column {col!r} {advice}") from None
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
            pd.to_datetime(v, format=fmt or "ISO8601", utc=True)
        except (ValueError, TypeError, OverflowError):
            return v
    return None


def _plain_number(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def stamps_range(values: Sequence[object], cfg: MlopsConfig, origin: str) -> TimeRange:
    """The range of a few raw timestamp values (statistics, an aggregate's min and max), parsed like the data."""
    col = cfg.dataset.timestamp_column
    series = pd.Series(list(values), dtype=object)
    if all(isinstance(v, pd.Timestamp | np.datetime64) or hasattr(v, "year") for v in values):
        # datetime, date or Timestamp values: typed by the source, no format applies.
        series = pd.Series(pd.to_datetime(pd.Index(list(values)), utc=False))
    ts = normalize_timestamps(pd.DataFrame({col: series}), cfg, origin)[col]
    return TimeRange(ts.min(), ts.max())


class BaseSource:
    """The frame handling every source shares; subclasses say how raw frames are read."""

    def __init__(self, cfg: MlopsConfig):
        self.cfg = cfg

    # What subclasses provide -------------------------------------------------------------------------------
    def _raw_batches(
        self, batch_rows: int | None, columns: list[str] | None
    ) -> Iterator[tuple[str, pd.DataFrame]]:
        """(origin, raw frame) in source order; ``columns`` are the stored columns to read (None: all)."""
        raise NotImplementedError

    def _raw_head(self, rows: int) -> tuple[str, pd.DataFrame]:
        raise NotImplementedError

    def _row_count(self) -> int:
        raise NotImplementedError

    def _stored_time_range(self) -> TimeRange:
        """The range of a stored timestamp column (not derived from row order)."""
        raise NotImplementedError

    # Shared ------------------------------------------------------------------------------------------------
    def describe(self) -> str:
        return describe_config_source(self.cfg)

    def batches(self, batch_rows: int | None, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        wanted = None if columns is None else self._wanted(columns)
        rows = 0
        for origin, frame in self._raw_batches(batch_rows, self._stored(wanted)):
            if frame.empty and rows:
                continue
            frame = self._finish(frame, origin, rows, wanted)
            if frame.empty:
                continue
            rows += len(frame)
            yield frame
        if rows == 0:
            raise SourceError(f"dataset.source {self.describe()!r}: the source holds no rows")

    def peek(self, rows: int = 1000) -> pd.DataFrame:
        origin, frame = self._raw_head(rows)
        return self._finish(frame, origin, 0, None)

    def time_range(self) -> TimeRange:
        ds = self.cfg.dataset
        if ds.timestamp_from_row_order is None:
            return self._stored_time_range()
        n = self._row_count()
        if n == 0:
            raise SourceError(f"dataset.source {self.describe()!r}: the source holds no rows")
        start = pd.Timestamp(ds.timestamp_from_row_order.start, tz="UTC")
        return TimeRange(start, start + pd.Timedelta(ds.timestamp_from_row_order.step) * (n - 1))

    def label_values(self, enough: Callable[[list[Any]], bool]) -> list[Any]:
        label = self.cfg.dataset.label_column
        found: list[Any] = []
        for _, frame in self._raw_batches(SCAN_ROWS, [label]):
            for value in frame[label].dropna().unique():
                plain = _plain_number(value)
                if plain not in found:
                    found.append(plain)
            if enough(found):
                break
        return found

    def _scan_time_range(self) -> TimeRange:
        """The range by streaming the timestamp column alone: bounded memory, whatever the source's size."""
        rng = None
        for frame in self.batches(SCAN_ROWS, [self.cfg.dataset.timestamp_column]):
            ts = frame[self.cfg.dataset.timestamp_column]
            rng = TimeRange(ts.min(), ts.max()).union(rng)
        assert rng is not None  # batches raises on an empty source
        return rng

    def _wanted(self, columns: Sequence[str]) -> list[str]:
        ts = self.cfg.dataset.timestamp_column
        return list(dict.fromkeys([ts, *columns]))

    def _stored(self, wanted: list[str] | None) -> list[str] | None:
        """The columns to read for ``wanted``: a derived timestamp is not stored."""
        if wanted is None:
            return None
        if self.cfg.dataset.timestamp_from_row_order is not None:
            wanted = [c for c in wanted if c != self.cfg.dataset.timestamp_column]
        return wanted or None

    def _finish(
        self, frame: pd.DataFrame, origin: str, row_offset: int, wanted: list[str] | None
    ) -> pd.DataFrame:
        ds = self.cfg.dataset
        frame = normalize_timestamps(frame, self.cfg, origin, row_offset=row_offset)
        required = [ds.label_column, *ds.entity_columns] if wanted is None else wanted
        for col in required:
            if col in frame.columns:
                continue
            if col == ds.label_column:
                raise SourceError(
                    f"{origin}: label column {col!r} not found (columns: {list(frame.columns)}): set "
                    "dataset.label_column to the column that holds the outcome"
                )
            if col in ds.entity_columns:
                raise SourceError(
                    f"{origin}: entity column {col!r} not found (columns: {list(frame.columns)}): correct "
                    "dataset.entity_columns"
                )
            raise SourceError(f"{origin}: column {col!r} not found (columns: {list(frame.columns)})")
        if wanted is not None:
            frame = frame[wanted]
        return frame.drop(columns=[c for c in ds.drop_columns if c in frame.columns])

    def _output_columns(self, stored: list[str]) -> list[str]:
        """What :meth:`batches` yields for these stored column names."""
        ds = self.cfg.dataset
        names = list(stored)
        if ds.timestamp_from_row_order is not None:
            names.insert(0, ds.timestamp_column)
        return [c for c in names if c not in ds.drop_columns]
