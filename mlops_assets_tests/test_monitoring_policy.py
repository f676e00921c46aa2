"""The retraining policy as a plain function of (state, now): triggers, persistence, storm control."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mlops_assets.config import ConfigError, parse_config
from mlops_assets.monitoring.policy import (
    DriftObservation,
    PerformanceObservation,
    PolicyState,
    decide_retrain,
)
from mlops_assets.monitoring.settings import RetrainingConfig

NOW = datetime(1982, 2, 1, tzinfo=UTC)
CFG = (
    RetrainingConfig()
)  # persistence 2, cooldown 90 days, 2 retrains per 365 days, freshness/performance off


def drift(*flags: bool, strong_last: bool = False, version: str = "3") -> list[DriftObservation]:
    obs = [DriftObservation(f"1981-{i + 1:02d}", d, False, version) for i, d in enumerate(flags)]
    if strong_last:
        obs[-1] = replace(obs[-1], strong=True)
    return obs


def state(**kw) -> PolicyState:
    base = dict(
        champion_version="3",
        champion_trained_at=NOW - timedelta(days=400),
        champion_data_through="d1",
        latest_partition="d2",
        retrain_times=[NOW - timedelta(days=400)],
    )
    base.update(kw)
    return PolicyState(**base)


def test_no_champion_means_an_initial_training():
    d = decide_retrain(PolicyState(latest_partition="d1"), NOW, CFG)
    assert d.retrain and d.reason == "initial"


def test_quiet_state_does_not_retrain():
    d = decide_retrain(state(drift_history=drift(False, True, False)), NOW, CFG)
    assert not d.retrain and d.reason is None and d.trigger is None


def test_drift_needs_persistence():
    assert not decide_retrain(state(drift_history=drift(False, True)), NOW, CFG).retrain
    assert not decide_retrain(state(drift_history=drift(True, False)), NOW, CFG).retrain
    d = decide_retrain(state(drift_history=drift(False, True, True)), NOW, CFG)
    assert d.retrain and d.reason == "drift"
    assert d.evidence["partitions"] == ["1981-02", "1981-03"]
    three = RetrainingConfig(drift_persistence=3)
    assert not decide_retrain(state(drift_history=drift(False, True, True)), NOW, three).retrain
    assert decide_retrain(state(drift_history=drift(True, True, True)), NOW, three).retrain


def test_one_strong_signal_is_enough_unless_switched_off():
    hist = drift(False, True, strong_last=True)
    d = decide_retrain(state(drift_history=hist), NOW, RetrainingConfig(drift_persistence=5))
    assert d.retrain and d.reason == "drift" and "strong" in d.detail
    off = RetrainingConfig(drift_persistence=5, retrain_on_strong_drift=False)
    assert not decide_retrain(state(drift_history=hist), NOW, off).retrain


def test_alarms_against_a_previous_champion_do_not_count():
    old = drift(True, True, version="2")
    assert not decide_retrain(state(drift_history=old), NOW, CFG).retrain
    mixed = [*old, DriftObservation("1981-04", True, False, "3")]
    assert not decide_retrain(state(drift_history=mixed), NOW, CFG).retrain


def test_drift_trigger_can_be_switched_off():
    hist = drift(True, True, strong_last=True)
    assert not decide_retrain(state(drift_history=hist), NOW, RetrainingConfig(drift_trigger=False)).retrain


def test_cooldown_holds_then_releases():
    hist = drift(True, True)
    recent = state(drift_history=hist, retrain_times=[NOW - timedelta(days=10)])
    d = decide_retrain(recent, NOW, CFG)
    assert not d.retrain and d.trigger == "drift" and d.held_by == "cooldown"
    assert "cooldown" in d.detail
    assert decide_retrain(recent, NOW + timedelta(days=81), CFG).retrain


def test_cap_per_window_holds():
    cfg = RetrainingConfig(cooldown_days=0, max_retrains_per_window=2, window_days=365)
    times = [NOW - timedelta(days=200), NOW - timedelta(days=100)]
    d = decide_retrain(state(drift_history=drift(True, True), retrain_times=times), NOW, cfg)
    assert not d.retrain and d.held_by == "cap"
    # The oldest falls out of the window 166 days later.
    assert decide_retrain(
        state(drift_history=drift(True, True), retrain_times=times), NOW + timedelta(days=166), cfg
    ).retrain


def test_no_retrain_on_the_data_a_challenger_already_failed_on():
    failed = state(drift_history=drift(True, True), failed_challenger_data_through="d2")
    d = decide_retrain(failed, NOW, CFG)
    assert not d.retrain and d.held_by == "failed_challenger"
    # Not even on request: the same data would give the same challenger.
    assert decide_retrain(replace(failed, manual_request="cli"), NOW, CFG).held_by == "failed_challenger"
    # New data arrives: the trigger may act again.
    assert decide_retrain(replace(failed, latest_partition="d3"), NOW, CFG).retrain


def test_no_automatic_retrain_without_new_data():
    d = decide_retrain(state(drift_history=drift(True, True), latest_partition="d1"), NOW, CFG)
    assert not d.retrain and d.held_by == "no_new_data"


def test_manual_bypasses_cooldown_and_cap():
    s = state(manual_request="alice via UI", retrain_times=[NOW - timedelta(days=1), NOW - timedelta(days=2)])
    d = decide_retrain(s, NOW, CFG)
    assert d.retrain and d.reason == "manual" and "alice" in d.detail


def test_freshness_is_off_unless_configured():
    old = state(champion_trained_at=NOW - timedelta(days=5000))
    assert not decide_retrain(old, NOW, CFG).retrain
    cfg = RetrainingConfig(max_model_age_days=3652)
    d = decide_retrain(old, NOW, cfg)
    assert d.retrain and d.reason == "freshness"
    assert not decide_retrain(state(champion_trained_at=NOW - timedelta(days=3000)), NOW, cfg).retrain


def perf(*values: float | None, rows: int = 60, version: str = "3") -> list[PerformanceObservation]:
    return [PerformanceObservation(f"1981-{i + 1:02d}", v, rows, version) for i, v in enumerate(values)]


def test_performance_threshold_pools_recent_partitions_and_needs_enough_rows():
    cfg = RetrainingConfig(performance_threshold=0.6, performance_window=3, performance_min_rows=100)
    d = decide_retrain(state(performance=perf(0.9, 0.5, 0.55, 0.5)), NOW, cfg)
    assert d.retrain and d.reason == "performance"
    assert d.evidence["value"] == pytest.approx((0.5 + 0.55 + 0.5) / 3)
    assert not decide_retrain(state(performance=perf(0.9, 0.5, 0.55, 0.5, rows=30)), NOW, cfg).retrain
    # Partitions with one class only (None) are skipped, not read as zero.
    assert not decide_retrain(state(performance=perf(0.8, None, None, 0.75)), NOW, cfg).retrain
    # Another champion's scores do not count.
    assert not decide_retrain(state(performance=perf(0.4, 0.4, 0.4, version="2")), NOW, cfg).retrain


def test_performance_drop_and_lower_is_better_metrics():
    drop = RetrainingConfig(max_performance_drop=0.1, performance_min_rows=1)
    s = state(champion_metric=0.82, performance=perf(0.70, 0.70))
    assert decide_retrain(s, NOW, drop).reason == "performance"
    assert not decide_retrain(replace(s, performance=perf(0.75, 0.76)), NOW, drop).retrain
    loss = RetrainingConfig(performance_metric="log_loss", performance_threshold=0.6, performance_min_rows=1)
    assert decide_retrain(state(performance=perf(0.7)), NOW, loss).retrain
    assert not decide_retrain(state(performance=perf(0.5)), NOW, loss).retrain


def test_performance_comes_before_drift():
    cfg = RetrainingConfig(performance_threshold=0.6, performance_min_rows=1)
    d = decide_retrain(state(performance=perf(0.3), drift_history=drift(True, True)), NOW, cfg)
    assert d.reason == "performance"


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_retrain(state(), datetime(1982, 1, 1), CFG)


def test_sections_are_typed_in_mlops_yaml():
    base = {"dataset": {"source": "x.csv", "timestamp_column": "t", "label_column": "y"}}
    cfg = parse_config(
        {**base, "drift": {"alpha": 0.05, "strong_alpha": 0.001}, "retraining": {"max_model_age_days": 3652}}
    )
    assert cfg.drift.alpha == 0.05 and cfg.retraining.max_model_age_days == 3652
    assert parse_config(base).retraining.cooldown_days == 90.0
    with pytest.raises(ConfigError, match="unknown key 'retraining.cooldown'"):
        parse_config({**base, "retraining": {"cooldown": 3}})
    with pytest.raises(ConfigError, match="drift.seasonality"):
        parse_config({**base, "drift": {"seasonality": "hourly"}})
