"""``mlops-assets replay`` on a short slice of the rainfall data with a shift introduced in January 1953."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_assets import cli
from mlops_assets.config import load_config
from mlops_assets.monitoring import policy, replay
from mlops_assets.monitoring.replay import load_partitions


def _shift_and_dry_month(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    late = frame["date"] >= pd.Timestamp("1953-01-01", tz="UTC")
    frame.loc[late, "dew point"] = frame.loc[late, "dew point"] + 1.5
    frame.loc[late, "sea-level pressure"] = frame.loc[late, "sea-level pressure"] * 0.4
    # A month without rain: ROC AUC is undefined there (one class), reported as null.
    dry = frame["date"].dt.strftime("%Y-%m") == "1951-08"
    frame.loc[dry, "rain"] = 0
    return frame


@pytest.fixture
def drifting(rainfall_slice):
    path, _ = rainfall_slice(years=6, name="replayed", mutate=_shift_and_dry_month)
    return path, load_config(path)


def test_replay_scores_before_retraining_and_acts_on_the_shift_with_the_policy_code(drifting, monkeypatch):
    path, cfg = drifting
    calls = []

    def spy(state, now, rcfg=None):
        calls.append((state.latest_data_version, now))
        return policy.decide_retrain(state, now, rcfg)

    monkeypatch.setattr(replay, "decide_retrain", spy)
    result = replay.replay(cfg, window=24)
    report = result.report()
    json.dumps(report, allow_nan=False)
    tl = report["timeline"]
    assert report["partitions"] == len(tl) == 72 - 24
    assert [t["partition"] for t in tl][:2] == ["1951-01", "1951-02"]
    # The policy decided once per partition, under the simulated clock: the end of each partition.
    assert [v for v, _ in calls] == [t["partition"] for t in tl]
    assert calls[0][1].isoformat() == "1951-02-01T00:00:00+00:00"

    assert report["retrains"][0] == {
        "partition": "1950-12",
        "reason": "initial",
        "version": "1",
        "detail": "no champion yet",
    }
    later = report["retrains"][1:]
    assert later and later[0]["reason"] == "drift"
    assert later[0]["partition"] in ("1953-01", "1953-02"), later
    assert not [t for t in tl if t["partition"] < "1953-01" and t["drift"]]

    # Test-then-train: a partition is scored by the champion that was live when it arrived.
    by_key = {t["partition"]: t for t in tl}
    first = later[0]["partition"]
    assert by_key[first]["champion_version"] == "1"
    nxt = tl[[t["partition"] for t in tl].index(first) + 1]
    assert nxt["champion_version"] == "2"
    for t in tl:
        if t["champion_version"] == "1":
            assert t["roc_auc"] == t["static_roc_auc"]
    assert by_key["1951-08"]["roc_auc"] is None and by_key["1951-08"]["static_roc_auc"] is None
    assert by_key["1951-08"]["label_drift"] is True
    shifted = [t for t in tl if t["partition"] >= "1953-01"]
    assert sum(t["drift"] for t in shifted[:3]) >= 2
    assert report["deployments"][1]["at"] == f"{nxt['partition']}-01T00:00:00+00:00"
    assert report["champion"]["version"] == report["deployments"][-1]["version"]
    assert {c["severity"] for c in report["checks"]} == {"WARN"}
    assert report["summary"]["mean_roc_auc"] == pytest.approx(
        np.mean([t["roc_auc"] for t in tl if t["roc_auc"] is not None])
    )


def test_yearly_schedule_replaces_the_policy_for_comparisons(drifting):
    _, cfg = drifting
    frame, keys = load_partitions(cfg)
    assert keys[0] == "1949-01" and len(keys) == 72
    result = replay.replay(
        cfg, frame, window=24, schedule=lambda k: k.endswith("-12"), schedule_name="every January"
    )
    assert [(r["partition"], r["reason"]) for r in result.retrains] == [
        ("1950-12", "initial"),
        ("1951-12", "every January"),
        ("1952-12", "every January"),
        ("1953-12", "every January"),
    ]
    assert {t["champion_version"] for t in result.timeline if t["partition"].startswith("1954")} == {"4"}


def test_window_longer_than_the_data_is_an_error(drifting):
    from mlops_assets.training.pipeline import TrainingError

    _, cfg = drifting
    with pytest.raises(TrainingError, match="more than the training window of 80 partitions"):
        replay.replay(cfg, window=80)


@pytest.mark.slow
def test_cli_replay_writes_report_and_plot(rainfall_slice, tmp_path):
    path, _ = rainfall_slice(
        years=5, name="cli_replay", mutate=_shift_and_dry_month, model={"train_window_partitions": 24}
    )
    report, plot = tmp_path / "out" / "replay.json", tmp_path / "out" / "replay.png"
    code = cli.main(["replay", "--config", str(path), "--report", str(report), "--plot", str(plot)])
    assert code == 0
    data = json.loads(report.read_text())
    assert {"status", "partitions", "checks", "champion", "deployments", "retrains", "timeline"} <= set(data)
    assert data["status"] == "ok" and data["partitions"] == 60 - 24
    assert set(data["timeline"][0]) >= {"partition", "champion_version", "roc_auc", "static_roc_auc", "drift"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
