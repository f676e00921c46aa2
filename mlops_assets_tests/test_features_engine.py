"""The point-in-time engine against a brute-force reference, and the leakage / TTL guarantees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import ConfigError, parse_config
from mlops_assets.features import (
    FeatureInputError,
    compute_features,
    feature_registry,
    features_code_version,
    lookback,
    model_feature_columns,
)

ALL = ["last", "mean", "sum", "count", "std", "trend", "time_since", "rate"]


def make_cfg(definitions, entity_columns=("store",), **features):
    return parse_config(
        {
            "dataset": {
                "source": "unused.csv",
                "timestamp_column": "ts",
                "entity_columns": list(entity_columns),
                "label_column": "label",
                "positive_label": "yes",
            },
            "features": {"definitions": definitions, **features},
        }
    )


def random_events(n=400, entities=5, seed=0):
    rng = np.random.default_rng(seed)
    # Irregular times on a coarse grid, so that ties (same entity, same instant) happen.
    ts = pd.Timestamp("2021-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 60 * 8, n) * 3, unit="h")
    frame = pd.DataFrame(
        {
            "ts": ts,
            "store": rng.integers(0, entities, n),
            "x": rng.normal(size=n),
            "y": rng.normal(10, 3, size=n),
            "label": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def reference(cfg, known: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """Brute force: for each query, filter the known events by entity and [t - window, t), then aggregate."""
    ds = cfg.dataset
    defs = feature_registry(cfg)
    day = pd.Timedelta("1D").value
    kt = known[ds.timestamp_column].dt.as_unit("ns").astype("int64").to_numpy()
    qt = queries[ds.timestamp_column].dt.as_unit("ns").astype("int64").to_numpy()
    src = {}
    for d in defs:
        v = known[d.source]
        if d.source == ds.label_column:
            v = (v == ds.positive_label).astype(float).where(v.notna())
        src[d.source] = v.to_numpy(float)
    rows = []
    for i in range(len(queries)):
        t = qt[i]
        same = np.ones(len(known), bool)
        for e in ds.entity_columns:
            same &= known[e].to_numpy() == queries[e].iloc[i]
        row = {}
        for d in defs:
            w, ttl = d.window_td.value, d.ttl_td.value
            m = same & (kt >= t - w) & (kt < t)
            v, times = src[d.source][m], kt[m]
            ok = ~np.isnan(v)
            v, times = v[ok], times[ok]
            days = (times - t) / day
            fresh = len(v) > 0 and times.max() >= t - ttl
            tr = d.transformation
            if tr == "count":
                val = float(len(v))
            elif tr == "rate":
                val = len(v) / (w / day)
            elif tr == "time_since":
                nz = v != 0
                val = -days[nz].max() if nz.any() and times[nz].max() >= t - ttl else np.nan
            elif not fresh:
                val = np.nan
            elif tr == "last":
                # Ties at the newest instant count as one observation: the largest value.
                val = v[days == days.max()].max()
            elif tr == "mean":
                val = v.mean()
            elif tr == "sum":
                val = v.sum()
            elif tr == "std":
                val = v.std(ddof=1) if len(v) > 1 else np.nan
            else:  # trend
                val = np.polyfit(days, v, 1)[0] if len(set(days)) > 1 else np.nan
            row[d.name] = val
        rows.append(row)
    return pd.DataFrame(rows, index=queries.index, columns=[d.name for d in defs])


DEFS = [
    {"source": ["x", "y", "label"], "transformation": t, "window": ["1D", "5D"]}
    for t in ALL
    if t not in ("time_since",)
] + [{"source": ["label", "x"], "transformation": "time_since", "window": "5D", "ttl": "2D"}]


def test_matches_brute_force_per_entity_with_ties_and_missing_values():
    cfg = make_cfg(DEFS)
    events = random_events()
    got = compute_features(cfg, events, None)
    want = reference(cfg, events, events)
    names = [d.name for d in feature_registry(cfg)]
    pd.testing.assert_frame_equal(got[names], want[names], check_exact=False, rtol=1e-9, atol=1e-9)
    # Sanity of the fixture: it has ties and several events per window, so the comparison means something.
    assert events.duplicated(["ts", "store"]).any()
    assert got["x_count_5D"].max() >= 5


def test_whole_stream_windows_without_entities():
    cfg = make_cfg(DEFS, entity_columns=())
    events = random_events(n=200).drop(columns="store")
    got = compute_features(cfg, events, None)
    want = reference(cfg, events, events)
    names = [d.name for d in feature_registry(cfg)]
    pd.testing.assert_frame_equal(got[names], want[names], check_exact=False, rtol=1e-9, atol=1e-9)


def test_partition_with_history_equals_whole_computation():
    cfg = make_cfg(DEFS)
    events = random_events(n=600, seed=3)
    whole = compute_features(cfg, events, None)
    cut = events["ts"].iloc[300]
    part = events[events["ts"] >= cut]
    hist = events[(events["ts"] < cut) & (events["ts"] >= cut - lookback(cfg))]
    got = compute_features(cfg, part, hist)
    pd.testing.assert_frame_equal(got, whole.loc[part.index])


def test_no_leakage_from_the_future_the_row_itself_or_ties():
    cfg = make_cfg(DEFS)
    events = random_events(n=300, seed=1)
    before = compute_features(cfg, events, None)
    k = 150
    t_k = events.loc[k, "ts"]
    changed = events.copy()
    # Rewrite the event at t_k (its label too), every event tied with it and everything later.
    later = changed["ts"] >= t_k
    changed.loc[later, "x"] = 1e6
    changed.loc[later, "y"] = -1e6
    changed.loc[later, "label"] = np.where(changed.loc[later, "label"] == "yes", "no", "yes")
    after = compute_features(cfg, changed, None)
    names = [d.name for d in feature_registry(cfg)]
    pd.testing.assert_frame_equal(after.loc[~later, names], before.loc[~later, names])
    at_t = changed["ts"] == t_k
    pd.testing.assert_frame_equal(after.loc[at_t, names], before.loc[at_t, names])
    # The changed rows do move the features of events after them: the check above can fail.
    assert not after.loc[changed["ts"] > t_k, names].equals(before.loc[changed["ts"] > t_k, names])


def test_yesterdays_label_is_a_feature_todays_never():
    cfg = make_cfg([{"source": "label", "transformation": "last", "window": "1D"}], entity_columns=())
    days = pd.date_range("2020-01-01", periods=6, freq="D", tz="UTC")
    ev = pd.DataFrame({"ts": days, "label": ["yes", "no", "no", "yes", "yes", "no"]})
    got = compute_features(cfg, ev, None)
    assert got["label_last_1D"].tolist()[1:] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert np.isnan(got["label_last_1D"].iloc[0])
    assert got["label"].tolist() == ev["label"].tolist()


def test_ttl_expiry_gives_missing_never_stale():
    cfg = make_cfg(
        [
            {"source": "x", "transformation": "last", "window": "7D", "ttl": "2D"},
            {"source": "x", "transformation": "mean", "window": "7D", "ttl": "2D"},
            {"source": "x", "transformation": "last", "window": "1D", "name": "x_yesterday"},
        ],
        entity_columns=(),
    )
    ts = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-05", "2020-01-06"], utc=True)
    ev = pd.DataFrame({"ts": ts, "x": [1.0, 3.0, 5.0, 7.0], "label": "no"})
    got = compute_features(cfg, ev, None)
    # Jan 5: the newest value is from Jan 2, three days old > ttl 2D -> missing, though inside the 7D window.
    assert got["x_last_7D"].tolist()[1:] == [1.0, None, 5.0] or (
        got["x_last_7D"].iloc[1] == 1.0
        and np.isnan(got["x_last_7D"].iloc[2])
        and got["x_last_7D"].iloc[3] == 5.0
    )
    assert np.isnan(got["x_mean_7D"].iloc[2])
    assert got["x_mean_7D"].iloc[3] == pytest.approx((1 + 3 + 5) / 3)
    # Exactly one window back is inside: [t - 1D, t).
    assert got["x_yesterday"].iloc[1] == 1.0 and np.isnan(got["x_yesterday"].iloc[2])


def test_output_layout_order_and_index():
    cfg = make_cfg([{"source": "y", "transformation": "mean", "window": "2D"}])
    ev = random_events(n=50).sample(frac=1, random_state=0)  # shuffled, index not a range
    got = compute_features(cfg, ev, None)
    assert got.index.equals(ev.index)
    assert got.columns.tolist() == ["ts", "store", "x", "y", "y_mean_2D", "label"]
    assert model_feature_columns(cfg, got.columns) == ["x", "y", "y_mean_2D"]
    empty = compute_features(cfg, ev.iloc[:0], ev)  # a partition left empty (e.g. all rows quarantined)
    assert empty.columns.equals(got.columns) and len(empty) == 0


def test_bad_input_is_named():
    cfg = make_cfg([{"source": "label", "transformation": "last", "window": "1D"}])
    ev = random_events(n=5)
    with pytest.raises(FeatureInputError, match="'ts'.*tz-aware"):
        compute_features(cfg, ev.assign(ts=ev["ts"].dt.tz_localize(None)), None)
    cfg2 = make_cfg([{"source": "name", "transformation": "mean", "window": "1D"}])
    with pytest.raises(FeatureInputError, match="'name'.*numbers"):
        compute_features(cfg2, ev.assign(name="a"), None)
    with pytest.raises(FeatureInputError, match="'store'"):
        compute_features(cfg, ev.drop(columns="store"), None)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="features.definitions.0.windw"):
        make_cfg([{"source": "x", "transformation": "last", "windw": "1D"}])
    with pytest.raises(ConfigError, match="ttl"):
        make_cfg([{"source": "x", "transformation": "last", "window": "1D", "ttl": "2D"}])
    with pytest.raises(ConfigError, match="not a fixed duration"):
        make_cfg([{"source": "x", "transformation": "mean", "window": "1M"}])
    with pytest.raises(ConfigError, match="features.definitions.0.transformation"):
        make_cfg([{"source": "x", "transformation": "median", "window": "1D"}])


def test_code_version_is_stable_and_tracks_definitions():
    a = make_cfg([{"source": "x", "transformation": "mean", "window": "7D"}])
    same = make_cfg([{"source": "x", "transformation": "mean", "window": "168h", "name": "x_mean_7D"}])
    other = make_cfg([{"source": "x", "transformation": "mean", "window": "6D"}])
    assert features_code_version(a) == features_code_version(same)
    assert features_code_version(a) != features_code_version(other)
    reg = feature_registry(a)
    assert reg[0].boundary == "[t - 7D, t)" and reg[0].entity == ("store",)
    assert lookback(a) == pd.Timedelta("7D")


def test_bundled_rainfall_defaults():
    from mlops_assets.config import load_config
    from mlops_assets.data.sources import read_source

    cfg = load_config()
    data = read_source(cfg)
    feats = compute_features(cfg, data, None)
    assert len(feats) == len(data) == 18_159
    rain = data["rain"].to_numpy(float)
    # Consecutive days: yesterday's rain is the previous row's label, the day's own label never.
    np.testing.assert_array_equal(feats["rain_last_1D"].to_numpy()[1:], rain[:-1])
    np.testing.assert_allclose(
        feats["rain_mean_7D"].to_numpy()[7:], pd.Series(rain).rolling(7).mean().shift().to_numpy()[7:]
    )
    cols = model_feature_columns(cfg, feats.columns)
    assert cols[:8] == [c for c in data.columns if c not in ("date", "rain")]
    assert "rain" not in cols and "date" not in cols and len(cols) == 8 + len(feature_registry(cfg))
