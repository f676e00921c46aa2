"""Partition files written and read a group at a time are the files and frames of one partition at a time; training
reads the offline store once where once suffices."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_assets.config import load_config
from mlops_assets.data.batches import QUARANTINE_COLUMN, Stores, validate_partitions, validated_partition
from mlops_assets.data.partitions import split_by_partition
from mlops_assets.data.schema import infer_spec
from mlops_assets.data.store import PartitionStore
from mlops_assets.features.offline import OfflineStore
from mlops_assets.lineage import content_version, content_versions
from mlops_assets.steps.ingest import publish_validated

CFG = load_config()


def slices(frame, sizes):
    bounds = np.cumsum([0, *sizes])
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.fixture
def numeric():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2000-01-01", periods=50, freq="D", tz="UTC"),
            "x": rng.random(50),
            "rain": rng.integers(0, 2, 50),
            "flag": rng.random(50) > 0.5,
        }
    )
    frame.loc[3, "x"] = np.nan
    return frame


def test_content_versions_equal_each_slice_hashed_alone(numeric):
    mixed = numeric.assign(note=[None] * 20 + ["a"] * 30)  # a text column all missing in the first slice
    for frame in (numeric, mixed):
        sizes = [20, 0, 25, 5]
        assert content_versions(frame, sizes) == [content_version(s) for s in slices(frame, sizes)]
    assert content_versions(numeric.iloc[:0], [0, 0]) == [content_version(numeric.iloc[:0])] * 2


@pytest.mark.parametrize("extra", ["none", "text", "text_then_empty", "category", "decimal"])
def test_write_slices_writes_the_files_of_one_write_per_slice(tmp_path, numeric, extra):
    from decimal import Decimal

    columns = {
        "none": {},
        # Text missing from the first slice: converted alone that slice would be a null column.
        "text": {"note": [None] * 20 + ["a"] * 30},
        "text_then_empty": {"note": ["a"] * 20 + [None] * 30, "why": [None] * 45 + ["b"] * 5},
        "category": {"note": pd.Categorical(["x"] * 20 + ["y"] * 30)},
        "decimal": {"amount": [Decimal("1.5")] * 20 + [Decimal("12.125")] * 30},  # precision from the values
    }[extra]
    frame = numeric.assign(**columns)
    frame.attrs["source"] = "test"
    sizes = [20, 0, 30]
    grouped, single = PartitionStore(tmp_path / "grouped"), PartitionStore(tmp_path / "single")
    grouped.write_slices(frame, list(zip("abc", sizes, strict=True)))
    for key, part in zip("abc", slices(frame, sizes), strict=True):
        single.write(key, part)
        part.to_parquet(tmp_path / f"pandas_{key}.parquet", index=False)
        # Byte for byte what pandas writes, and read back as pandas reads it.
        assert grouped.path(key).read_bytes() == (tmp_path / f"pandas_{key}.parquet").read_bytes()
        assert single.path(key).read_bytes() == grouped.path(key).read_bytes()
        back = grouped.read([key])
        pd.testing.assert_frame_equal(back, pd.read_parquet(grouped.path(key)))
        if extra != "category":  # pandas itself reads an empty slice's categories back empty
            pd.testing.assert_frame_equal(back, part)
        assert back.attrs == {"source": "test"}
    with pytest.raises(ValueError, match="slices of 40 rows"):
        grouped.write_slices(frame, [("a", 40)])


def test_offline_store_grouped_writes_and_joined_reads_match_one_partition_at_a_time(tmp_path, numeric):
    sizes = [20, 0, 30]
    grouped, single = OfflineStore(tmp_path, name="grouped"), OfflineStore(tmp_path, name="single")
    grouped.write_partitions(numeric, list(zip("abc", sizes, strict=True)))
    for key, part in zip("abc", slices(numeric, sizes), strict=True):
        single.write_partition(key, part)
        assert grouped._path(key).read_bytes() == single._path(key).read_bytes()
    expected = pd.concat([pd.read_parquet(single._path(k)) for k in "abc"], ignore_index=True)
    pd.testing.assert_frame_equal(grouped.read(), expected)
    pd.testing.assert_frame_equal(grouped.read(["c", "a"], columns=["x"]), expected[["x"]])
    # Files of different schemas are converted one by one and concatenated, as pandas would.
    single.write_partition("b", pd.DataFrame({"x": ["text"], "rain": [1]}))
    mixed = single.read(columns=["x", "rain"])
    pd.testing.assert_frame_equal(
        mixed,
        pd.concat(
            [pd.read_parquet(single._path(k), columns=["x", "rain"]) for k in "abc"], ignore_index=True
        ),
    )
    assert mixed["x"].tolist()[20] == "text"


def test_publish_validated_in_groups_stores_what_one_partition_at_a_time_stores(tmp_path, rainfall):
    # Groups of three or four months.
    cfg = CFG.model_copy(update={"partitions": CFG.partitions.model_copy(update={"rows_per_batch": 100})})
    stores = Stores.at(tmp_path, "m")
    batch = split_by_partition(
        rainfall[rainfall["date"] < pd.Timestamp("1952-01-01", tz="UTC")], "date", "month"
    )
    spec = infer_spec(pd.concat([batch[k] for k in sorted(batch)[:12]], ignore_index=True), cfg)
    batch["1950-05"].loc[3, "temperature"] = 9_000.0  # one stray reading: quarantined
    result, annotated = validate_partitions(cfg, batch, spec)
    assert result.passed
    for key, frame in annotated.items():
        stores.raw.write(key, frame)
    keys = sorted(annotated)
    # The quarantined row gives its month's file a text column where the others have an empty (null) one: the
    # months still read as one frame, each month's slice the frame it reads as alone.
    months = ["1950-03", "1950-04", "1950-05", "1950-06", "1950-07"]
    kinds = {
        str(pq.read_schema(stores.raw.path(k)).field(QUARANTINE_COLUMN).type) for k in ("1950-04", "1950-05")
    }
    assert kinds == {"null", "string"}
    ((run, frame, counts),) = stores.raw.read_runs(months)
    assert run == months and sum(counts) == len(frame)
    for key, part in zip(months, slices(frame, counts), strict=True):
        pd.testing.assert_frame_equal(part, stores.raw.read([key]))

    outcome = publish_validated(cfg, stores, keys)

    assert outcome.quarantined_rows == 1 and outcome.rows == sum(len(f) for f in annotated.values()) - 1
    assert stores.quarantine.keys() == ["1950-05"]
    for key in keys:
        clean, quarantined = validated_partition(cfg, key, pd.read_parquet(stores.raw.path(key)))
        pd.testing.assert_frame_equal(pd.read_parquet(stores.validated.path(key)), clean)
        assert outcome.partition_versions[key] == content_version(clean)
        if len(quarantined):
            pd.testing.assert_frame_equal(pd.read_parquet(stores.quarantine.path(key)), quarantined)


@pytest.mark.parametrize("window", [None, 12])
def test_training_reads_the_offline_store_once_without_a_window_and_gets_the_same_data(
    tmp_path, rainfall, window
):
    from mlops_assets.config import parse_config
    from mlops_assets.steps.train import PARTITION, load_training_data, training_data_from_frame

    cfg = parse_config(
        {
            "dataset": {"source": "unused.csv", "timestamp_column": "date", "label_column": "rain"},
            "model": {"name": "t", "train_window_partitions": window},
        }
    )
    rows = rainfall[rainfall["date"] < pd.Timestamp("1955-01-01", tz="UTC")].reset_index(drop=True)
    rows.loc[rows.index[-40:], "rain"] = np.nan  # the newest weeks not labeled yet: the last month is dropped

    class CountingStore(OfflineStore):
        reads: list = []

        def read(self, partition_keys=None, *, columns=None):
            self.reads.append(columns)
            return super().read(partition_keys, columns=columns)

    store = CountingStore(tmp_path)
    for key, part in split_by_partition(rows, "date", "month").items():
        store.write_partition(key, part)
    data = load_training_data(cfg, store)
    assert store.reads == ([None] if window is None else [["date", "rain"], None])
    expected = training_data_from_frame(cfg, OfflineStore(tmp_path).read())
    assert "1954-12" not in set(data.frame[PARTITION])
    pd.testing.assert_frame_equal(data.frame, expected.frame.reset_index(drop=True))
    assert (data.split, data.refit_window) == (expected.split, expected.refit_window)
    assert data.newest_partition == expected.newest_partition == "1954-12"
    assert (data.numeric, data.categorical) == (expected.numeric, expected.categorical)


def test_read_runs_break_where_a_column_changes_type(tmp_path, numeric):
    store = PartitionStore(tmp_path)
    store.write("a", numeric.iloc[:10])
    store.write("b", numeric.iloc[10:20])
    store.write("c", numeric.iloc[20:30].assign(x="text"))  # numbers in a and b, text in c
    store.write("d", numeric.iloc[30:].assign(note=pd.Categorical(["u"] * 20)))  # categories: alone
    store.write("e", numeric.iloc[30:].assign(note=pd.Categorical(["u"] * 20)))
    runs = list(store.read_runs(["a", "b", "c", "d", "e"]))
    assert [run for run, _, _ in runs] == [["a", "b"], ["c"], ["d"], ["e"]]
    for run, frame, counts in runs:
        for key, part in zip(run, slices(frame, counts), strict=True):
            pd.testing.assert_frame_equal(part, store.read([key]))
