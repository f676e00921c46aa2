"""The engine of ``mlops-assets replay`` (:mod:`mlops_assets.commands.replay`): a backtest of the retraining
policy on the data's own partitions.

The partitions arrive one at a time, in time order, under a simulated clock (a partition "arrives" at the end of
its period). Each one is

1. scored by the champion live at that moment (test-then-train: before any retrain that sees it) and by the first
   model, never retrained (``static_roc_auc``); ``None`` where the partition holds one class only;
2. assessed for drift against the champion's reference profile by :func:`~.state.assess_partition` -- the very
   function behind the drift asset check;
3. handed, with everything seen so far, to :func:`~.policy.decide_retrain` -- the very function the sensors call
   with the wall clock -- which may retrain the champion. A retrain fits :func:`mlops_assets.training.pipeline.fit`
   on the newest ``train_window`` partitions (``model.train_window_partitions``; three years by default here, the
   yearly baseline's window) and stores a fresh reference profile, as ``trained_model`` does.

Features are computed once by the feature engine (point-in-time correct: a row only sees events before it, so one
pass equals partition-by-partition materialization). No Dagster runs, no MLflow: hundreds of partitions replay in
seconds. Not simulated: the data contract's quarantine and the release gates (every challenger is promoted), and
labels arrive with their partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.monitoring.performance import champion_metric
from mlops_assets.monitoring.policy import (
    DriftObservation,
    PerformanceObservation,
    PolicyState,
    decide_retrain,
)
from mlops_assets.monitoring.state import (
    assess_partition,
    data_version,
    feature_kinds,
)

DRIFT_CHECK = "features_match_champion_profile"
# Training window of a replayed retrain when `model.train_window_partitions` is not set: three years.
DEFAULT_WINDOW = {"day": 3 * 365, "week": 3 * 52, "month": 36, "year": 3}

Schedule = Callable[[str], bool]


@dataclass
class _Champion:
    version: str
    pipeline: Any
    profile: Any
    trained_at: datetime
    data_version: str
    columns: list[str]


@dataclass
class ReplayResult:
    """Everything a replay measured; :meth:`report` is the JSON of INTERFACE.md."""

    model_name: str
    window: int
    timeline: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    policy: str = "policy"

    @staticmethod
    def _mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None

    @property
    def mean_roc_auc(self) -> float | None:
        return self._mean([t["roc_auc"] for t in self.timeline])

    @property
    def mean_static_roc_auc(self) -> float | None:
        return self._mean([t["static_roc_auc"] for t in self.timeline])

    def report(self) -> dict[str, Any]:
        final = self.deployments[-1]["version"] if self.deployments else None
        live = [t["roc_auc"] for t in self.timeline if t["champion_version"] == final]
        return {
            "status": "ok",
            "partitions": len(self.timeline),
            "policy": self.policy,
            "train_window_partitions": self.window,
            "seconds": round(self.seconds, 2),
            "summary": {
                "mean_roc_auc": self.mean_roc_auc,
                "mean_static_roc_auc": self.mean_static_roc_auc,
                "retrains": len([r for r in self.retrains if r["reason"] != "initial"]),
                "retrains_by_reason": _count(r["reason"] for r in self.retrains),
                "drifted_partitions": sum(bool(t["drift"]) for t in self.timeline),
            },
            "checks": self.checks,
            "champion": (
                {"model_name": self.model_name, "version": final, "metrics": {"roc_auc": self._mean(live)}}
                if final
                else None
            ),
            "deployments": self.deployments,
            "retrains": self.retrains,
            "timeline": self.timeline,
        }


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def load_partitions(cfg: Any) -> tuple[pd.DataFrame, list[str]]:
    """The source's features (one engine pass) with a ``__partition__`` column, and the partition keys in order."""
    from mlops_assets.data.partitions import row_keys
    from mlops_assets.data.sources import read_source
    from mlops_assets.features import compute_features

    raw = read_source(cfg)
    frame = compute_features(cfg, raw, None)
    frame = frame.assign(
        __partition__=row_keys(frame[cfg.dataset.timestamp_column], cfg.partitions.freq).to_numpy()
    )
    return frame, sorted(frame["__partition__"].unique())


def replay(
    cfg: Any,
    frame: pd.DataFrame | None = None,
    *,
    window: int | None = None,
    schedule: Schedule | None = None,
    schedule_name: str = "schedule",
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay the partitions of ``cfg``'s data (or of ``frame``, features with a ``__partition__`` column).

    ``schedule`` replaces the policy by a fixed rule (retrain after partition ``key`` when it returns True), for
    comparisons such as "every January"; the drift checks still run and are reported.
    """
    from mlops_assets.data.partitions import key_window
    from mlops_assets.features import model_feature_columns
    from mlops_assets.steps.train import fit_with_profile
    from mlops_assets.training.pipeline import Split, TrainingError

    t0 = time.perf_counter()
    if frame is None:
        frame, keys = load_partitions(cfg)
    else:
        keys = sorted(frame["__partition__"].unique())
    freq = cfg.partitions.freq
    window = window or cfg.model.train_window_partitions or DEFAULT_WINDOW[freq]
    if len(keys) <= window:
        raise TrainingError(
            f"replay needs more than the training window of {window} partitions, the data has {len(keys)}"
        )
    label = cfg.dataset.label_column
    columns = model_feature_columns(cfg, [c for c in frame.columns if c != "__partition__"])
    numeric, categorical = feature_kinds(frame, columns)
    groups = {k: g for k, g in frame.groupby("__partition__", sort=True)}
    result = ReplayResult(cfg.model.name, window, policy=schedule_name if schedule else "policy")

    def train(last: int, version: int, at: datetime) -> _Champion:
        train_keys = keys[max(0, last - window + 1) : last + 1]
        data = pd.concat([groups[k] for k in train_keys], ignore_index=True)
        model, profile = fit_with_profile(cfg, data, Split(train_keys, [], []), numeric, categorical)
        return _Champion(str(version), model.pipeline, profile, at, train_keys[-1], model.feature_columns)

    def arrival(key: str) -> datetime:
        return key_window(key, freq)[1].to_pydatetime()

    first_at = arrival(keys[window - 1])
    champion = first = train(window - 1, 1, first_at)
    result.retrains.append(
        {"partition": keys[window - 1], "reason": "initial", "version": "1", "detail": "no champion yet"}
    )
    result.deployments.append({"version": "1", "at": first_at.isoformat(), "reason": "initial"})
    drift_history: list[DriftObservation] = []
    performance: list[PerformanceObservation] = []
    retrain_times: list[datetime] = [first_at]
    todo = keys[window:]
    for n, key in enumerate(todo):
        part = groups[key]
        now = arrival(key)
        probs = champion.pipeline.predict_proba(part[champion.columns])[:, 1]
        a = assess_partition(
            cfg, key, part, champion.profile, champion_version=champion.version, probabilities=probs
        )
        labeled = part[label].notna().to_numpy()
        static = probs if first is champion else first.pipeline.predict_proba(part[first.columns])[:, 1]
        static_auc = champion_metric(
            part.loc[labeled, label].to_numpy(), static[labeled], positive_label=cfg.dataset.positive_label
        )
        roc = champion_metric(
            part.loc[labeled, label].to_numpy(), probs[labeled], positive_label=cfg.dataset.positive_label
        )
        drift_history.append(a.drift_observation(now))
        performance.append(a.performance_observation())
        state = PolicyState(
            champion_version=champion.version,
            champion_trained_at=champion.trained_at,
            champion_data_version=champion.data_version,
            champion_metric=None,  # replayed models have no holdout: the drop-from-holdout trigger stays off
            latest_data_version=data_version(keys[: window + n + 1]),
            drift_history=drift_history,
            performance=performance,
            retrain_times=retrain_times,
        )
        reason: str | None
        if schedule is None:
            decision = decide_retrain(state, now, cfg.retraining)
            retrain, reason, detail = decision.retrain, decision.reason, decision.detail
        else:
            retrain, reason, detail = schedule(key), schedule_name, f"{schedule_name} after {key}"
        entry = {
            "partition": key,
            "champion_version": champion.version,
            "roc_auc": roc,
            "static_roc_auc": static_auc,
            "drift": a.drifted,
            "drift_strong": a.strong,
            "drifted_features": a.covariate.drifted_features,
            "prediction_drift": a.prediction.drifted if a.prediction else None,
            "label_drift": a.label.drifted if a.label else None,
            "rows": a.n_rows,
        }
        if schedule is None and decision.trigger is not None:
            entry["decision"] = detail
        result.timeline.append(entry)
        result.checks.append(
            {
                "asset": "features",
                "check": DRIFT_CHECK,
                "partition": key,
                "passed": not a.drifted,
                "severity": "WARN",
                "blocking": False,
            }
        )
        if retrain and n + 1 < len(todo):  # a retrain after the last partition would never be scored
            version = str(len(result.deployments) + 1)
            champion = train(window + n, int(version), now)
            retrain_times.append(now)
            result.retrains.append({"partition": key, "reason": reason, "version": version, "detail": detail})
            result.deployments.append({"version": version, "at": now.isoformat(), "reason": reason})
        if progress is not None:
            progress(n + 1, len(todo))
    result.seconds = time.perf_counter() - t0
    return result


def plot(
    result: ReplayResult, path: str | Path, *, baseline: ReplayResult | None = None, title: str | None = None
) -> None:
    """PNG: the champion's metric per partition (and a 12-partition rolling mean) beside the never-retrained model,
    retrains as vertical lines coloured by reason, drifted partitions as red ticks; optionally a ``baseline``
    replay (e.g. a fixed schedule) for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = pd.DataFrame(result.timeline)
    x = np.arange(len(tl))
    fig, ax = plt.subplots(figsize=(13, 5))

    def line(values: pd.Series, label: str, color: str, style: str = "-") -> None:
        v = pd.to_numeric(values, errors="coerce")
        ax.plot(x, v, color=color, alpha=0.18, lw=0.8)
        ax.plot(x, v.rolling(12, min_periods=3).mean(), color=color, lw=2, ls=style, label=label)

    mean = lambda v: f"{v:.3f}" if v is not None else "n/a"  # noqa: E731
    line(tl["static_roc_auc"], f"never retrained (mean {mean(result.mean_static_roc_auc)})", "#7f7f7f")
    if baseline is not None:
        bl = pd.DataFrame(baseline.timeline)
        n_b = len([r for r in baseline.retrains if r["reason"] != "initial"])
        line(
            bl["roc_auc"],
            f"{baseline.policy} ({n_b} retrains, mean {mean(baseline.mean_roc_auc)})",
            "#1b9e77",
            "--",
        )
    n_p = len([r for r in result.retrains if r["reason"] != "initial"])
    line(tl["roc_auc"], f"{result.policy} ({n_p} retrains, mean {mean(result.mean_roc_auc)})", "#d95f02")
    colors = {"drift": "#e7298a", "performance": "#7570b3", "freshness": "#66a61e", "manual": "#e6ab02"}
    pos = {k: i for i, k in enumerate(tl["partition"])}
    seen: set[str] = set()
    for r in result.retrains:
        if r["reason"] == "initial" or r["partition"] not in pos:
            continue
        c = colors.get(r["reason"], "#333333")
        ax.axvline(
            pos[r["partition"]] + 0.5,
            color=c,
            lw=1.2,
            ls=":",
            label=None if r["reason"] in seen else f"retrain: {r['reason']}",
        )
        seen.add(r["reason"])
    drifted = x[tl["drift"].astype(bool).to_numpy()]
    ax.scatter(
        drifted, np.full(len(drifted), 0.02), marker="|", color="#b2182b", s=60, label="drift detected"
    )
    step = max(1, len(tl) // 16)
    ax.set_xticks(x[::step], tl["partition"].iloc[::step], rotation=45, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ROC AUC of the live champion (test-then-train)")
    ax.set_title(
        title or f"replay of {result.model_name}: {len(tl)} partitions, training window {result.window}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
