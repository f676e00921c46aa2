"""The engine of ``mlops-assets replay`` (:mod:`mlops_assets.commands.replay`): a backtest of the retraining
policy on the data's own partitions, through the product's own training, gates and promotion.

The partitions arrive one at a time, in time order, under a simulated clock (a partition "arrives", labels
included, at the end of its period). Each one is

1. scored by the champion live at that moment (test-then-train: before any retrain that sees it) and by the first
   champion, never retrained (``static_roc_auc``); ``None`` where the partition holds one class only or no
   champion exists yet;
2. assessed for drift against the champion's reference profile by :func:`~.state.assess_partition` -- the very
   function behind the drift asset check;
3. handed, with everything seen so far, to :func:`~.policy.decide_retrain` -- the very function the sensors call
   with the wall clock -- which may ask for a retrain. A retrain is what ``trained_model`` and ``deployed_model``
   run, minus MLflow: :func:`~mlops_assets.steps.train.training_data_from_frame` on the partitions seen so far
   (windows counted back from the newest labeled partition), :func:`~mlops_assets.steps.train.train_challenger`
   (fit, decision threshold on the validation window, release gates on the holdout beside the live champion, refit
   and ``refit_agrees``, reference profile), then :func:`~mlops_assets.steps.promote.promote` against an in-memory
   model store. A challenger that fails a gate is not promoted: the champion stays, and storm control holds
   retrains on the same data back, as it does live.

So the champion at each step is the one the live system would have served. Features are computed once by the
feature engine (point-in-time correct: a row only sees events before it, so one pass equals partition-by-partition
materialization). No Dagster runs, no MLflow. Not simulated: the data contract's quarantine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from mlops_assets.monitoring.performance import champion_metric
from mlops_assets.monitoring.policy import (
    Decision,
    DriftObservation,
    PerformanceObservation,
    PolicyState,
    decide_retrain,
)
from mlops_assets.monitoring.state import assess_partition, newest_partition
from mlops_assets.registry.guard import Clearance, judge
from mlops_assets.registry.history import GateRecord

if TYPE_CHECKING:
    from mlops_assets.catalogue import GateResult
    from mlops_assets.config import MlopsConfig
    from mlops_assets.steps.train import Challenger

DRIFT_CHECK = "features_match_champion_profile"
PARTITION = "__partition__"
# Partitions the data must hold before the first champion is trained, when `model.train_window_partitions` is
# null (all history): three years. Otherwise the first champion waits for one training window of partitions.
DEFAULT_WINDOW = {"day": 3 * 365, "week": 3 * 52, "month": 36, "year": 3}

Schedule = Callable[[str], bool]


@dataclass
class _Deployment:
    previous_version: str | None
    deployed_at: str


@dataclass
class _Version:
    version: str


class MemoryModelStore:
    """The registry calls :func:`~mlops_assets.steps.promote.promote` makes, over versions held in memory and the
    replay's simulated clock: gate records per version, the guard's verdict on them (the registry's own
    :func:`~mlops_assets.registry.guard.judge`), the champion alias and the deployment history. It sends no
    alerts."""

    model_name = "replay"
    alerter = None

    def __init__(self) -> None:
        self.gate_results: dict[str, GateRecord] = {}
        self.champion_version: str | None = None
        self.deployments: list[dict[str, Any]] = []
        self.now: datetime | None = None

    def notify(self, kind: str, summary: str, **fields: Any) -> None:
        """The replay alerts nobody: its retrains are simulated."""

    def record_gate_results(self, version: str, results: list[GateResult]) -> None:
        at = "" if self.now is None else self.now.isoformat()
        self.gate_results[version] = GateRecord(
            self.model_name, version, at, None, [r.to_dict() for r in results]
        )

    def latest_gate_results(self, version: str) -> GateRecord | None:
        return self.gate_results.get(str(version))

    def clearance(self, version: str) -> Clearance:
        # One feature definition for the whole replay: the verdict is the gate record's.
        return judge(self.model_name, str(version), self.latest_gate_results(version), None, None)

    def champion(self) -> _Version | None:
        return None if self.champion_version is None else _Version(self.champion_version)

    def promote(
        self,
        version: str,
        *,
        reason: str,
        run_id: str | None,
        metrics: dict[str, float] | None = None,
        by: str | None = None,
    ) -> _Deployment:
        if self.now is None:
            raise RuntimeError("the replay's model store has no simulated time to deploy at")
        previous, self.champion_version = self.champion_version, str(version)
        at = self.now.isoformat()
        self.deployments.append({"version": str(version), "at": at, "reason": reason})
        return _Deployment(previous, at)


@dataclass
class _Champion:
    """A promoted version as the replay serves it."""

    version: str
    challenger: Challenger
    trained_at: datetime
    data_through: str | None
    metric: (
        float | None
    )  # its own holdout value of retraining.performance_metric (the drop trigger's baseline)

    @property
    def pipeline(self) -> Any:
        return self.challenger.deployed.pipeline

    @property
    def columns(self) -> list[str]:
        return self.challenger.deployed.feature_columns

    @property
    def profile(self) -> Any:
        return self.challenger.profile

    @property
    def trained_window(self) -> str:
        first, last = self.challenger.trained_window
        return f"{first}..{last}"


@dataclass
class ReplayResult:
    """Everything a replay measured; :meth:`report` is the JSON of INTERFACE.md."""

    model_name: str
    window: int | None  # model.train_window_partitions (None: all history)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    policy: str = "policy"
    # Every trained challenger by version, promoted or not (its deployed pipeline, gates, threshold, windows).
    challengers: dict[str, Challenger] = field(default_factory=dict)

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

    @property
    def retrain_count(self) -> int:
        """Retrains after the first champion's (each one a training run, promoted or not)."""
        return len([r for r in self.retrains if r["reason"] != "initial" and r["version"] is not None])

    @property
    def promotions(self) -> int:
        """Champions after the first one."""
        return max(0, len(self.deployments) - 1)

    def report(self) -> dict[str, Any]:
        final = self.deployments[-1] if self.deployments else None
        live = [t["roc_auc"] for t in self.timeline if final and t["champion_version"] == final["version"]]
        blocked = [r for r in self.retrains if r["version"] is not None and not r["promoted"]]
        return {
            "status": "ok",
            "partitions": len(self.timeline),
            "policy": self.policy,
            "train_window_partitions": self.window,
            "seconds": round(self.seconds, 2),
            "summary": {
                "mean_roc_auc": self.mean_roc_auc,
                "mean_static_roc_auc": self.mean_static_roc_auc,
                "retrains": self.retrain_count,
                "promotions": self.promotions,
                "blocked_challengers": len(blocked),
                # The first failing gate of each blocked challenger, in catalogue order (a blocked model is not
                # refit, so refit_agrees fails after any other gate: it is counted only when it alone blocked).
                "blocked_by_gate": _count(r["blocked_by"][0] for r in blocked if r["blocked_by"]),
                "retrains_by_reason": _count(r["reason"] for r in self.retrains if r["version"] is not None),
                "drifted_partitions": sum(bool(t["drift"]) for t in self.timeline),
            },
            "checks": self.checks,
            "champion": (
                {
                    "model_name": self.model_name,
                    "version": final["version"],
                    "trained_window": final["trained_window"],
                    "metrics": {"roc_auc": self._mean(live)},
                }
                if final
                else None
            ),
            "deployments": self.deployments,
            "retrains": self.retrains,
            "timeline": self.timeline,
        }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def load_partitions(cfg: MlopsConfig) -> tuple[pd.DataFrame, list[str]]:
    """The source's features (one engine pass) with a ``__partition__`` column, and the partition keys in order."""
    from mlops_assets.data.partitions import row_keys
    from mlops_assets.data.sources import read_source
    from mlops_assets.features import compute_features

    raw = read_source(cfg)
    frame = compute_features(cfg, raw, None)
    frame = frame.assign(
        **{PARTITION: row_keys(frame[cfg.dataset.timestamp_column], cfg.partitions.freq).to_numpy()}
    )
    return frame, sorted(frame[PARTITION].unique())


def with_window(cfg: MlopsConfig, window: int | None) -> MlopsConfig:
    """``cfg`` with ``model.train_window_partitions`` set to ``window`` (unchanged when None)."""
    if window is None:
        return cfg
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"train_window_partitions": window})})


def _gate_summary(results: list[GateResult]) -> dict[str, bool]:
    return {g.gate: g.passed for g in results}


def replay(
    cfg: MlopsConfig,
    frame: pd.DataFrame | None = None,
    *,
    window: int | None = None,
    schedule: Schedule | None = None,
    schedule_name: str = "schedule",
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay the partitions of ``cfg``'s data (or of ``frame``, features with a ``__partition__`` column).

    The first champion is trained when the data holds ``window`` partitions (``model.train_window_partitions``,
    which ``window`` overrides); the timeline starts with the next partition. ``schedule`` replaces the policy's
    triggers by a fixed rule (retrain after partition ``key`` when it returns True), for comparisons such as
    "every January": its challengers go through the same training, gates and promotion.
    """
    from mlops_assets.features import features_code_version
    from mlops_assets.steps.promote import PromotionRefused, promote
    from mlops_assets.steps.train import (
        ChampionForComparison,
        TrainingWaitingError,
        train_challenger,
        training_data_from_frame,
    )
    from mlops_assets.training.pipeline import TrainingError

    t0 = time.perf_counter()
    cfg = with_window(cfg, window)
    if frame is None:
        frame, keys = load_partitions(cfg)
    else:
        keys = sorted(frame[PARTITION].unique())
    freq = cfg.partitions.freq
    start = cfg.model.train_window_partitions or DEFAULT_WINDOW[freq]
    if len(keys) <= start:
        raise TrainingError(
            f"replay needs more than the training window of {start} partitions, the data has {len(keys)}"
        )
    label = cfg.dataset.label_column
    metric_name = cfg.retraining.performance_metric
    feature_version = features_code_version(cfg)
    frame = frame.sort_values(PARTITION, kind="stable")
    partition_of = frame[PARTITION].to_numpy()
    groups = {k: g for k, g in frame.groupby(PARTITION, sort=True)}
    result = ReplayResult(
        cfg.model.name, cfg.model.train_window_partitions, policy=schedule_name if schedule else "policy"
    )
    store = MemoryModelStore()
    champion: _Champion | None = None
    first: _Champion | None = None
    drift_history: list[DriftObservation] = []
    performance: list[PerformanceObservation] = []
    retrain_times: list[datetime] = []  # every training run that produced a version, promoted or not
    failed_data_through: str | None = None  # newest challenger after the champion, when it failed its gates
    versions = 0

    def retrain(i: int, reason: str, detail: str, now: datetime) -> dict[str, Any]:
        """Train, gate and promote on the partitions up to ``keys[i]``, as ``trained_model`` and
        ``deployed_model`` would with those partitions in the offline store."""
        nonlocal champion, first, failed_data_through, versions
        key = keys[i]
        record: dict[str, Any] = {"partition": key, "reason": reason, "version": None, "detail": detail}
        seen = frame.iloc[: int(np.searchsorted(partition_of, key, side="right"))]
        try:
            data = training_data_from_frame(cfg, seen)
        except TrainingWaitingError as err:
            # No version is registered while training waits: nothing for storm control to count.
            return record | {"promoted": False, "blocked_by": [], "waiting": str(err)}
        comparison = (
            None
            if champion is None
            else ChampionForComparison(
                champion.version,
                champion.pipeline,
                feature_version,
                champion.challenger.threshold.value if champion.challenger.threshold else None,
                champion.challenger.trained_window[1],
            )
        )
        challenger = train_challenger(cfg, data, feature_version=feature_version, champion=comparison)
        versions += 1
        version = str(versions)
        store.record_gate_results(version, challenger.gates)
        result.challengers[version] = challenger
        store.now = now
        retrain_times.append(now)
        split = challenger.model.split
        record |= {
            "version": version,
            "trained_window": "{}..{}".format(*challenger.trained_window),
            "evaluated_window": f"{split.train[0]}..{split.train[-1]}",
            "holdout_window": f"{split.holdout[0]}..{split.holdout[-1]}",
            "threshold": challenger.threshold.value if challenger.threshold else None,
            "holdout_roc_auc": challenger.metrics.get("roc_auc"),
            "gates": _gate_summary(challenger.gates),
            "blocked_by": [g.gate for g in challenger.gates if not g.passed],
        }
        try:
            promote(cast(Any, store), version, reason=reason, run_id=None)
        except PromotionRefused as err:
            failed_data_through = data.newest_partition
            blocked = next(g for g in challenger.gates if not g.passed)
            return record | {
                "promoted": False,
                "refused": str(err),
                "blocked_message": f"{blocked.gate}: {blocked.message}",
            }
        failed_data_through = None
        champion = _Champion(
            version, challenger, now, data.newest_partition, challenger.metrics.get(metric_name)
        )
        if first is None:
            first = champion
        store.deployments[-1]["trained_window"] = champion.trained_window
        return record | {"promoted": True}

    def arrival(key: str) -> datetime:
        from mlops_assets.data.partitions import key_window

        return key_window(key, freq)[1].to_pydatetime()

    todo = range(start - 1, len(keys))
    for i in todo:
        key = keys[i]
        now = arrival(key)
        scored = i >= start  # the partitions before are the history the first champion is trained on
        entry: dict[str, Any] = {"partition": key, "champion_version": champion.version if champion else None}
        if scored and champion is not None:
            part = groups[key]
            probs = champion.pipeline.predict_proba(part[champion.columns])[:, 1]
            a = assess_partition(
                cfg, key, part, champion.profile, champion_version=champion.version, probabilities=probs
            )
            labeled = part[label].notna().to_numpy()
            y = part.loc[labeled, label].to_numpy()
            # The first champion, never retrained: what serving without a retraining loop would score.
            static_model = first if first is not None else champion
            static = (
                probs
                if static_model is champion
                else static_model.pipeline.predict_proba(part[static_model.columns])[:, 1]
            )
            entry |= {
                "roc_auc": champion_metric(y, probs[labeled], positive_label=cfg.dataset.positive_label),
                "static_roc_auc": champion_metric(
                    y, static[labeled], positive_label=cfg.dataset.positive_label
                ),
                "drift": a.drifted,
                "drift_strong": a.strong,
                "drifted_features": a.covariate.drifted_features,
                "prediction_drift": a.prediction.drifted if a.prediction else None,
                "label_drift": a.label.drifted if a.label else None,
                "rows": a.n_rows,
            }
            drift_history.append(a.drift_observation(now))
            performance.append(a.performance_observation())
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
        elif scored:
            # No champion serves yet: nothing scores the partition and the drift check has no reference.
            entry |= {
                "roc_auc": None,
                "static_roc_auc": None,
                "drift": False,
                "drift_strong": False,
                "drifted_features": [],
                "prediction_drift": None,
                "label_drift": None,
                "rows": len(groups[key]),
            }
        state = PolicyState(
            champion_version=champion.version if champion else None,
            champion_trained_at=champion.trained_at if champion else None,
            champion_data_through=champion.data_through if champion else None,
            champion_metric=champion.metric if champion else None,
            latest_partition=newest_partition(keys[: i + 1]),
            drift_history=drift_history,
            performance=performance,
            retrain_times=retrain_times,
            failed_challenger_data_through=failed_data_through,
        )
        decision: Decision = decide_retrain(state, now, cfg.retraining)
        if schedule is not None and champion is not None:
            # The fixed rule replaces the triggers; storm control's "same data after a failed challenger" still
            # applies (the same data would give the same challenger).
            due = schedule(key) and failed_data_through != state.latest_partition
            decision = Decision(
                due,
                None,
                f"{schedule_name} after {key}" if due else f"{schedule_name}: not due after {key}",
            )
        reason = decision.reason or (schedule_name if decision.retrain else None)
        entry["decision"] = {
            "retrain": decision.retrain,
            "trigger": decision.trigger,
            "held_by": decision.held_by,
            "detail": decision.detail,
        }
        # A retrain after the last partition would never be scored.
        if decision.retrain and reason is not None and i + 1 < len(keys):
            record = retrain(i, reason, decision.detail, now)
            result.retrains.append(record)
            entry["retrain"] = {
                k: record.get(k)
                for k in ("version", "promoted", "blocked_by", "trained_window", "waiting")
                if k in record
            }
        if scored:
            result.timeline.append(entry)
        if progress is not None:
            progress(i - start + 2, len(todo))
    result.deployments = store.deployments
    result.seconds = time.perf_counter() - t0
    return result


def plot(
    result: ReplayResult, path: str | Path, *, baseline: ReplayResult | None = None, title: str | None = None
) -> None:
    """PNG: the champion's metric per partition (and a 12-partition rolling mean) beside the never-retrained model,
    promoted retrains as vertical lines coloured by reason, blocked challengers as crosses, drifted partitions as
    red ticks; optionally a ``baseline`` replay (e.g. a fixed schedule) for comparison."""
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
        n_b = baseline.retrain_count
        line(
            bl["roc_auc"],
            f"{baseline.policy} ({n_b} retrains, mean {mean(baseline.mean_roc_auc)})",
            "#1b9e77",
            "--",
        )
    line(
        tl["roc_auc"],
        f"{result.policy} ({result.retrain_count} retrains, mean {mean(result.mean_roc_auc)})",
        "#d95f02",
    )
    colors = {"drift": "#e7298a", "performance": "#7570b3", "freshness": "#66a61e", "manual": "#e6ab02"}
    pos = {k: i for i, k in enumerate(tl["partition"])}
    seen: set[str] = set()
    blocked = []
    for r in result.retrains:
        if r["reason"] == "initial" or r["partition"] not in pos or r["version"] is None:
            continue
        if not r["promoted"]:
            blocked.append(pos[r["partition"]] + 0.5)
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
    if blocked:
        ax.scatter(
            blocked,
            np.full(len(blocked), 0.97),
            marker="x",
            color="#333333",
            s=30,
            label="challenger blocked by a release gate",
        )
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
