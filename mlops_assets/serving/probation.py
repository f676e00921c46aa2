"""Probation of a new champion: the service watches the model it just swapped in and rolls it back on a breach.

Every ``/predict`` answer is noted (:meth:`ProbationWatch.observe`: one append to an array of doubles, the only
per-request cost) whether or not a probation runs, so that the p95 latency of the champion being replaced is known
at the moment of the swap; the watch thread cuts that array into time-stamped chunks every check interval, so a
window is judged to the check interval's resolution, with numpy, off the request path. When the service swaps to a
newer version than the one it served, a probation starts (:meth:`ProbationWatch.begin`); a thread of its own judges the sliding window every ``check_interval_seconds``
(settings: :class:`~mlops_assets.config.ProbationConfig`). On a breach it moves the champion back to the version
it replaced through :meth:`ModelRegistry.move_champion` (kind ``rolled_back``: the guard's clearance and sha256
checks, the history row with the reason and the evidence, the alert), then serves that model again at once (the
poll loop finds the alias where the service already is). A move refused because the champion changed meanwhile
(:class:`~mlops_assets.registry.errors.ChampionChangedError`: another process or a person acted first) ends the
probation as ``superseded``. A swap to an older version (a rollback, by this service or anyone) starts none.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlops_assets.config import ProbationConfig
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.serving.model import ModelSlot, ServedModel

log = logging.getLogger("mlops_assets.serving")
LabeledScores = Callable[[str, "float | None", int], tuple[list[int], list[float]]]


@dataclass(frozen=True)
class WindowStats:
    """The ``/predict`` answers of one window: how many, how many were 5xx, and the p95 latency of the others."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window_stats(values: np.ndarray) -> WindowStats:
    """Stats of answer ``values``: latencies in seconds, -1 for a 5xx."""
    errors = int(np.count_nonzero(values < 0))
    latencies = values[values >= 0]
    p95 = None
    if len(latencies):
        # Nearest rank: the smallest latency with at least 95% of the answers at or below it.
        k = -(-95 * len(latencies) // 100) - 1
        p95 = float(np.partition(latencies, k)[k]) * 1000.0
    return WindowStats(len(values), errors, p95)


_PUBLIC_REASONS = {
    "superseded": "the champion was moved by someone else (another service process, a person) during the probation",
    "rollback_failed": "the model breached its probation but the registry refused the rollback; see the service log",
}


def _ignore(status: int, seconds: float) -> None:
    """``observe`` with probation disabled."""


def _ms(value: float | None) -> float | None:
    """A latency in milliseconds as reported (/health, the history's evidence): to 0.1 ms."""
    return None if value is None else round(value, 1)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil's (1982) standard error of a ROC AUC estimated on ``positives`` and ``negatives``."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    return float(np.sqrt(max(var, 0.0)))


# How many standard errors of the difference a live ROC AUC drop must also exceed: the check repeats every few
# seconds over a probation, on few labels; at 3 a healthy model is rolled back by chance about once in 700 checks.
LIVE_DROP_Z = 3.0


def live_auc_breach(
    y_new: list[int],
    p_new: list[float],
    y_old: list[int],
    p_old: list[float],
    max_drop: float,
    min_labels: int,
) -> tuple[str | None, dict[str, Any]]:
    """Whether the new champion's live ROC AUC (labels ``y_new`` of its scores ``p_new``) fell below the previous
    champion's (``y_old``, ``p_old``) by more than ``max_drop`` and by more than :data:`LIVE_DROP_Z` standard errors
    of the difference; (the breach's description or None, the figures). Not judged with fewer than ``min_labels``
    labels of both classes on either side."""
    from sklearn.metrics import roc_auc_score

    figures: dict[str, Any] = {"labels": len(y_new), "previous_labels": len(y_old)}
    if min(len(y_new), len(y_old)) < min_labels or len(set(y_new)) < 2 or len(set(y_old)) < 2:
        return None, figures
    live, before = float(roc_auc_score(y_new, p_new)), float(roc_auc_score(y_old, p_old))
    se = np.hypot(
        auc_standard_error(live, sum(y_new), len(y_new) - sum(y_new)),
        auc_standard_error(before, sum(y_old), len(y_old) - sum(y_old)),
    )
    figures |= {
        "live_roc_auc": round(live, 4),
        "previous_live_roc_auc": round(before, 4),
        "drop_standard_error": round(float(se), 4),
    }
    drop = before - live
    if drop > max_drop and drop > LIVE_DROP_Z * se:
        return (
            f"live ROC AUC {live:.3f} on {len(y_new)} labeled predictions, {drop:.3f} below the previous "
            f"champion's {before:.3f} (on its newest {len(y_old)}); the limit is a drop of {max_drop:g} and "
            f"{LIVE_DROP_Z:g} standard errors ({LIVE_DROP_Z * se:.3f})"
        ), figures
    return None, figures


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


@dataclass
class Probation:
    """One probation: ``version`` replaced ``previous`` (kept loaded to roll back to) at ``started``."""

    version: str
    previous: ServedModel
    started: float  # perf_counter
    ends: float
    baseline_p95_ms: float | None
    baseline_requests: int
    limit_ms: float | None
    started_at: float = field(default_factory=time.time)  # wall clock, for /health
    state: str = "watching"  # watching | passed | rolled_back | superseded | rollback_failed
    last: WindowStats | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    labels_checked: float = 0.0  # perf_counter of the last live-metric check
    live: dict[str, Any] = field(default_factory=dict)  # the last live-metric check's figures


class ProbationWatch:
    """Watches each new champion of ``slot`` per ``settings``; rolls back through ``registry`` on a breach."""

    def __init__(
        self,
        settings: ProbationConfig,
        registry: ModelRegistry,
        slot: ModelSlot,
        *,
        on_rollback: Callable[[ServedModel], None] | None = None,
        on_failure: Callable[[str, str], None] | None = None,
        labeled: LabeledScores | None = None,
    ):
        self.settings = settings
        # (version, since (epoch seconds) or None, limit) -> (labels, probabilities) of its newest labeled
        # predictions: the live metric's source (the prediction log); None: not judged.
        self.labeled = labeled
        self.registry = registry
        self.slot = slot
        self.on_rollback = on_rollback  # the model served again after a rollback (for metrics)
        self.on_failure = on_failure  # (version, why): a breach this service could not roll back
        self.by = f"prediction-service probation ({socket.gethostname()}:{os.getpid()})"
        # The request path appends each answer to the current chunk (a latency in seconds, -1 for a 5xx); the watch
        # thread cuts it off every check interval (and at each swap) into ``_chunks``, stamped with the cut time.
        self._buf = array("d")
        self._chunks: deque[tuple[float, np.ndarray]] = deque()
        self._cut_lock = threading.Lock()
        if not settings.enabled:
            self.observe = _ignore  # type: ignore[method-assign]
        self._lock = threading.Lock()
        self.current: Probation | None = None  # the running probation, or the last one
        self.counts = {"started": 0, "passed": 0, "rolled_back": 0, "superseded": 0, "rollback_failed": 0}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ the request path
    def observe(self, status: int, seconds: float) -> None:
        """One ``/predict`` answer (4xx are the client's: not counted). One array append: no clock, no lock."""
        if status < 400:
            self._buf.append(seconds)
        elif status >= 500:
            self._buf.append(-1.0)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.settings.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="champion-probation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def begin(self, new: ServedModel, old: ServedModel | None) -> None:
        """The service swapped ``old`` for ``new``: start a probation when ``new`` is a newer version."""
        s = self.settings
        if not s.enabled or old is None or _version_key(new.version) <= _version_key(old.version):
            return
        now = self._cut()  # what came before belongs to the replaced model
        base = self._stats(now - s.window_seconds, now)
        baseline = base.p95_ms if base.requests - base.errors >= s.min_requests else None
        limits = []
        if s.max_p95_latency_ms is not None:
            limits.append(s.max_p95_latency_ms)
        if s.max_p95_latency_ratio is not None and baseline is not None:
            limits.append(max(s.max_p95_latency_ratio * baseline, s.latency_floor_ms))
        p = Probation(
            version=new.version,
            previous=old,
            started=now,
            ends=now + s.duration_seconds,
            baseline_p95_ms=baseline,
            baseline_requests=base.requests,
            limit_ms=min(limits) if limits else None,
        )
        running = self.current
        if running is not None and running.state == "watching":
            # A newer champion arrived before this one finished its probation: this one is judged no further.
            self._finish(running, "superseded", f"version {new.version} replaced it during its probation")
        with self._lock:
            self.current = p
            self.counts["started"] += 1
        log.info(
            "probation of model '%s' version %s for %g s (replaced version %s; p95 limit %s, previous p95 %s over "
            "%d requests; error rate limit %g)",
            new.model_name,
            new.version,
            s.duration_seconds,
            old.version,
            "none" if p.limit_ms is None else f"{p.limit_ms:.1f} ms",
            "unmeasured" if baseline is None else f"{baseline:.1f} ms",
            base.requests,
            s.max_error_rate,
        )
        self._wake.set()

    def _cut(self) -> float:
        """Close the current chunk (stamped now) and drop chunks older than two windows; the cut time."""
        with self._cut_lock:
            now = time.perf_counter()
            old, self._buf = self._buf, array("d")
            # Copied in C with the GIL held: no append can land in ``old`` while numpy reads it.
            self._chunks.append((now, np.array(old, dtype=np.float64)))
            horizon = now - 2 * self.settings.window_seconds
            while self._chunks and self._chunks[0][0] < horizon:
                self._chunks.popleft()
            return now

    def _stats(self, since: float, until: float) -> WindowStats:
        """The answers of the chunks cut in ``(since, until]``."""
        parts = [v for t, v in list(self._chunks) if since < t <= until]
        return window_stats(np.concatenate(parts) if parts else np.empty(0))

    # ------------------------------------------------------------------------------------ judging
    def _run(self) -> None:
        interval = self.settings.check_interval_seconds
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._cut()
            try:
                self.check_once()
            except Exception as err:  # never let the watch die: logged, judged again at the next tick
                log.error("probation check failed: %s: %s", type(err).__name__, err, exc_info=err)

    def check_once(self) -> str | None:
        """Judge the running probation once; its state afterwards (None: none is running)."""
        p = self.current
        if p is None or p.state != "watching":
            return None
        served = self.slot.current
        if served is None or served.version != p.version:
            # The alias moved on by other hands while it was watched: nothing left to judge.
            self._finish(p, "superseded", f"the service serves version {served.version if served else None}")
            return p.state
        s = self.settings
        now = self._chunks[-1][0] if self._chunks else time.perf_counter()
        stats = self._stats(max(p.started, now - s.window_seconds), now)
        p.last = stats
        if stats.requests >= s.min_requests:
            breach = self._breach(p, stats)
            if breach is not None:
                self._roll_back(p, stats, breach)
                return p.state
        if now - p.labels_checked >= s.label_check_interval_seconds:
            p.labels_checked = now
            breach = self._live_metric_breach(p)
            if breach is not None:
                self._roll_back(p, stats, breach)
                return p.state
        if now >= p.ends:
            self._finish(p, "passed", None)
            log.info(
                "model '%s' version %s completed its probation (%g s; last window: %d requests, p95 %s, "
                "error rate %.2f%%)",
                self.registry.model_name,
                p.version,
                s.duration_seconds,
                stats.requests,
                "n/a" if stats.p95_ms is None else f"{stats.p95_ms:.1f} ms",
                100 * stats.error_rate,
            )
        return p.state

    def _breach(self, p: Probation, stats: WindowStats) -> str | None:
        s = self.settings
        if stats.error_rate > s.max_error_rate:
            return (
                f"error rate {100 * stats.error_rate:.1f}% ({stats.errors} of {stats.requests} requests answered "
                f"5xx) above the limit {100 * s.max_error_rate:g}%"
            )
        if p.limit_ms is not None and stats.p95_ms is not None and stats.p95_ms > p.limit_ms:
            how = []
            if s.max_p95_latency_ms is not None:
                how.append(f"absolute {s.max_p95_latency_ms:g} ms")
            if p.baseline_p95_ms is not None and s.max_p95_latency_ratio is not None:
                how.append(
                    f"{s.max_p95_latency_ratio:g} x the previous champion's p95 {p.baseline_p95_ms:.1f} ms, "
                    f"floor {s.latency_floor_ms:g} ms"
                )
            return f"p95 latency {stats.p95_ms:.1f} ms above the limit {p.limit_ms:.1f} ms ({'; '.join(how)})"
        return None

    def _live_metric_breach(self, p: Probation) -> str | None:
        """The new model's ROC AUC on the labels of its predictions made during the probation, against the previous
        champion's on its newest labeled predictions (up to ten times ``min_labels``): see :func:`live_auc_breach`."""
        s = self.settings
        if self.labeled is None or s.max_live_auc_drop is None:
            return None
        y_new, p_new = self.labeled(p.version, p.started_at, 100 * s.min_labels)
        y_old, p_old = (
            self.labeled(p.previous.version, None, 10 * s.min_labels)
            if len(y_new) >= s.min_labels
            else ([], [])
        )
        breach, p.live = live_auc_breach(y_new, p_new, y_old, p_old, s.max_live_auc_drop, s.min_labels)
        return breach

    def _roll_back(self, p: Probation, stats: WindowStats, breach: str) -> None:
        from mlops_assets.registry.errors import (
            ChampionChangedError,
            RegistryError,
            RegistryUnavailableError,
        )

        s = self.settings
        elapsed = time.perf_counter() - p.started
        evidence = {
            "p95_ms": _ms(stats.p95_ms),
            "p95_limit_ms": _ms(p.limit_ms),
            "previous_p95_ms": _ms(p.baseline_p95_ms),
            "requests": stats.requests,
            "errors": stats.errors,
            "error_rate": round(stats.error_rate, 4),
            "error_rate_limit": s.max_error_rate,
            "window_s": s.window_seconds,
            "after_s": round(elapsed, 1),
            **p.live,
        }
        reason = (
            f"automatic rollback: version {p.version} breached its probation {elapsed:.0f} s after the swap: "
            f"{breach}; last {s.window_seconds:g} s: {stats.requests} requests, p95 "
            + ("n/a" if stats.p95_ms is None else f"{stats.p95_ms:.1f} ms")
            + f", error rate {100 * stats.error_rate:.1f}%"
        )
        try:
            self.registry.move_champion(
                p.previous.version,
                reason=reason,
                by=self.by,
                kind="rolled_back",
                expected_champion=p.version,
            )
        except ChampionChangedError as err:
            # Someone else acted first (another service process, a person): their move stands.
            log.info(
                "probation of version %s: not rolled back here, the champion changed: %s", p.version, err
            )
            self._finish(p, "superseded", str(err), evidence)
            return
        except RegistryUnavailableError as err:
            log.error(
                "probation of version %s breached (%s) but the registry is unreachable: %s",
                p.version,
                breach,
                err,
            )
            return  # tried again at the next check
        except RegistryError as err:
            log.error(
                "probation of version %s breached (%s) and the rollback was refused: %s",
                p.version,
                breach,
                err,
            )
            self._finish(p, "rollback_failed", f"{reason}; rollback refused: {err}", evidence)
            if self.on_failure is not None:
                self.on_failure(
                    p.version, f"{reason}; the rollback to version {p.previous.version} was refused: {err}"
                )
            return
        # Serve the replaced model at once (it was verified when loaded); the poll loop will find the alias on it.
        if self.slot.current is not None and self.slot.current.version == p.version:
            self.slot.current = p.previous
            self.slot.refusal = None
        log.warning("%s; serving version %s again", reason, p.previous.version)
        self._finish(p, "rolled_back", reason, evidence)
        if self.on_rollback is not None:
            self.on_rollback(p.previous)

    def _finish(
        self, p: Probation, state: str, reason: str | None, evidence: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            if p.state != "watching":  # finished already (a newer champion superseded it meanwhile)
                return
            p.state = state
            p.reason = reason
            p.evidence = evidence or {}
            self.counts[state] += 1

    # ------------------------------------------------------------------------------------ reporting
    def status(self) -> dict[str, Any] | None:
        """The running (or last) probation for ``/health``; None when there was none."""
        p = self.current
        if p is None:
            return None
        out: dict[str, Any] = {
            "state": p.state,
            "version": p.version,
            "previous_version": p.previous.version,
            "started_at": round(p.started_at, 3),
            "p95_limit_ms": _ms(p.limit_ms),
            "previous_p95_ms": _ms(p.baseline_p95_ms),
            "max_error_rate": self.settings.max_error_rate,
        }
        if p.state == "watching":
            out["ends_in_s"] = round(max(0.0, p.ends - time.perf_counter()), 1)
        if p.live:
            out["live"] = p.live  # the last live-metric check on feedback labels
        if p.last is not None:
            out["window"] = {
                "requests": p.last.requests,
                "p95_ms": _ms(p.last.p95_ms),
                "error_rate": round(p.last.error_rate, 4),
            }
        # /health needs no token: the reason the service wrote itself, never a registry error's own text (the
        # service log has it).
        if p.state == "rolled_back":
            out["reason"] = p.reason
            out["evidence"] = p.evidence
        elif p.state in _PUBLIC_REASONS:
            out["reason"] = _PUBLIC_REASONS[p.state]
        return out

    def metrics(self) -> dict[str, Any]:
        p = self.current
        with self._lock:
            counts = dict(self.counts)
        return {"active": int(p is not None and p.state == "watching"), **counts}
