"""Service metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Request counts by endpoint and status, a request-latency histogram by endpoint, a batch-size histogram, prediction
and feedback counters, model swaps and refusals, and the served model version as an info-style gauge. Updated
from the event loop and the batch worker; a lock keeps each update and each scrape consistent.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, cum = [], 0
        sep = "," if labels else ""
        for le, c in zip(self.buckets, self.counts, strict=False):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{le:g}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.sum:.6f}")
        out.append(f"{name}_count{braces} {self.n}")
        return out


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServiceMetrics:
    """Counters and histograms of one service process."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.batch_rows = _Histogram(BATCH_BUCKETS)
        self.predictions = 0
        self.labels = 0
        self.swaps = 0
        self.refused: dict[str, int] = defaultdict(int)
        self.model_version: str | None = None
        # The prediction log's state, read at each scrape (set by the service).
        self.prediction_log_status: Callable[[], dict[str, Any]] | None = None
        # The probation watch's counts, read at each scrape (set by the service).
        self.probation_status: Callable[[], dict[str, Any]] | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, method, status)] += 1
            h = self.latency.get(endpoint)
            if h is None:
                h = self.latency[endpoint] = _Histogram(LATENCY_BUCKETS)
            h.observe(seconds)

    def observe_batch(self, rows: int) -> None:
        with self._lock:
            self.batch_rows.observe(rows)
            self.predictions += rows

    def observe_labels(self, n: int) -> None:
        with self._lock:
            self.labels += n

    def model_loaded(self, version: str) -> None:
        with self._lock:
            if self.model_version is not None and self.model_version != version:
                self.swaps += 1
            self.model_version = version

    def model_refused(self, version: str) -> None:
        with self._lock:
            self.refused[version] += 1

    def render(self) -> str:
        """The exposition text."""
        m = _escape(self.model_name)
        with self._lock:
            lines = [
                "# HELP mlops_requests_total HTTP requests by endpoint, method and status code.",
                "# TYPE mlops_requests_total counter",
            ]
            for (ep, method, status), n in sorted(self.requests.items()):
                lines.append(
                    f'mlops_requests_total{{endpoint="{_escape(ep)}",method="{method}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP mlops_request_duration_seconds Request latency in seconds, by endpoint.",
                "# TYPE mlops_request_duration_seconds histogram",
            ]
            for ep, h in sorted(self.latency.items()):
                lines += h.lines("mlops_request_duration_seconds", f'endpoint="{_escape(ep)}"')
            lines += [
                "# HELP mlops_batch_rows Rows per model call (request batching).",
                "# TYPE mlops_batch_rows histogram",
                *self.batch_rows.lines("mlops_batch_rows", ""),
                "# HELP mlops_predictions_total Rows predicted.",
                "# TYPE mlops_predictions_total counter",
                f"mlops_predictions_total {self.predictions}",
                "# HELP mlops_feedback_labels_total Labels attached through /feedback.",
                "# TYPE mlops_feedback_labels_total counter",
                f"mlops_feedback_labels_total {self.labels}",
                "# HELP mlops_model_swaps_total Champion changes picked up by the running service.",
                "# TYPE mlops_model_swaps_total counter",
                f"mlops_model_swaps_total {self.swaps}",
                "# HELP mlops_model_refused_total Champion versions the service refused to load, by version.",
                "# TYPE mlops_model_refused_total counter",
            ]
            for v, n in sorted(self.refused.items()):
                lines.append(f'mlops_model_refused_total{{model="{m}",version="{_escape(v)}"}} {n}')
            lines += [
                "# HELP mlops_model_info The model version being served (value 1).",
                "# TYPE mlops_model_info gauge",
            ]
            if self.model_version is not None:
                lines.append(f'mlops_model_info{{model="{m}",version="{_escape(self.model_version)}"}} 1')
            if self.prediction_log_status is not None:
                st = self.prediction_log_status()
                lines += [
                    "# HELP mlops_prediction_log_degraded 1 while predictions wait to be stored (database away).",
                    "# TYPE mlops_prediction_log_degraded gauge",
                    f"mlops_prediction_log_degraded {int(st['status'] != 'ok')}",
                    "# HELP mlops_prediction_log_spilled_files Batches kept in local files until the database is back.",
                    "# TYPE mlops_prediction_log_spilled_files gauge",
                    f"mlops_prediction_log_spilled_files {st.get('spilled_files', 0)}",
                ]
            if self.probation_status is not None:
                pr = self.probation_status()
                lines += [
                    "# HELP mlops_probation_active 1 while a new champion is on probation.",
                    "# TYPE mlops_probation_active gauge",
                    f"mlops_probation_active {pr['active']}",
                    "# HELP mlops_probations_total Probations of new champions, by outcome "
                    "(started, passed, rolled_back, superseded, rollback_failed).",
                    "# TYPE mlops_probations_total counter",
                ]
                for outcome in ("started", "passed", "rolled_back", "superseded", "rollback_failed"):
                    lines.append(f'mlops_probations_total{{outcome="{outcome}"}} {pr[outcome]}')
        return "\n".join(lines) + "\n"
