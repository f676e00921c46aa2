"""The retraining policy: one plain function of (state, now).

The Dagster sensors call :func:`decide_retrain` with the wall clock, ``mlops-assets replay`` with a simulated one;
both build a :class:`PolicyState` from what they know (the champion, the drift-check history, past retrains, the
newest partitions) and act on the :class:`Decision`. Nothing here reads a clock, a file or a database.

Order of the triggers: manual, initial (no champion yet), performance, drift, freshness; the first that fires is
the reason. Storm control then decides whether it may act:

* a failed challenger's data (its newest partition) is never retrained on again until new data arrives (manual included: the
  same data would give the same challenger);
* no automatic retrain when the champion was already trained on the newest partition;
* a cooldown after any retrain, and a cap on retrains in a sliding window (a manual request bypasses these two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mlops_assets.monitoring.settings import RetrainingConfig

Reason = Literal["initial", "manual", "performance", "drift", "freshness"]
Hold = Literal["failed_challenger", "no_new_data", "cooldown", "cap"]
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


@dataclass(frozen=True)
class DriftObservation:
    """The drift check of one partition, against the profile of ``champion_version``."""

    partition: str
    drifted: bool
    strong: bool = False
    champion_version: str | None = None
    at: datetime | None = None  # when the partition was checked (informational)


@dataclass(frozen=True)
class PerformanceObservation:
    """The champion's metric on one newly labeled partition (``value`` None: not computable, e.g. one class)."""

    partition: str
    value: float | None
    n_rows: int
    champion_version: str | None = None


@dataclass(frozen=True)
class PolicyState:
    """Everything a retraining decision needs. Sequences are in partition (time) order, oldest first."""

    champion_version: str | None = None
    champion_trained_at: datetime | None = None
    champion_data_through: str | None = None  # the newest partition the champion was trained on
    champion_metric: float | None = None  # the champion's own holdout value of the performance metric
    latest_partition: str | None = None  # the newest partition a retrain would see
    drift_history: Sequence[DriftObservation] = ()
    performance: Sequence[PerformanceObservation] = ()
    retrain_times: Sequence[datetime] = ()  # when recent retrains (successful or not) started
    failed_challenger_data_through: str | None = None
    manual_request: str | None = None  # who/why, when someone asked for a retrain (UI tag, CLI)


@dataclass(frozen=True)
class Decision:
    """``retrain`` and its ``reason``; when held back, ``trigger`` says what would have fired and ``held_by`` why
    not. ``detail`` is one human sentence for logs, run tags and ``mlops-assets status``."""

    retrain: bool
    reason: Reason | None
    detail: str
    trigger: Reason | None = None
    held_by: Hold | None = None
    evidence: dict[str, object] = field(default_factory=dict)


def _drift_trigger(state: PolicyState, cfg: RetrainingConfig) -> tuple[bool, str, dict[str, object]]:
    if not cfg.drift_trigger:
        return False, "", {}
    # Only checks against the live champion count: the previous champion's alarms were answered by this one.
    hist = [o for o in state.drift_history if o.champion_version == state.champion_version]
    if not hist:
        return False, "", {}
    last = hist[-1]
    if cfg.retrain_on_strong_drift and last.strong:
        return True, f"strong drift signal in partition {last.partition}", {"partitions": [last.partition]}
    n = cfg.drift_persistence
    tail = hist[-n:]
    if len(tail) == n and all(o.drifted for o in tail):
        parts = [o.partition for o in tail]
        return True, f"drift in {n} consecutive partitions ({', '.join(parts)})", {"partitions": parts}
    return False, "", {}


def _pooled_performance(state: PolicyState, cfg: RetrainingConfig) -> tuple[float | None, int, list[str]]:
    """Row-weighted mean of the newest ``performance_window`` computable observations for the live champion."""
    obs = [
        o
        for o in state.performance
        if o.champion_version == state.champion_version and o.value is not None and o.n_rows > 0
    ]
    obs = obs[-cfg.performance_window :]
    rows = sum(o.n_rows for o in obs)
    if not obs:
        return None, 0, []
    value = sum(o.value * o.n_rows for o in obs if o.value is not None) / rows
    return value, rows, [o.partition for o in obs]


def _performance_trigger(state: PolicyState, cfg: RetrainingConfig) -> tuple[bool, str, dict[str, object]]:
    if cfg.performance_threshold is None and cfg.max_performance_drop is None:
        return False, "", {}
    value, rows, parts = _pooled_performance(state, cfg)
    if value is None or rows < cfg.performance_min_rows:
        return False, "", {}
    metric = cfg.performance_metric
    lower_better = metric in LOWER_IS_BETTER
    evidence: dict[str, object] = {"metric": metric, "value": value, "rows": rows, "partitions": parts}
    if cfg.performance_threshold is not None:
        bad = value > cfg.performance_threshold if lower_better else value < cfg.performance_threshold
        if bad:
            side = "above" if lower_better else "below"
            return (
                True,
                f"{metric} {value:.3f} on {rows} labeled rows is {side} {cfg.performance_threshold}",
                evidence,
            )
    if cfg.max_performance_drop is not None and state.champion_metric is not None:
        drop = (value - state.champion_metric) if lower_better else (state.champion_metric - value)
        if drop > cfg.max_performance_drop:
            return (
                True,
                f"{metric} {value:.3f} on {rows} labeled rows is {drop:.3f} worse than the champion's holdout "
                f"{state.champion_metric:.3f} (max drop {cfg.max_performance_drop})",
                evidence,
            )
    return False, "", evidence


def _freshness_trigger(state: PolicyState, now: datetime, cfg: RetrainingConfig) -> tuple[bool, str]:
    if cfg.max_model_age_days is None or state.champion_trained_at is None:
        return False, ""
    age = now - state.champion_trained_at
    if age > timedelta(days=cfg.max_model_age_days):
        return True, f"champion is {age.days} days old (max {cfg.max_model_age_days:g})"
    return False, ""


def _storm_hold(
    state: PolicyState, now: datetime, cfg: RetrainingConfig, *, manual: bool
) -> tuple[Hold | None, str]:
    failed = state.failed_challenger_data_through
    if failed is not None and failed == state.latest_partition:
        return (
            "failed_challenger",
            f"a challenger already failed on data through {failed}; waiting for new data",
        )
    if manual:
        return None, ""
    if (
        state.champion_version is not None
        and state.champion_data_through is not None
        and state.champion_data_through == state.latest_partition
    ):
        return "no_new_data", "the champion was trained on the newest partition already"
    past = sorted(t for t in state.retrain_times if t <= now)
    if past and now - past[-1] < timedelta(days=cfg.cooldown_days):
        until = past[-1] + timedelta(days=cfg.cooldown_days)
        return (
            "cooldown",
            f"cooldown after the retrain at {past[-1].isoformat()} lasts until {until.isoformat()}",
        )
    window_start = now - timedelta(days=cfg.window_days)
    recent = [t for t in past if t > window_start]
    if len(recent) >= cfg.max_retrains_per_window:
        return (
            "cap",
            f"{len(recent)} retrains in the last {cfg.window_days:g} days (cap {cfg.max_retrains_per_window})",
        )
    return None, ""


def decide_retrain(state: PolicyState, now: datetime, cfg: RetrainingConfig | None = None) -> Decision:
    """Whether to retrain now, and why. ``now`` must be timezone-aware, like every time in ``state``."""
    cfg = cfg or RetrainingConfig()
    if now.tzinfo is None:
        raise ValueError("decide_retrain needs a timezone-aware `now` (UTC)")
    trigger: Reason | None = None
    why = ""
    evidence: dict[str, object] = {}
    if state.manual_request is not None:
        trigger, why = "manual", f"manual request: {state.manual_request}"
    elif state.champion_version is None:
        trigger, why = "initial", "no champion yet"
    else:
        fired, why, evidence = _performance_trigger(state, cfg)
        if fired:
            trigger = "performance"
        else:
            perf_evidence = evidence
            fired, why, evidence = _drift_trigger(state, cfg)
            if fired:
                trigger = "drift"
            else:
                fired, why = _freshness_trigger(state, now, cfg)
                trigger = "freshness" if fired else None
                evidence = perf_evidence
    if trigger is None:
        return Decision(False, None, "no trigger fired", evidence=evidence)
    hold, hold_why = _storm_hold(state, now, cfg, manual=trigger == "manual")
    if hold is not None:
        return Decision(
            False, None, f"{trigger} trigger held back: {why}; {hold_why}", trigger, hold, evidence
        )
    return Decision(True, trigger, why, trigger, None, evidence)
