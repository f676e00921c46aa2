"""The data contract on the real rainfall data: the four corrupt-batch stories, quarantine, and a clean pass."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config, parse_config
from mlops_assets.data.batches import (
    BlockedPartitionError,
    Stores,
    choose_reference,
    validate_partitions,
    validated_partition,
)
from mlops_assets.data.partitions import split_by_partition
from mlops_assets.data.schema import infer_spec, validate_batch

CFG = load_config()


@pytest.fixture(scope="module")
def spec(rainfall):
    return infer_spec(rainfall[rainfall["date"] < pd.Timestamp("1950-01-01", tz="UTC")], CFG)


@pytest.fixture
def month(rainfall):
    """A later month, well inside ordinary conditions."""
    m = rainfall[
        (rainfall["date"] >= pd.Timestamp("1960-06-01", tz="UTC"))
        & (rainfall["date"] < pd.Timestamp("1960-07-01", tz="UTC"))
    ]
    return m.reset_index(drop=True)


def failing(result):
    return sorted(name for name, g in result.gates.items() if not g.passed)


def test_clean_history_passes_with_the_lone_extreme_reading_quarantined(rainfall, spec):
    result = validate_batch(rainfall, spec)
    assert failing(result) == []
    q = result.quarantined
    assert list(q["date"].dt.strftime("%Y-%m-%d")) == ["1958-11-05", "1958-11-06"]
    assert (q["sea-level pressure"] > 90).all()
    assert q["quarantine_reason"].str.contains("sea-level pressure").all()
    assert len(result.clean) == len(rainfall) - 2


def test_renamed_column_blocks(month, spec):
    result = validate_batch(month.rename(columns={"dew point": "dewPoint"}), spec)
    assert failing(result) == ["has_expected_columns"]
    gate = result.gates["has_expected_columns"]
    assert gate.details["missing"] == ["dew point"] and gate.details["unexpected"] == ["dewPoint"]


def test_numbers_arriving_as_text_block(month, spec):
    bad = month.copy()
    bad["temperature"] = [f"{v:.1f} degrees" for v in bad["temperature"]]
    result = validate_batch(bad, spec)
    assert "has_expected_dtypes" in failing(result)
    gate = result.gates["has_expected_dtypes"]
    assert gate.failing_columns == ["temperature"]
    assert "degrees" in str(gate.details["bad_values"])


def test_corrupt_outliers_block(month, spec):
    bad = month.copy()
    bad.loc[::3, "visibility"] = 999_999_999.0
    result = validate_batch(bad, spec)
    assert failing(result) == ["values_plausible"]
    gate = result.gates["values_plausible"]
    assert gate.failing_partitions == ["1960-06"] and gate.failing_columns == ["visibility"]
    assert gate.value == pytest.approx(10 / 30)
    assert gate.sample and gate.sample[0]["visibility"] == 999_999_999.0


def test_null_explosion_blocks(month, spec):
    bad = month.copy()
    rng = np.random.default_rng(0)
    bad.loc[rng.random(len(bad)) < 0.8, "maximum temperature"] = np.nan
    result = validate_batch(bad, spec)
    assert failing(result) == ["null_fraction_within_limit"]
    gate = result.gates["null_fraction_within_limit"]
    assert gate.failing_columns == ["maximum temperature"] and gate.value > 0.5 and gate.threshold == 0.1


def test_a_few_nulls_pass_and_a_null_explosion_is_not_diluted_by_clean_partitions(rainfall, spec):
    few = rainfall.copy()
    few.loc[few.index[:2], "temperature"] = np.nan  # 2 of 31 days in January 1949: 6.5% < 10%
    assert validate_batch(few, spec).gates["null_fraction_within_limit"].passed
    one_bad_month = rainfall.copy()
    jan_1990 = one_bad_month["date"].dt.strftime("%Y-%m") == "1990-01"
    one_bad_month.loc[jan_1990, "temperature"] = np.nan
    gate = validate_batch(one_bad_month, spec).gates["null_fraction_within_limit"]
    assert not gate.passed and gate.failing_partitions == ["1990-01"]


def test_ordinary_drift_passes_the_plausibility_bounds(month, spec):
    shifted = month.copy()
    shifted["temperature"] += 1.0  # a one-standard-deviation shift is drift, not corruption
    assert validate_batch(shifted, spec).passed


def test_unknown_labels_and_min_rows(month, spec):
    bad = month.copy()
    bad.loc[0, "rain"] = 7
    assert failing(validate_batch(bad, spec)) == ["labels_known"]


def test_blocked_partition_is_refused_downstream_and_quarantine_is_kept(tmp_path, rainfall):
    stores = Stores.at(tmp_path, "m")
    batch = split_by_partition(
        rainfall[rainfall["date"] < pd.Timestamp("1959-01-01", tz="UTC")], "date", "month"
    )
    batch["1958-03"] = batch["1958-03"].assign(temperature=np.nan)
    reference, info = choose_reference(CFG, stores, batch)
    assert info["source"] == "earliest partitions of the first batch" and info["first"] == "1949-01"
    spec = infer_spec(reference, CFG, reference_info=info)
    result, annotated = validate_partitions(CFG, batch, spec)
    assert not result.gates["null_fraction_within_limit"].passed
    with pytest.raises(BlockedPartitionError, match="1958-03 failed the data gates"):
        validated_partition(CFG, "1958-03", annotated["1958-03"])
    clean, quarantined = validated_partition(CFG, "1958-11", annotated["1958-11"])
    assert len(clean) == 28 and len(quarantined) == 2
    assert clean["sea-level pressure"].max() < 5


def test_categorical_and_entity_contract():
    cfg = parse_config(
        {
            "dataset": {
                "source": "x.csv",
                "timestamp_column": "ts",
                "label_column": "y",
                "positive_label": "yes",
                "entity_columns": ["id"],
            },
            "partitions": {"freq": "day"},
        }
    )
    ts = pd.to_datetime(["2020-01-01T01:00Z", "2020-01-01T02:00Z", "2020-01-01T03:00Z", "2020-01-01T04:00Z"])
    ref = pd.DataFrame(
        {"ts": ts, "id": [1, 2, 1, 2], "color": ["red", "blue", "red", None], "y": ["yes", "no", "no", "yes"]}
    )
    spec = infer_spec(ref, cfg)
    assert spec.column("color").categories == ["blue", "red"]
    # Two events of entity 1 at ts[0]: an event stream, not a defect. The fourth row is the third one sent twice.
    batch = ref.assign(
        id=[1, 1, 1, 1], ts=[ts[0], ts[0], ts[1], ts[1]], color=["green", "red", "red", "red"], y="no"
    )
    result = validate_batch(batch, spec)
    assert sorted(n for n, g in result.gates.items() if not g.passed) == [
        "categories_known",
        "no_duplicate_rows",
    ]
    assert result.gates["categories_known"].details["unseen"] == {"color": ["green"]}
    dup = result.gates["no_duplicate_rows"]
    assert (dup.details["duplicate_rows"], dup.details["rows_involved"], dup.value) == (1, 2, 0.25)
    assert [r["ts"] for r in dup.sample] == ["2020-01-01T02:00:00.000Z"] * 2
