"""The service's in-memory copy of the online store's events (SQLite): every batch sees what a SQL read of the
store would return at that moment, bit for bit, across materializations, corrections and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_assets.features.stores import online_store
from mlops_assets.serving.features import FeatureCompletionError, OnlineFeatures
from mlops_assets_tests.test_serving_support import storage_for, trained


def _both(cfg, storage):
    """The cached adapter and one that reads the store per call."""
    cached = OnlineFeatures(cfg, storage)
    uncached = OnlineFeatures(cfg, storage)
    uncached.cache = None
    assert cached.cache is not None
    return cached, uncached


def _same(cached, uncached, times):
    a = cached.window_values(times, None, "rows[].date")
    b = uncached.window_values(times, None, "rows[].date")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    return a


def test_cached_events_follow_materializations_and_corrections(tmp_path):
    t = trained()
    cfg, raw = t.cfg, t.raw
    storage = storage_for(tmp_path / "home")
    store = online_store(cfg, storage)
    cached, uncached = _both(cfg, storage)

    # Not materialized yet: the store's refusal, as a 503.
    with pytest.raises(FeatureCompletionError) as err:
        cached.window_values([raw["date"].iloc[-1].to_pydatetime()], None, "rows[].date")
    assert err.value.status == 503

    end = raw["date"].max()
    first = raw[(raw["date"] >= end - pd.Timedelta("430D")) & (raw["date"] < end - pd.Timedelta("50D"))]
    store.materialize(cfg, first)
    times = [d.to_pydatetime() for d in raw["date"].tail(80)]
    before = _same(cached, uncached, times)

    # New events: the next batch sees them.
    store.materialize(cfg, raw[raw["date"] >= end - pd.Timedelta("50D")])
    after = _same(cached, uncached, times)
    assert not np.array_equal(before["rain_mean_30D"], after["rain_mean_30D"], equal_nan=True)

    # A corrected partition (same range, same meta, other values): seen too.
    part = raw[raw["date"] >= end - pd.Timedelta("20D")].copy()
    part["rain"] = 1 - part["rain"]
    store.materialize(cfg, part)
    corrected = _same(cached, uncached, times)
    assert not np.array_equal(after["rain_mean_7D"], corrected["rain_mean_7D"], equal_nan=True)

    # Rows older than the retention: the store's 422 naming the field.
    with pytest.raises(FeatureCompletionError) as err:
        cached.window_values([raw["date"].iloc[100].to_pydatetime()], None, "rows[].date")
    assert err.value.status == 422 and err.value.field == "rows[].date"
    cached.close()
