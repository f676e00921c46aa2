"""Time partitions over the data's own range, without Dagster.

A partition key is the start of its period in UTC, formatted per frequency: ``2020-01-05`` (day, week starting
Monday), ``2020-01`` (month), ``2020`` (year). The Dagster partitions definition is built from the same table, so
the keys computed here for rows and those Dagster shows are one and the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Frequency:
    name: str
    period: str  # pandas period alias
    fmt: str  # strftime of the partition key
    cron: str  # Dagster cron schedule whose ticks are the partition starts


FREQUENCIES = {
    "day": Frequency("day", "D", "%Y-%m-%d", "0 0 * * *"),
    "week": Frequency("week", "W-SUN", "%Y-%m-%d", "0 0 * * 1"),
    "month": Frequency("month", "M", "%Y-%m", "0 0 1 * *"),
    "year": Frequency("year", "Y", "%Y", "0 0 1 1 *"),
}


def frequency(name: str) -> Frequency:
    try:
        return FREQUENCIES[name]
    except KeyError:
        raise ValueError(
            f"partitions.freq: unknown frequency {name!r} (use one of {sorted(FREQUENCIES)})"
        ) from None


def period_start(ts: pd.Timestamp, freq: str) -> pd.Timestamp:
    """Start (UTC) of the period holding ``ts``."""
    f = frequency(freq)
    naive = pd.Timestamp(ts).tz_convert("UTC").tz_localize(None)
    return naive.to_period(f.period).start_time.tz_localize("UTC")


def period_end(start: pd.Timestamp, freq: str) -> pd.Timestamp:
    """Exclusive end of the period starting at ``start``."""
    f = frequency(freq)
    naive = pd.Timestamp(start).tz_convert("UTC").tz_localize(None)
    return (naive.to_period(f.period) + 1).start_time.tz_localize("UTC")


def key_for(ts: pd.Timestamp, freq: str) -> str:
    return period_start(ts, freq).strftime(frequency(freq).fmt)


def key_window(key: str, freq: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of a partition key, UTC."""
    f = frequency(freq)
    try:
        start = pd.Timestamp(pd.to_datetime(key, format=f.fmt), tz="UTC")
    except ValueError:
        raise ValueError(f"partition key {key!r} does not match the {freq} format {f.fmt!r}") from None
    if period_start(start, freq) != start:
        raise ValueError(f"partition key {key!r} is not the start of a {freq}")
    return start, period_end(start, freq)


def keys_between(first: pd.Timestamp, last: pd.Timestamp, freq: str) -> list[str]:
    """Every partition key from the period holding ``first`` to the one holding ``last``, inclusive."""
    f = frequency(freq)
    a = pd.Timestamp(first).tz_convert("UTC").tz_localize(None).to_period(f.period)
    b = pd.Timestamp(last).tz_convert("UTC").tz_localize(None).to_period(f.period)
    return [p.start_time.strftime(f.fmt) for p in pd.period_range(a, b, freq=f.period)]


def row_keys(timestamps: pd.Series, freq: str) -> pd.Series:
    """Partition key of every row (vectorized: one strftime per distinct period, not per row)."""
    f = frequency(freq)
    naive = timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    periods = naive.dt.to_period(f.period)
    codes, uniques = pd.factorize(periods, sort=True)
    labels = np.array([p.start_time.strftime(f.fmt) for p in uniques], dtype=object)
    return pd.Series(labels[codes], index=timestamps.index, name="partition")


def split_by_partition(frame: pd.DataFrame, timestamp_column: str, freq: str) -> dict[str, pd.DataFrame]:
    """Rows grouped by partition key, in key order, each with a fresh index."""
    if frame.empty:
        return {}
    keys = row_keys(frame[timestamp_column], freq)
    return {k: part.reset_index(drop=True) for k, part in frame.groupby(keys, sort=True)}
