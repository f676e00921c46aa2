"""Shadow scoring in the prediction service: a challenger in shadow (``rollout.mode: shadow``) scores every
request the champion answers, off the request path, and what it answered is logged beside the champion's
prediction (``shadow_predictions``, keyed by the champion's prediction id) for the ``shadow_comparison`` check.

The service answers with the champion only: a batch hands its model inputs to :meth:`ShadowScorer.offer`, which
returns at once; one thread hands the queued batches to a process of the shadow's own, which scores them, and logs
what it answered. The model call runs in that process, not beside the requests: in the service's process it would
take the interpreter lock from them for as long as the champion's own call takes, and double every answer's time on
a busy service. When the queue is full (the shadow is slower than the traffic) the batch is skipped and counted,
never waited for; a shadow that raises (or whose process dies) is logged as an error row, never a failed request.
The watcher thread polls the registry's running shadow and loads it through the service's own verified load.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_assets.serving.prediction_log import PredictionLog, shadow_predictions

if TYPE_CHECKING:
    from mlops_assets.registry.history import Shadow
    from mlops_assets.serving.model import ServedModel

log = logging.getLogger("mlops_assets.serving")


@dataclass
class _Batch:
    shadow: ServedModel
    champion_version: str
    X: Any  # the champion's inputs (reused when the shadow reads the same columns)
    rebuild: Callable[[ServedModel], Any] | None  # the shadow's own inputs, when its columns differ
    ids: list[str]
    champion_ms: float
    at: datetime


class ShadowScorer:
    """Scores the champion's batches with the running shadow (see the module docstring)."""

    def __init__(
        self,
        running: Callable[[], Shadow | None],
        load: Callable[[str], ServedModel],
        make_log: Callable[[], PredictionLog],
        *,
        poll_interval: float = 2.0,
        max_queued_batches: int = 64,
        sample: float = 1.0,
    ):
        self.sample = sample
        self._random = random.Random()
        self._running = running
        self._load = load
        self._make_log = make_log
        self.poll_interval = poll_interval
        self.model: ServedModel | None = None
        self.shadow_id: int | None = None
        self._seen: int | None = None  # the shadow handled last (loaded or refused)
        self.refusal: str | None = None
        self.log: PredictionLog | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._pool_version: str | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=max_queued_batches)
        self.scored = 0
        self.errors = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------ the running shadow
    def check_once(self) -> None:
        shadow = self._running()
        if shadow is None:
            if self.model is not None:
                log.info("shadow version %s ended; scoring with the champion only", self.model.version)
            self.model, self.shadow_id, self._seen = None, None, None
            return
        if shadow.id == self._seen:
            return
        self._seen = shadow.id
        try:
            model = self._load(shadow.version)
        except Exception as err:  # refused by the verified load, or the registry failed: not scored, reported
            self.refusal = f"shadow version {shadow.version} not loaded: {type(err).__name__}: {err}"
            log.error(self.refusal)
            self.model, self.shadow_id = None, None
            return
        if self.log is None:
            self.log = self._make_log()
        # Its process starts now (imports and the model take seconds), not on the first request's batch.
        warm = np.full((1, len(model.columns)), np.nan)
        if model.numeric_only:
            self._process(model).submit(_score_in_child, model.version, warm)
        else:
            self._process(model)
        self.refusal = None
        self.model, self.shadow_id = model, shadow.id
        self.scored = self.errors = self.skipped = 0
        log.info("scoring version %s in shadow of the champion", model.version)

    def start(self) -> None:
        for target, name in ((self._watch, "shadow-watcher"), (self._work, "shadow-scorer")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.check_once()
            except Exception as err:  # the history store is unreachable: keep the current shadow, look again
                log.error("shadow watcher: cannot read the running shadow: %s: %s", type(err).__name__, err)

    def close(self, drain_seconds: float = 10.0) -> None:
        """Stop watching; the batches already queued are scored and logged (for up to ``drain_seconds``)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=drain_seconds)
        for t in self._threads:
            t.join(timeout=drain_seconds)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.log is not None:
            self.log.close()

    # ------------------------------------------------------------------------------------ scoring
    def offer(
        self,
        champion: ServedModel,
        X: Any,
        rebuild: Callable[[ServedModel], Any],
        ids: list[str],
        champion_ms: float,
        at: datetime,
    ) -> None:
        """Queue one answered batch for the shadow (if one runs, and the batch is in its sample); never blocks."""
        shadow = self.model
        if shadow is None or (self.sample < 1 and self._random.random() >= self.sample):
            return
        same = shadow.columns == champion.columns and shadow.numeric_only == champion.numeric_only
        batch = _Batch(shadow, champion.version, X, None if same else rebuild, ids, champion_ms, at)
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.skipped += len(ids)

    def _work(self) -> None:
        while True:
            try:
                batch = self._queue.get(timeout=self.poll_interval)
            except queue.Empty:
                if self.model is None and self._pool is not None:  # the shadow ended: its process goes too
                    self._pool.shutdown(wait=True, cancel_futures=True)
                    self._pool, self._pool_version = None, None
                continue
            if batch is None:
                return
            try:
                self._score(batch)
            except Exception:  # the log refused the records: nothing to answer, keep scoring
                log.exception("shadow scoring failed")

    def _score(self, batch: _Batch) -> None:
        model, n = batch.shadow, len(batch.ids)
        pred: list[int | None] = [None] * n
        proba: list[float | None] = [None] * n
        error: str | None = None
        ms: float | None = None
        try:
            X = batch.X if batch.rebuild is None else batch.rebuild(model)
            p, pr, ms = self._process(model).submit(_score_in_child, model.version, X).result(timeout=120)
            pred, proba = [int(v) for v in p.tolist()], [float(v) for v in pr.tolist()]
            self.scored += n
        except Exception as err:
            if self._pool is not None and getattr(self._pool, "_broken", False):
                self._pool = None  # the process died: a new one for the next batch
            error = f"{type(err).__name__}: {str(err)[:300]}"
            self.errors += n
        assert self.log is not None
        self.log.submit(
            [
                {
                    "id": batch.ids[k],
                    "predicted_at": batch.at,
                    "model_name": model.model_name,
                    "model_version": model.version,
                    "champion_version": batch.champion_version,
                    "prediction": pred[k],
                    "probability": proba[k],
                    "latency_ms": ms,
                    "champion_latency_ms": batch.champion_ms,
                    "error": error,
                }
                for k in range(n)
            ]
        )

    def _process(self, model: ServedModel) -> ProcessPoolExecutor:
        """The process that holds ``model`` (started on its first batch, with the model handed over once)."""
        if self._pool is None or self._pool_version != model.version:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_child,
                initargs=(pickle.dumps(model),),
            )
            self._pool_version = model.version
        return self._pool

    def status(self) -> dict[str, Any] | None:
        if self.model is None:
            return {"error": self.refusal} if self.refusal else None
        return {
            "version": self.model.version,
            "scored": self.scored,
            "errors": self.errors,
            "skipped": self.skipped,
        }


_CHILD_MODEL: ServedModel | None = None


def _init_child(model_bytes: bytes) -> None:
    """The shadow's process: its model, and one OpenMP thread per call (as the service's own calls)."""
    global _CHILD_MODEL
    from threadpoolctl import threadpool_limits

    _CHILD_MODEL = pickle.loads(model_bytes)  # noqa: S301 - the service's own verified load, handed over
    globals()["_LIMITS"] = threadpool_limits(limits=1, user_api="openmp")


def _score_in_child(version: str, X: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted class, positive-class probability and the model call's milliseconds."""
    model = _CHILD_MODEL
    if model is None or model.version != version:
        raise RuntimeError(f"the shadow process holds no model version {version}")
    start = time.perf_counter()
    pred, proba = model.predict_matrix(X) if isinstance(X, np.ndarray) else model.predict(X)
    return pred, proba, (time.perf_counter() - start) * 1000


def shadow_log(url: str, spill_dir: Any, **options: Any) -> PredictionLog:
    """The writer of ``shadow_predictions`` (spill files of its own beside the prediction log's)."""
    return PredictionLog(url, spill_dir=spill_dir, table=shadow_predictions, **options)
