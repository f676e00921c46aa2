"""New data noticed: new files in a glob, a file rewritten in place, rows appended to a SQL table; the new-data
sensor adds the periods as partitions and requests one run over them."""

import json
import os
import sqlite3

import dagster as dg
import pytest

from mlops_assets.config import load_config
from mlops_assets.defs.factory import add_periods, build_model_defs, period_partitions
from mlops_assets.defs.ingestion import RANGE_END, RANGE_START, new_data_sensor_name
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.steps.arrivals import detect_arrivals

from .conftest import write_config


def _month_files(folder, rainfall, months):
    folder.mkdir(exist_ok=True)
    for month in months:
        part = rainfall[rainfall["date"].dt.strftime("%Y-%m") == month]
        part.assign(date=part["date"].dt.strftime("%Y-%m-%d")).to_csv(folder / f"{month}.csv", index=False)


def _config(tmp_path, source, **dataset):
    return load_config(
        write_config(
            tmp_path / "m.yaml",
            {
                "dataset": {"source": source, "timestamp_column": "date", "label_column": "rain", **dataset},
                "model": {"name": "arrivals"},
            },
        )
    )


def test_new_and_rewritten_files_are_due_and_nothing_else(tmp_path, rainfall):
    _month_files(tmp_path / "in", rainfall, ["1980-01", "1980-02"])
    cfg = _config(tmp_path, "in/*.csv")
    first = detect_arrivals(cfg, None)
    assert first.keys == ["1980-01", "1980-02"]
    assert detect_arrivals(cfg, first.state).keys == []  # nothing changed: no data read
    _month_files(tmp_path / "in", rainfall, ["1980-03"])
    third = detect_arrivals(cfg, first.state)
    assert third.keys == ["1980-03"] and "1980-03.csv" in third.reason
    # A file rewritten in place (more rows, a later mtime): its own period again, nothing else.
    path = tmp_path / "in" / "1980-01.csv"
    path.write_text(path.read_text() + path.read_text().splitlines()[-1] + "\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert detect_arrivals(cfg, third.state).keys == ["1980-01"]
    # What ingestion recorded stands for a first look: an unchanged source is not ingested again.
    from mlops_assets.data.sources import open_source

    fp = open_source(cfg).fingerprint()
    assert detect_arrivals(cfg, None, recorded_fingerprint=fp).keys == []


def test_rows_appended_to_a_table_are_due_from_the_watermark(tmp_path, rainfall):
    db = tmp_path / "events.db"
    frame = rainfall[(rainfall["date"] >= "1980-01-01") & (rainfall["date"] < "1980-03-15")]
    frame = frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d"))
    with sqlite3.connect(db) as conn:
        frame.iloc[:50].to_sql("weather", conn, index=False)
    cfg = _config(tmp_path, f"sqlite:///{db}", query="SELECT * FROM weather")
    first = detect_arrivals(cfg, None)
    assert first.keys == ["1980-01", "1980-02"]
    assert detect_arrivals(cfg, first.state).keys == []
    with sqlite3.connect(db) as conn:
        frame.iloc[50:].to_sql("weather", conn, index=False, if_exists="append")
    # The watermark's own month (it was partial) and the new one.
    second = detect_arrivals(cfg, first.state)
    assert second.keys == ["1980-02", "1980-03"]
    # Rows of a new month only: the complete months before it are not due again.
    april = rainfall[(rainfall["date"] >= "1980-04-01") & (rainfall["date"] < "1980-05-01")]
    with sqlite3.connect(db) as conn:
        april.assign(date=april["date"].dt.strftime("%Y-%m-%d")).to_sql(
            "weather", conn, index=False, if_exists="append"
        )
    assert detect_arrivals(cfg, second.state).keys == ["1980-04"]


def test_periods_stay_in_time_order_when_history_arrives_late():
    instance = dg.DagsterInstance.ephemeral()
    parts = dg.DynamicPartitionsDefinition(name="p")
    assert add_periods(instance, parts, ["1980-03", "1980-04"]) == ["1980-03", "1980-04"]
    assert add_periods(instance, parts, ["1980-01", "1980-04", "1980-05"]) == ["1980-01", "1980-05"]
    assert instance.get_dynamic_partitions("p") == ["1980-01", "1980-03", "1980-04", "1980-05"]


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def test_the_sensor_adds_partitions_and_requests_one_run_over_them(tmp_path, rainfall, instance):
    _month_files(tmp_path / "in", rainfall, ["1980-01", "1980-02"])
    cfg = _config(tmp_path, "in/*.csv")
    defs = build_model_defs(cfg, config_path=str(tmp_path / "m.yaml"))
    sensor = defs.get_sensor_def(new_data_sensor_name(cfg))
    project = MlopsProject(config_path=str(tmp_path / "m.yaml"))

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"project": project})
        return sensor.evaluate_tick(ctx)

    first = tick(None)
    [request] = first.run_requests
    # No champion yet: the whole chain, so the first model is trained and gated.
    assert request.job_name == "arrivals_run_job"
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("1980-01", "1980-02")
    assert request.tags["mlops/reason"] == "initial"
    assert instance.get_dynamic_partitions(period_partitions(cfg).name) == ["1980-01", "1980-02"]
    quiet = tick(first.cursor)
    assert not quiet.run_requests and "no new or changed file" in quiet.skip_message
    _month_files(tmp_path / "in", rainfall, ["1980-03"])
    third = tick(first.cursor)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in third.run_requests] == [("1980-03", "1980-03")]
    assert json.loads(third.cursor)["files"].keys() == json.loads(first.cursor)["files"].keys() | {
        str(tmp_path / "in" / "1980-03.csv")
    }
    # An unreadable source is reported and looked at again next tick (the cursor does not move).
    (tmp_path / "in" / "1980-03.csv").write_text("date,temperature\nnot-a-date,1\n")
    broken = tick(third.cursor)
    assert not broken.run_requests and "cannot be read" in broken.skip_message
    assert broken.cursor == third.cursor
