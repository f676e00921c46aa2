import sqlite3

import pandas as pd
import pytest

from mlops_assets.config import parse_config
from mlops_assets.data.partitions import key_window, keys_between, row_keys, split_by_partition
from mlops_assets.data.sources import SourceError, read_source, source_time_range


def cfg_for(source, tmp_path, **dataset):
    ds = {"source": str(source), "timestamp_column": "ts", "label_column": "y", **dataset}
    return parse_config({"dataset": ds}, source_dir=tmp_path)


def test_bundled_rainfall_has_a_derived_daily_date(rainfall):
    assert len(rainfall) == 18159
    assert rainfall["date"].iloc[0] == pd.Timestamp("1949-01-01", tz="UTC")
    assert rainfall["date"].iloc[-1] == pd.Timestamp("1949-01-01", tz="UTC") + pd.Timedelta(days=18158)
    assert rainfall["date"].diff().dropna().eq(pd.Timedelta(days=1)).all()
    assert set(rainfall["rain"].unique()) == {0, 1}
    assert rainfall.shape[1] == 10  # date + 8 weather features + rain; the CSV's row index is dropped


def test_range_is_the_datas_own_with_a_partial_last_month(rainfall):
    from mlops_assets.config import load_config

    rng = source_time_range(load_config())
    keys = keys_between(rng.start, rng.end, "month")
    assert keys[0] == "1949-01" and keys[-1] == "1998-09" and len(keys) == 597
    parts = split_by_partition(rainfall, "date", "month")
    assert len(parts["1998-09"]) == 19  # partial last partition is normal
    assert sum(map(len, parts.values())) == len(rainfall)


def test_csv_parquet_glob_and_aware_timestamps(tmp_path):
    frame = pd.DataFrame(
        {
            "ts": ["2021-03-31T23:30:00+02:00", "2021-04-01T01:30:00+02:00", "2021-04-02T12:00:00-05:00"],
            "x": [1.0, 2.0, 3.0],
            "y": [0, 1, 0],
        }
    )
    frame.iloc[:2].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[2:].to_csv(tmp_path / "b.csv", index=False)
    out = read_source(cfg_for("*.csv", tmp_path))
    assert list(out["ts"]) == [
        pd.Timestamp("2021-03-31T21:30Z"),
        pd.Timestamp("2021-03-31T23:30Z"),
        pd.Timestamp("2021-04-02T17:00Z"),
    ]
    # 01:30+02:00 on April 1st is still March in UTC: the partition follows the instant, not the wall clock.
    assert list(row_keys(out["ts"], "month")) == ["2021-03", "2021-03", "2021-04"]
    aware = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True).dt.tz_convert("Europe/Berlin"))
    aware.to_parquet(tmp_path / "f.parquet")
    assert read_source(cfg_for("f.parquet", tmp_path))["ts"].equals(out["ts"])


def test_sql_source_with_query(tmp_path):
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table events (ts text, x real, y int)")
        conn.executemany(
            "insert into events values (?,?,?)", [("2020-01-01", 1.0, 0), ("2020-02-01", 2.0, 1)]
        )
    cfg = cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, y from events where x > 0")
    out = read_source(cfg)
    assert len(out) == 2 and str(out["ts"].dt.tz) == "UTC"


def test_timestamp_format(tmp_path):
    pd.DataFrame({"ts": ["05/01/2020", "06/01/2020"], "y": [0, 1]}).to_csv(tmp_path / "d.csv", index=False)
    out = read_source(cfg_for("d.csv", tmp_path, timestamp_format="%d/%m/%Y"))
    assert out["ts"].iloc[1] == pd.Timestamp("2020-01-06", tz="UTC")


@pytest.mark.parametrize(
    ("setup", "dataset", "message"),
    [
        (None, {}, "file not found"),
        ("pd.DataFrame({'ts': ['2020-01-01'], 'x': [1]})", {}, "label column 'y' not found"),
        (
            "pd.DataFrame({'ts': ['2020-01-01', 'yesterday'], 'y': [1, 0]})",
            {},
            "does not parse (first bad value: 'yesterday')",
        ),
        ("pd.DataFrame({'t': ['2020-01-01'], 'y': [1]})", {}, "timestamp column 'ts' not found"),
        ("pd.DataFrame({'ts': [], 'y': []})", {}, "holds no rows"),
    ],
)
def test_bad_sources_name_the_problem(tmp_path, setup, dataset, message):
    path = tmp_path / "d.csv"
    if setup:
        eval(setup).to_csv(path, index=False)
    with pytest.raises(SourceError) as err:
        read_source(cfg_for(path, tmp_path, **dataset))
    assert message in str(err.value)
    assert "d.csv" in str(err.value)


def test_unreadable_file(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="d.parquet: cannot read"):
        read_source(cfg_for(path, tmp_path))


def test_partition_keys_per_frequency():
    ts = pd.Series(pd.to_datetime(["2021-01-03T10:00Z", "2021-01-04T00:00Z", "2021-12-31T23:59Z"]))
    assert list(row_keys(ts, "day")) == ["2021-01-03", "2021-01-04", "2021-12-31"]
    assert list(row_keys(ts, "week")) == ["2020-12-28", "2021-01-04", "2021-12-27"]
    assert list(row_keys(ts, "year")) == ["2021", "2021", "2021"]
    assert key_window("2021-02", "month") == (
        pd.Timestamp("2021-02-01", tz="UTC"),
        pd.Timestamp("2021-03-01", tz="UTC"),
    )
    with pytest.raises(ValueError, match="not the start of a week"):
        key_window("2021-01-05", "week")
