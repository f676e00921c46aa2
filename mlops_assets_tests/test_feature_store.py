"""Offline and online stores and the public API on a small real multi-entity dataset, on SQLite and PostgreSQL.

The dataset: monthly closing prices of ten tickers (IBM, AAPL, MSFT, ... S&P 500, NASDAQ), 1990-2022, from
Yahoo Finance as shipped by matplotlib (``mpl-data/sample_data/Stocks.csv``, installed with the project's
dependencies). Long format: one row per (ticker, date) with a price; tickers enter and leave at different
times (AMZN from 1997, GOOGL from 2004, DELL briefly), so entity windows, late starts and TTLs all matter.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from mlops_assets.config import load_config
from mlops_assets.feature_store import get_historical_features, get_online_features, list_features
from mlops_assets.features import (
    FeatureInputError,
    OfflineStore,
    OnlineStoreError,
    complete_features,
    compute_features,
    feature_registry,
    features_code_version,
    lookback,
    offline_store,
    online_store,
)
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.test_features_engine import reference

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "mlops_features_test"

DEFINITIONS = [
    {"source": "close", "transformation": "last", "window": "40D", "description": "last month's close"},
    {"source": "close", "transformation": "mean", "window": ["100D", "200D"]},
    {"source": "close", "transformation": "std", "window": "200D"},
    {"source": "close", "transformation": "trend", "window": "100D", "ttl": "40D"},
    {"source": "up", "transformation": "mean", "window": "200D"},
    {"source": "up", "transformation": "time_since", "window": "200D"},
    {"source": "close", "transformation": "count", "window": "100D"},
]


def stocks() -> pd.DataFrame:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "Stocks.csv"
    wide = pd.read_csv(path, comment="#")
    long = wide.melt(id_vars="Date", var_name="ticker", value_name="close").dropna(subset=["close"])
    long["date"] = pd.to_datetime(long["Date"], utc=True)
    long = long.drop(columns="Date").sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
    prev = long.groupby("ticker")["close"].shift()
    long["up"] = np.where(long["close"] > prev, "up", "down")
    return long[["date", "ticker", "close", "up"]]


def write_config(tmp_path: Path, model_name: str) -> Path:
    data = {
        "dataset": {
            "source": "stocks.csv",
            "timestamp_column": "date",
            "entity_columns": ["ticker"],
            "label_column": "up",
            "positive_label": "up",
        },
        "partitions": {"freq": "year"},
        "model": {"name": model_name},
        "features": {"definitions": DEFINITIONS},
    }
    path = tmp_path / "mlops.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def pg_url() -> str:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": PG_DB}).scalar()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{PG_DB}"'))
    admin.dispose()
    return f"postgresql://postgres@127.0.0.1:5432/{PG_DB}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, monkeypatch):
    """A config (unique model name = unique tables), MLOPS_HOME under tmp_path, the online store URL."""
    name = f"stocks_{uuid.uuid4().hex[:10]}"
    cfg_path = write_config(tmp_path, name)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_CONFIG", str(cfg_path))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'online.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", url)
    return load_config(cfg_path), cfg_path


def materialize_years(cfg, data: pd.DataFrame, years=None) -> None:
    """What the features asset does, partition by partition: compute, write offline, materialize online."""
    off, on = offline_store(cfg, storage_from_env()), online_store(cfg, storage_from_env())
    lb = lookback(cfg)
    for year, part in data.groupby(data["date"].dt.year, sort=True):
        if years is not None and year not in years:
            continue
        start = pd.Timestamp(f"{year}-01-01", tz="UTC")
        hist = data[(data["date"] < start) & (data["date"] >= start - lb)]
        feats = compute_features(cfg, part, hist)
        off.write_partition(str(year), feats)
        on.materialize(cfg, feats, start=start, end=pd.Timestamp(f"{year + 1}-01-01", tz="UTC"))


def test_entity_windows_on_real_multi_entity_data(env):
    cfg, _ = env
    data = stocks()
    got = compute_features(cfg, data, None)
    names = [d.name for d in feature_registry(cfg)]
    sample = data.sample(300, random_state=0).sort_index()
    want = reference(cfg, data, sample)
    pd.testing.assert_frame_equal(got.loc[sample.index, names], want, check_exact=False, rtol=1e-9, atol=1e-9)
    # An entity's features never see another entity: computing AAPL alone gives the same numbers.
    aapl = data[data["ticker"] == "AAPL"]
    alone = compute_features(cfg, aapl, None)
    pd.testing.assert_frame_equal(alone[names], got.loc[aapl.index, names])
    # A ticker's first row has no history, however much the others have.
    first_amzn = data.index[data["ticker"] == "AMZN"][0]
    assert np.isnan(got.loc[first_amzn, "close_last_40D"]) and got.loc[first_amzn, "close_count_100D"] == 0


def test_historical_equals_online_after_materialization(env):
    cfg, cfg_path = env
    data = stocks()
    materialize_years(cfg, data)
    newest = data["date"].max()
    tickers = sorted(data["ticker"].unique())
    names = [d.name for d in feature_registry(cfg)]

    # Latest values (no as_of) = the historical lookup just after the newest event.
    latest = get_online_features([{"ticker": t} for t in tickers])
    entity_df = pd.DataFrame({"ticker": tickers, "date": newest + pd.Timedelta(1, "ns")})
    hist = get_historical_features(entity_df, config=cfg_path)
    pd.testing.assert_frame_equal(latest, hist, check_exact=True)
    assert latest["close_last_40D"].notna().sum() >= 8  # live tickers have values: the test compares numbers
    # An entity never seen: no history, not an error (a cold start): missing values, a count of 0.
    unseen = get_online_features([{"ticker": "NOPE"}])
    assert np.isnan(unseen.loc[0, "close_last_40D"]) and unseen.loc[0, "close_count_100D"] == 0

    # As of other times within the retention: computed online from raw events, still identical.
    for days in (3, 20, 45):
        t = newest + pd.Timedelta(days, "D")
        online = get_online_features(pd.DataFrame({"ticker": tickers}), as_of=t)
        hist = get_historical_features(pd.DataFrame({"ticker": tickers, "date": t}))
        pd.testing.assert_frame_equal(online, hist, check_exact=True)

    # Serving rows: features completed online equal the offline features of the same events.
    last_rows = data[data["date"] == newest]
    served = complete_features(cfg, last_rows.drop(columns="up"), online_store(cfg, storage_from_env()))
    offline = offline_store(cfg, storage_from_env()).read([str(newest.year)])
    offline = offline[offline["date"] == newest].set_index(last_rows.index)
    pd.testing.assert_frame_equal(served, offline.drop(columns="up"), check_exact=True)
    assert served[names].notna().any().all()


def test_rematerialization_is_idempotent_and_picks_up_late_rows(env):
    cfg, _ = env
    data = stocks()
    materialize_years(cfg, data)
    off, on = offline_store(cfg, storage_from_env()), online_store(cfg, storage_from_env())
    before_off = off.read()
    before_on = get_online_features([{"ticker": "IBM"}, {"ticker": "AAPL"}])
    materialize_years(cfg, data, years=[2021, 2022])  # the last two years again
    pd.testing.assert_frame_equal(off.read(), before_off)
    pd.testing.assert_frame_equal(get_online_features([{"ticker": "IBM"}, {"ticker": "AAPL"}]), before_on)
    assert on.info(cfg)["code_version"] == features_code_version(cfg)

    # A late row for 2022 (a new ticker's quote) appears after rematerializing that partition, once.
    late = pd.DataFrame(
        {"date": [pd.Timestamp("2022-06-01", tz="UTC")], "ticker": ["NEW"], "close": [10.0], "up": ["up"]}
    )
    with_late = pd.concat([data, late], ignore_index=True)
    materialize_years(cfg, with_late, years=[2022])
    materialize_years(cfg, with_late, years=[2022])
    stored = off.read()
    assert len(stored) == len(before_off) + 1
    assert (stored["ticker"] == "NEW").sum() == 1
    new = get_online_features([{"ticker": "NEW"}])
    assert new.loc[0, "close_last_40D"] == 10.0 and new.loc[0, "close_count_100D"] == 1


def test_ttl_runs_from_the_row_time_not_the_wall_clock(env):
    cfg, _ = env
    data = stocks()
    materialize_years(cfg, data, years=range(1990, 2001))
    newest = data.loc[data["date"].dt.year <= 2000, "date"].max()
    rows = pd.DataFrame(
        {
            "date": [newest + pd.Timedelta("1D"), newest + pd.Timedelta("60D")],
            "ticker": ["IBM", "IBM"],
            "close": [100.0, 100.0],
        }
    )
    out = complete_features(cfg, rows, online_store(cfg, storage_from_env()))
    # 2000 data is decades old by the wall clock, yet fresh for a row timestamped the next day...
    assert (
        out.loc[0, "close_last_40D"]
        == data[(data["ticker"] == "IBM") & (data["date"] == newest)]["close"].item()
    )
    # ...and expired 60 days later (window 40D), never the stale last value; the trend's TTL (40D) too.
    assert np.isnan(out.loc[1, "close_last_40D"]) and np.isnan(out.loc[1, "close_trend_100D"])
    assert out.loc[1, "close_count_100D"] >= 1  # the 100D window still holds quotes: counted, not expired


def test_refuses_changed_definitions_and_rows_before_the_retention(env, tmp_path):
    cfg, cfg_path = env
    data = stocks()
    materialize_years(cfg, data, years=range(2015, 2023))
    on = online_store(cfg, storage_from_env())
    old = pd.DataFrame({"date": [pd.Timestamp("2016-03-01", tz="UTC")], "ticker": ["IBM"], "close": [1.0]})
    with pytest.raises(OnlineStoreError, match="keeps events since"):
        complete_features(cfg, old, on)
    changed = yaml.safe_load(cfg_path.read_text())
    changed["features"]["definitions"][0]["window"] = "35D"
    cfg_path.write_text(yaml.safe_dump(changed))
    with pytest.raises(OnlineStoreError, match="code version"):
        get_online_features([{"ticker": "IBM"}], config=cfg_path)


def test_list_features_names_definition_asset_and_version(env):
    cfg, cfg_path = env
    listed = list_features(cfg_path)
    assert listed["name"].tolist() == [d.name for d in feature_registry(cfg)]
    row = listed.set_index("name").loc["close_trend_100D"]
    assert row["boundary"] == "[t - 100D, t)" and row["ttl"] == "40D" and row["entity"] == ["ticker"]
    assert row["asset"] == f"{cfg.model.name}/features"
    assert row["features_code_version"] == features_code_version(cfg)
    assert listed["code_version"].nunique() == len(listed)


def test_offline_store_sql_backend_round_trip(env, tmp_path):
    cfg, _ = env
    url = str(
        online_store(cfg, storage_from_env()).url
    )  # the same database kind as the online store under test
    store = OfflineStore(url=url, name=f"{cfg.model.name}_offline")
    feats = compute_features(cfg, stocks().head(200), None)
    store.write_partition("a", feats.iloc[:120])
    store.write_partition("b", feats.iloc[120:])
    store.write_partition("a", feats.iloc[:120])  # again: replaced, not duplicated
    assert store.partitions() == ["a", "b"]
    pd.testing.assert_frame_equal(store.read(), feats.reset_index(drop=True))
    pd.testing.assert_frame_equal(store.read(["b"]), feats.iloc[120:].reset_index(drop=True))


def test_online_lookup_spellings_duplicates_unseen_and_feature_subset(env):
    cfg, _ = env
    materialize_years(cfg, stocks(), years=range(2018, 2023))
    names = [d.name for d in feature_registry(cfg)]
    full = get_online_features([{"ticker": t} for t in ("IBM", "AAPL")])
    # Duplicates and an unseen entity in one lookup: one row each, in request order; the unseen is cold.
    mixed = get_online_features(
        [{"ticker": "AAPL"}, {"ticker": "NOPE"}, {"ticker": "IBM"}, {"ticker": "AAPL"}]
    )
    assert mixed["ticker"].tolist() == ["AAPL", "NOPE", "IBM", "AAPL"]
    pd.testing.assert_frame_equal(mixed.iloc[[2, 0]].reset_index(drop=True), full)
    pd.testing.assert_frame_equal(
        mixed.iloc[[3]].reset_index(drop=True), full.iloc[[1]].reset_index(drop=True)
    )
    assert np.isnan(mixed.loc[1, "close_last_40D"]) and mixed.loc[1, "close_count_100D"] == 0
    assert (mixed["date"] == full.loc[0, "date"]).all()
    # A frame of entities answers like the dicts; a subset of features comes in the order asked for.
    pd.testing.assert_frame_equal(get_online_features(pd.DataFrame({"ticker": ["IBM", "AAPL"]})), full)
    subset = ["close_count_100D", "close_last_40D"]
    pd.testing.assert_frame_equal(
        get_online_features([{"ticker": "IBM"}, {"ticker": "AAPL"}], features=subset),
        full[["ticker", "date", *subset]],
    )
    assert list(full.columns) == ["ticker", "date", *names]
    assert get_online_features([]).columns.tolist() == ["ticker", "date", *names]
    with pytest.raises(FeatureInputError, match="missing entity columns"):
        get_online_features([{"symbol": "IBM"}])
    with pytest.raises(FeatureInputError, match="must not be null"):
        get_online_features([{"ticker": None}])


def test_online_lookup_refuses_a_store_rematerialized_with_other_definitions(env, tmp_path):
    """The code version check is cached per store; a rematerialization with other definitions (another
    process, same tables) must still be refused on the next lookup, not served from the cache."""
    cfg, cfg_path = env
    data = stocks()
    materialize_years(cfg, data, years=[2021, 2022])
    before = get_online_features([{"ticker": "IBM"}])
    assert before["close_count_100D"].item() > 0
    changed = yaml.safe_load(cfg_path.read_text())
    changed["features"]["definitions"][0]["window"] = "35D"
    del changed["features"]["definitions"][-1]  # and one feature fewer: the stored table lacks a column
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(changed))
    materialize_years(load_config(other), data, years=[2021, 2022])
    with pytest.raises(OnlineStoreError, match="code version"):
        get_online_features([{"ticker": "IBM"}])
    materialize_years(cfg, data, years=[2021, 2022])  # back to the configured definitions: served again
    pd.testing.assert_frame_equal(get_online_features([{"ticker": "IBM"}]), before)


def test_online_lookup_without_entity_columns(tmp_path, monkeypatch):
    data = stocks()
    data = data[data["ticker"] == "IBM"].drop(columns="ticker").reset_index(drop=True)
    path = write_config(tmp_path, f"ibm_{uuid.uuid4().hex[:10]}")
    raw = yaml.safe_load(path.read_text())
    raw["dataset"]["entity_columns"] = []
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_CONFIG", str(path))
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", f"sqlite:///{tmp_path / 'online.db'}")
    cfg = load_config(path)
    materialize_years(cfg, data, years=range(2019, 2023))
    latest = get_online_features([{}])
    hist = get_historical_features(pd.DataFrame({"date": [data["date"].max() + pd.Timedelta(1, "ns")]}))
    pd.testing.assert_frame_equal(latest, hist, check_exact=True)
    assert latest["close_last_40D"].notna().all()


@pytest.mark.postgres
def test_online_lookup_reconnects_once_after_postgresql_drops_its_connections(pg_url, tmp_path, monkeypatch):
    name = f"stocks_{uuid.uuid4().hex[:10]}"
    cfg_path = write_config(tmp_path, name)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_CONFIG", str(cfg_path))
    monkeypatch.setenv("MLOPS_ONLINE_STORE_URL", pg_url)
    cfg = load_config(cfg_path)
    materialize_years(cfg, stocks(), years=[2022])
    before = get_online_features([{"ticker": "IBM"}])
    # What a server restart does to the lookups' pooled connections (they are not pinged at checkout).
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": PG_DB},
        ).scalar()
    admin.dispose()
    assert killed >= 1
    pd.testing.assert_frame_equal(get_online_features([{"ticker": "IBM"}]), before)


def test_a_rewrite_keeps_the_replaced_bytes_as_a_snapshot_a_pinned_view_reads(tmp_path):
    from mlops_assets.data.store import file_digest
    from mlops_assets.features.offline import OfflineStore, OfflineStoreError

    store = OfflineStore(tmp_path)
    first = pd.DataFrame({"t": pd.date_range("2020-01-01", periods=5, tz="UTC"), "x": np.arange(5.0)})
    store.write_partition("2020-01", first)
    (was,) = store.file_digests(["2020-01"]).values()
    store.write_partition("2020-01", first)  # the same bytes again: nothing kept
    assert store.snapshots() == []

    second = first.assign(x=first["x"] + 1)
    store.write_partition("2020-01", second)  # a rewrite: the replaced bytes are kept, named by their digest
    [(key, digest, path)] = store.snapshots()
    assert (key, digest) == ("2020-01", was) and file_digest(path) == was
    pd.testing.assert_frame_equal(store.read(["2020-01"]), second)
    pd.testing.assert_frame_equal(store.pinned({"2020-01": was}).read(["2020-01"]), first)

    # The batched writer keeps them too; a delete keeps the last bytes.
    (now,) = store.file_digests(["2020-01"]).values()
    store.write_partitions(first.assign(x=-first["x"]), [("2020-01", 5)])
    (third,) = store.file_digests(["2020-01"]).values()
    store.delete_partition("2020-01")
    assert store.partitions() == []
    assert sorted(d for _, d, _ in store.snapshots()) == sorted([was, now, third])
    pinned = store.pinned({"2020-01": now})
    assert pinned.partitions() == ["2020-01"]  # gone from the store, there as it was
    pd.testing.assert_frame_equal(pinned.read(), second)

    # Bytes that are nowhere: named, never read as something else.
    lost = store.pinned({"2020-01": "0" * 20})
    assert lost.missing_snapshots() == ["2020-01"]
    with pytest.raises(OfflineStoreError, match=r"'2020-01'.* no snapshot is kept"):
        lost.read(["2020-01"])
