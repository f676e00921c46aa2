"""A backfill in bounded memory: the source streamed in batches, partitions staged, validated and featurized a
group at a time, training reading only its windows. The results are those of one whole-range pass."""

import json
import sqlite3

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config, parse_config
from mlops_assets.data.partitions import split_by_partition
from mlops_assets.data.sources import iter_source, read_source
from mlops_assets.data.staging import Staging, group_keys
from mlops_assets.runner import execute
from mlops_assets.storage import storage_from_env

from .conftest import write_config

GATE_METADATA = (
    "measured",
    "threshold",
    "failing_partitions",
    "failing_columns",
    "sample_failing_rows",
    "details",
)


def run(config_path, selection, **kw):
    cfg = load_config(config_path)
    instance = dg.DagsterInstance.ephemeral()
    outcome = execute(
        cfg,
        config_file=str(config_path),
        storage=storage_from_env().ensure(),
        instance=instance,
        selection=selection,
        **kw,
    )
    return cfg, instance, outcome


def stored(cfg, asset: str) -> dict[str, pd.DataFrame]:
    if asset == "features":
        from mlops_assets.features.stores import offline_store

        store = offline_store(cfg, storage_from_env())
        return {k: store.read([k]) for k in store.partitions()}
    root = storage_from_env().home / cfg.model.name / asset
    return {p.stem: pd.read_parquet(p) for p in sorted(root.glob("*.parquet"))}


def check_metadata(instance, cfg) -> dict[str, tuple]:
    out = {}
    for record in instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ):
        ev = record.event_log_entry.dagster_event.event_specific_data
        md = {k: v.value for k, v in ev.metadata.items() if k in GATE_METADATA}
        out[ev.check_name] = (ev.passed, json.loads(json.dumps(md, default=str)))
    return out


def data_version(instance, cfg, asset: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey([cfg.model.name, asset]))
    return event.asset_materialization.tags["dagster/data_version"]


@pytest.fixture
def recorder(monkeypatch):
    """The size of every frame the batch steps hold: source batches, validated groups, featurized groups."""
    import mlops_assets.data.batches as batches
    import mlops_assets.features as features
    import mlops_assets.steps.ingest as data_assets

    sizes = {"source": [], "validated": [], "features": []}
    real_iter, real_validate, real_features = (
        data_assets.iter_source,
        batches.validate_batch,
        features.compute_features,
    )

    def iter_recorded(cfg, batch_rows=None):
        for frame in real_iter(cfg, batch_rows):
            sizes["source"].append(len(frame))
            yield frame

    def validate_recorded(frame, spec):
        sizes["validated"].append(len(frame))
        return real_validate(frame, spec)

    def features_recorded(cfg, events, history=None):
        sizes["features"].append(len(events))
        return real_features(cfg, events, history)

    monkeypatch.setattr(data_assets, "iter_source", iter_recorded)
    monkeypatch.setattr(batches, "validate_batch", validate_recorded)
    monkeypatch.setattr(features, "compute_features", features_recorded)
    return sizes


def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
    """Failures spread over several groups: a quarantined reading, a corrupt feed, nulls, an unknown label."""
    frame = frame.copy().reset_index(drop=True)
    month = frame["date"].dt.strftime("%Y-%m")
    frame.loc[month.eq("1950-03").idxmax(), "temperature"] = 9_000.0  # one stray reading: quarantined
    feed = month.eq("1950-06")
    frame.loc[feed[feed].index[:12], "dew point"] = -5_000.0  # 12 of 30 rows: a corrupt feed, blocked
    nulls = month.eq("1951-02")
    frame.loc[nulls[nulls].index[:8], "visibility"] = np.nan  # 8 of 28 rows null: above 10%
    frame.loc[month.eq("1951-09").idxmax(), "rain"] = 7  # an unknown label
    frame.loc[month.eq("1951-10").idxmax(), "rain"] = 9
    return frame


@pytest.mark.slow
def test_batched_backfill_equals_one_pass_and_holds_one_group_at_a_time(rainfall_slice, recorder):
    # The same data twice: in file order through one pass, and shuffled through groups of at most 70 rows
    # (a month is 28-31 rows), staged on disk because the whole read exceeds the batch.
    whole_path, _ = rainfall_slice(years=3, name="whole")
    batched_path, _ = rainfall_slice(
        years=3,
        name="batched",
        mutate=lambda f: f.sample(frac=1.0, random_state=3),
        partitions={"rows_per_batch": 70},
    )
    steps = ["raw_data", "validated_data", "features"]
    cfg_a, inst_a, whole = run(whole_path, steps)
    assert whole.status == "ok", whole.error
    for key in recorder:
        recorder[key].clear()
    cfg_b, inst_b, batched = run(batched_path, steps)
    assert batched.status == "ok", batched.error

    # Bounded: no step held more than one batch of rows (the largest month is 31 rows, within the batch).
    assert max(recorder["source"]) <= 70 and len(recorder["source"]) >= 1096 // 70
    assert max(recorder["validated"]) <= 70 and len(recorder["validated"]) >= 16
    assert max(recorder["features"]) <= 70 and len(recorder["features"]) >= 16
    # ... and the staging area is gone afterwards.
    assert not (storage_from_env().home / "batched" / ".staging").exists() or not any(
        (storage_from_env().home / "batched" / ".staging").iterdir()
    )

    for asset in ("raw_data", "validated_data", "features"):
        a, b = stored(cfg_a, asset), stored(cfg_b, asset)
        assert list(a) == list(b) and len(a) == 36, asset
        for key in a:
            pd.testing.assert_frame_equal(a[key], b[key], obj=f"{asset}/{key}")
        assert data_version(inst_a, cfg_a, asset) == data_version(inst_b, cfg_b, asset), asset
    assert check_metadata(inst_a, cfg_a) == check_metadata(inst_b, cfg_b)


@pytest.mark.slow
def test_gates_over_groups_report_what_one_pass_reports_on_a_corrupt_batch(rainfall_slice, recorder):
    whole_path, _ = rainfall_slice(years=3, name="whole", mutate=corrupt)
    batched_path, _ = rainfall_slice(
        years=3, name="batched", mutate=corrupt, partitions={"rows_per_batch": 100}
    )
    cfg_a, inst_a, whole = run(whole_path, ["raw_data", "validated_data"])
    cfg_b, inst_b, batched = run(batched_path, ["raw_data", "validated_data"])
    assert len(recorder["validated"]) > 10  # the batched run validated many groups

    a, b = check_metadata(inst_a, cfg_a), check_metadata(inst_b, cfg_b)
    assert a == b
    failed = {name: md["failing_partitions"] for name, (passed, md) in b.items() if not passed}
    assert failed == {
        "raw_data_values_plausible": ["1950-06"],
        "raw_data_null_fraction_within_limit": ["1951-02"],
        "raw_data_labels_known": ["1951-09", "1951-10"],
    }
    assert b["raw_data_labels_known"][1]["measured"] == 2.0  # rows summed over the groups
    assert b["raw_data_values_plausible"][1]["details"]["quarantined_partitions"] == ["1950-03"]
    # The blocked batch stops before validated_data: nothing was written there, by either run.
    for cfg, outcome in ((cfg_a, whole), (cfg_b, batched)):
        assert outcome.status != "ok"
        assert stored(cfg, "validated_data") == {}
        raw = stored(cfg, "raw_data")
        assert raw["1950-06"]["__blocked__"].eq("values_plausible").all()
        assert raw["1950-03"]["__quarantine__"].notna().sum() == 1


@pytest.mark.slow
def test_training_reads_whole_rows_of_its_windows_only(rainfall_slice, monkeypatch):
    from mlops_assets.features.offline import OfflineStore

    path, _ = rainfall_slice(
        years=3, model={"train_window_partitions": 6, "holdout_partitions": 4, "validation_partitions": 4}
    )
    reads = []
    real_read = OfflineStore.read

    def recorded(self, partition_keys=None, *, columns=None):
        frame = real_read(self, partition_keys, columns=columns)
        reads.append(
            (None if partition_keys is None else sorted(partition_keys), columns, len(frame.columns))
        )
        return frame

    monkeypatch.setattr(OfflineStore, "read", recorded)
    cfg, instance, outcome = run(path, None)
    assert outcome.status == "ok", outcome.error
    whole = [r for r in reads if r[1] is None]
    narrow = [r for r in reads if r[1] is not None]
    # Every partition is read for its timestamps and labels only (two columns) ...
    assert narrow and all(r[2] == 2 for r in narrow)
    # ... and whole rows only for the split: 6 training months, 4 validation and 4 holdout of the 36 (the refit's
    # 6 newest months lie inside them).
    assert len(whole) == 1 and len(whole[0][0]) == 6 + 4 + 4
    assert whole[0][0][0] == "1950-11" and whole[0][0][-1] == "1951-12"


def test_iter_source_batches_match_the_whole_read_for_csv_parquet_sql_and_row_order(tmp_path, rainfall):
    # The bundled data derives its timestamps from row order: batches must continue the count.
    bundled = load_config()
    batches = list(iter_source(bundled, 1000))
    assert [len(b) for b in batches[:-1]] == [1000] * (len(batches) - 1)
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), read_source(bundled))

    frame = rainfall.head(2500)
    frame.to_parquet(tmp_path / "r.parquet", index=False)
    frame.assign(date=frame["date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp_path / "r.csv", index=False)
    with sqlite3.connect(tmp_path / "r.db") as conn:
        frame.assign(date=frame["date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_sql(
            "weather", conn, index=False
        )
    for source, query in (
        ("r.parquet", None),
        ("r.csv", None),
        (f"sqlite:///{tmp_path / 'r.db'}", "SELECT * FROM weather"),
    ):
        cfg = parse_config(
            {
                "dataset": {
                    "source": source,
                    **({"query": query} if query else {}),
                    "timestamp_column": "date",
                    "label_column": "rain",
                }
            },
            source_dir=tmp_path,
        )
        parts = list(iter_source(cfg, 600))
        assert [len(p) for p in parts] == [600, 600, 600, 600, 100], source
        joined = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(joined, read_source(cfg), check_dtype=False, obj=source)
        assert str(joined["date"].dtype) == "datetime64[ns, UTC]"
    # A Parquet file of many row groups is read a row group at a time, never a batch across two of them.
    frame.to_parquet(tmp_path / "groups.parquet", index=False, row_group_size=700)
    cfg = parse_config(
        {"dataset": {"source": "groups.parquet", "timestamp_column": "date", "label_column": "rain"}},
        source_dir=tmp_path,
    )
    parts = list(iter_source(cfg, 600))
    assert [len(p) for p in parts] == [600, 100, 600, 100, 600, 100, 400]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), read_source(cfg))


@pytest.mark.parametrize("memory_rows", [10_000, 50])
def test_staging_puts_any_order_into_partitions_as_sorting_the_whole_source_would(
    tmp_path, rainfall, memory_rows
):
    frame = rainfall.head(400)
    shuffled = frame.sample(frac=1.0, random_state=0)
    expected = split_by_partition(frame, "date", "month")
    keep = set(list(expected)[1:-1])
    with Staging(
        tmp_path / "s", timestamp_column="date", freq="month", memory_rows=memory_rows, keep=keep
    ) as st:
        for start in range(0, len(shuffled), 64):
            st.add(shuffled.iloc[start : start + 64])
        assert st.keys() == sorted(keep)
        for key in st.keys():
            pd.testing.assert_frame_equal(st.read(key), expected[key])
            assert st.rows[key] == len(expected[key])
        spilled = (tmp_path / "s").exists()
    assert spilled == (memory_rows < 400)
    assert not (tmp_path / "s").exists()


def test_group_keys_never_splits_a_partition_and_respects_the_budget():
    rows = {"a": 40, "b": 40, "c": 150, "d": 10, "e": 0, "f": 60}
    assert group_keys(list(rows), rows, 100) == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert group_keys([], rows, 100) == []


def test_rows_per_batch_must_be_positive(tmp_path):
    path = write_config(
        tmp_path / "m.yaml",
        {
            "dataset": {"source": "x.csv", "timestamp_column": "date", "label_column": "rain"},
            "partitions": {"rows_per_batch": 0},
        },
    )
    from mlops_assets.config import ConfigError

    with pytest.raises(ConfigError, match="rows_per_batch"):
        load_config(path)
