"""model_performance: labeled predictions from the service's log become per-period live metrics."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlops_assets.config import load_config
from mlops_assets.runner import execute
from mlops_assets.serving.prediction_log import PredictionLog
from mlops_assets.storage import storage_from_env


@pytest.mark.slow
def test_feedback_becomes_model_performance_per_partition(rainfall_slice):
    path, _ = rainfall_slice(years=3, name="perf")
    cfg = load_config(path)
    storage = storage_from_env().ensure()
    rng = np.random.default_rng(0)
    log = PredictionLog(storage.prediction_log_url)
    records, labels = [], []
    for i in range(200):
        month = 1 if i < 100 else 2
        proba = float(rng.random())
        label = int(rng.random() < proba) if month == 1 else int(rng.random() < 0.5)  # informative, then not
        records.append(
            {
                "id": f"p{i}",
                "predicted_at": datetime.now(UTC),
                "event_time": pd.Timestamp(f"1951-{month:02d}-{1 + i % 28:02d}", tz="UTC").to_pydatetime(),
                "model_name": "perf",
                "model_version": "1",
                "inputs": {"x": proba},
                "prediction": int(proba >= 0.5),
                "probability": proba,
            }
        )
        labels.append(label)
    log.submit(records)
    log.flush()
    assert log.attach_labels([r["id"] for r in records], labels) == 200
    log.close()

    instance = dg.DagsterInstance.ephemeral()
    outcome = execute(
        cfg,
        config_file=str(path),
        storage=storage,
        instance=instance,
        selection=["model_performance"],
        partition_keys=("1951-01", "1951-03"),
    )
    assert outcome.status == "ok", outcome.error
    from mlops_assets.data.store import PartitionStore

    store = PartitionStore(storage.home / "perf" / "model_performance")
    frame = store.read(["1951-01", "1951-02", "1951-03"]).set_index("partition")
    assert frame.loc["1951-01", "n"] == 100 and frame.loc["1951-01", "roc_auc"] > 0.7
    assert frame.loc["1951-02", "n"] == 100 and abs(frame.loc["1951-02", "roc_auc"] - 0.5) < 0.2
    assert frame.loc["1951-03", "n"] == 0 and pd.isna(frame.loc["1951-03", "roc_auc"])
    assert frame.loc["1951-01", "model_versions"] == "1"
