"""The prediction service without HTTP: the served model, batching, feature completion, the prediction log.

:class:`PredictionService` is what the ASGI app (:mod:`mlops_assets.serving.app`) wraps. ``process`` runs one
batch of validated requests (on the event loop by default, see ``ServiceOptions.inline_batches``): one
window-feature computation for all rows of the batch, one ``predict_proba``, then per-request slices, ids and log
records handed to the prediction log's writer thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets.serving.batcher import Job, MicroBatcher
from mlops_assets.serving.features import FeatureCompletionError, OnlineFeatures
from mlops_assets.serving.metrics import ServiceMetrics
from mlops_assets.serving.model import (
    ChampionWatcher,
    ModelRefusedError,
    ModelSlot,
    ServedModel,
    build_served_model,
)
from mlops_assets.serving.prediction_log import PredictionLog
from mlops_assets.serving.probation import ProbationWatch
from mlops_assets.serving.validation import (
    EntitiesRequest,
    InputError,
    InputSchema,
    Limits,
    RequestError,
    RowsRequest,
    parse_predict,
)
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.alerts import BackgroundAlerter
    from mlops_assets.config import MlopsConfig

log = logging.getLogger("mlops_assets.serving")


_LOAD_LOCK = threading.Lock()


class NoModelError(RuntimeError):
    """No champion is being served (none registered yet, or the only one was refused)."""


@dataclass(frozen=True)
class ServiceOptions:
    """Tuning knobs of one service process (defaults are what ``mlops-assets serve`` uses)."""

    limits: Limits = field(default_factory=Limits)
    max_batch_rows: int = 1024
    max_wait: float = 0.002  # seconds a batch may wait for the clients in flight (see MicroBatcher)
    poll_interval: float = 2.0  # seconds between looks at the champion alias
    log_batch_size: int = 2000
    log_flush_interval: float = 0.2
    # How long a prediction-log write may wait for the database before its records are spilled to a local file,
    # and how often the spilled files are retried (see PredictionLog).
    log_write_timeout: float = 5.0
    log_retry_interval: float = 1.0
    # OpenMP threads of one model call. One: a batch of a few hundred rows gains nothing from more, and on a
    # busy machine OpenMP's thread team costs milliseconds per call (measured: 10 ms vs 0.4 ms per call).
    predict_threads: int = 1
    # Run each batch on the event loop itself rather than in a worker thread. Both need the GIL, and handing it
    # back and forth costs more than it overlaps (measured: 1,004 vs 863 req/s at 10 clients, p50 8 vs 11.5 ms).
    # The price: a batch blocks the loop while it runs (a few ms; up to ~30 ms for a 1,000-row request).
    inline_batches: bool = True


@dataclass
class _Pending:
    """A validated /predict request waiting in the batcher, with the schema it was validated against."""

    request: RowsRequest | EntitiesRequest
    schema: InputSchema


class PredictionService:
    """Serves the champion of ``cfg.model.name`` from ``storage``."""

    def __init__(
        self,
        cfg: MlopsConfig,
        storage: Storage,
        options: ServiceOptions | None = None,
    ):
        from mlops_assets.features import feature_registry
        from mlops_assets.registry.model_registry import CHAMPION, ModelRegistry

        self.cfg = cfg
        self.storage = storage
        self.options = options or ServiceOptions()
        # Built from the config: the current feature version for the guard's check, and the alerts.
        self.registry = ModelRegistry.from_config(cfg, self.storage)
        self._champion_alias = CHAMPION
        # The service's alerts go out from a thread of their own: a slow or absent receiver holds up no request,
        # no prediction-log write and no model swap.
        self.alerts: BackgroundAlerter | None = None
        if self.registry.alerter is not None:
            from mlops_assets.alerts import BackgroundAlerter

            self.alerts = BackgroundAlerter(self.registry.alerter)
        self.window_features = [d.name for d in feature_registry(cfg)]
        self.features = OnlineFeatures(cfg, self.storage)
        self.metrics = ServiceMetrics(cfg.model.name)
        self.slot = ModelSlot()
        self._spill_dir = self.storage.home / "prediction_log_spill"
        self.prediction_log = PredictionLog(
            self.storage.prediction_log_url,
            batch_size=self.options.log_batch_size,
            flush_interval=self.options.log_flush_interval,
            spill_dir=self._spill_dir,
            write_timeout=self.options.log_write_timeout,
            retry_interval=self.options.log_retry_interval,
            on_change=self._log_changed,
        )
        self.metrics.prediction_log_status = self.prediction_log.status
        self.batcher = MicroBatcher(
            self.process,
            max_rows=self.options.max_batch_rows,
            max_wait=self.options.max_wait,
            thread_initializer=self._limit_threads,
            inline=self.options.inline_batches,
        )
        # Watches each new champion for cfg.probation and rolls it back through the registry's guard on a breach.
        self.probation = ProbationWatch(
            cfg.probation,
            self.registry,
            self.slot,
            on_rollback=self._rolled_back,
            on_failure=self._rollback_failed,
            labeled=self._labeled_scores,
        )
        self.metrics.probation_status = self.probation.metrics
        # A challenger in shadow (rollout.mode: shadow) scores what the champion answers, off the request path.
        from mlops_assets.serving.shadow import ShadowScorer, shadow_log

        self.shadow = ShadowScorer(
            self.registry.active_shadow,
            self.load_version,
            lambda: shadow_log(
                self.storage.prediction_log_url,
                self._spill_dir,
                batch_size=self.options.log_batch_size,
                flush_interval=self.options.log_flush_interval,
                write_timeout=self.options.log_write_timeout,
                retry_interval=self.options.log_retry_interval,
            ),
            poll_interval=self.options.poll_interval,
            sample=cfg.rollout.shadow.sample,
        )
        self.watcher = ChampionWatcher(
            self.slot,
            self._champion_version,
            self.load_version,
            poll_interval=self.options.poll_interval,
            on_swap=self._swapped,
            on_refuse=self._refused,
        )

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the current champion (synchronously: the service is ready when this returns) and start watching."""
        self.watcher.check_once()
        if self.slot.current is None:
            log.warning("no model is served yet: %s", self.slot.refusal)
        self.watcher.start()
        self.probation.start()
        try:
            self.shadow.check_once()
        except Exception as err:  # the history store is away: the watcher looks again
            log.error("cannot read the running shadow: %s: %s", type(err).__name__, err)
        self.shadow.start()

    def close(self) -> None:
        self.watcher.stop()
        self.probation.stop()
        self.shadow.close()
        self.prediction_log.close()
        self.features.close()
        if self.alerts is not None:
            self.alerts.close()  # the all-clear of an outage that ended as the log closed goes out too

    def _limit_threads(self) -> None:
        from threadpoolctl import threadpool_limits

        # Runs in the thread that runs the batches (the event loop, or the worker): the OpenMP thread count is
        # a per-thread setting.
        self._thread_limits = threadpool_limits(limits=self.options.predict_threads, user_api="openmp")

    # ------------------------------------------------------------------------------------ model loading
    _REFUSAL_INCIDENT = "service_degraded:champion_refused"

    def _refused(self, version: str, why: str) -> None:
        self.metrics.model_refused(version)
        if self.alerts is None:
            return
        from mlops_assets.alerts import AlertEvent

        current = self.slot.current
        self.alerts.notify(
            AlertEvent(
                kind="service_degraded",
                model=self.cfg.model.name,
                summary=f"the prediction service refuses champion version {version}: {why}; "
                + (f"still serving version {current.version}" if current else "no model is served"),
                version=version,
                check="champion_refused",
                dedup_key=self._REFUSAL_INCIDENT,
            )
        )

    def _swapped(self, model: ServedModel, replaced: ServedModel | None = None) -> None:
        self.metrics.model_loaded(model.version)
        self.probation.begin(model, replaced)
        if self.alerts is not None:
            self.alerts.resolve(
                self.cfg.model.name,
                self._REFUSAL_INCIDENT,
                f"the prediction service serves champion version {model.version}",
                version=model.version,
            )

    def _labeled_scores(self, version: str, since: float | None, limit: int) -> tuple[list[int], list[float]]:
        """The probation's view of the prediction log: ``version``'s newest labeled predictions (made at or after
        ``since``, epoch seconds)."""
        from datetime import UTC, datetime

        after = None if since is None else datetime.fromtimestamp(since, UTC)
        return self.prediction_log.labeled_scores(self.cfg.model.name, version, since=after, limit=limit)

    def _rolled_back(self, model: ServedModel) -> None:
        """The probation rolled back to ``model`` and serves it again (the alert went out with the move)."""
        self.metrics.model_loaded(model.version)

    def _rollback_failed(self, version: str, why: str) -> None:
        if self.alerts is None:
            return
        from mlops_assets.alerts import AlertEvent

        self.alerts.notify(
            AlertEvent(
                kind="service_degraded",
                model=self.cfg.model.name,
                summary=f"the prediction service could not roll back champion version {version}: {why}",
                version=version,
                check="probation",
                dedup_key=f"service_degraded:probation:{version}",
            )
        )

    _LOG_INCIDENT = "service_degraded:prediction_log"

    def _log_changed(self, error: str | None) -> None:
        """The prediction log's writer thread: writing failed (``error``), or every kept record is stored again
        (None). One incident per outage, however many requests it spans."""
        if self.alerts is None:
            return
        name = self.cfg.model.name
        if error is None:
            self.alerts.resolve(
                name,
                self._LOG_INCIDENT,
                f"{name}: the prediction log is written again; every kept prediction is stored",
            )
            return
        from mlops_assets.alerts import AlertEvent

        # Not self.prediction_log: its writer may call this (files left by an earlier run) before it is assigned.
        spill = self._spill_dir
        self.alerts.notify(
            AlertEvent(
                kind="service_degraded",
                model=name,
                summary=f"{name}: the prediction service cannot write its prediction log ({error}); requests are "
                f"still answered, and their predictions kept in {spill} until the database takes them",
                check="prediction_log",
                dedup_key=self._LOG_INCIDENT,
                details={"spill_dir": str(spill)},
            )
        )

    def _champion_version(self) -> str | None:
        return self.registry.aliases().get(self._champion_alias)

    def load_version(self, version: str) -> ServedModel:
        """Verified load of ``version``, the guard's clearance (a passing gate record for the current feature
        version, or a recorded override; the sha256 the guard recorded when it moved the alias), the
        feature-version check against the online store, and a warm-up."""
        # One load at a time in the process: two services embedded in one process (each with its watcher) loading
        # at once hit "SystemError: AST constructor recursion depth mismatch" in CPython 3.11's parser.
        with _LOAD_LOCK:
            loaded = self.registry.load(version)
            model = build_served_model(self.cfg, loaded, self.window_features)
        store_version = self.features.code_version()
        if model.window_features and store_version is None:
            raise ModelRefusedError(
                f"model '{model.model_name}' version {model.version} needs window features "
                f"{list(model.window_features)[:5]}... but the online store holds none yet: materialize features"
            )
        if store_version is not None and model.feature_version != store_version:
            raise ModelRefusedError(
                f"model '{model.model_name}' version {model.version} was trained with feature code version "
                f"{model.feature_version!r} but the online store holds version {store_version!r}: "
                "rematerialize the features or promote a model trained on the current definitions"
            )
        verdict = self.registry.serving_clearance(version, loaded.sha256)
        if not verdict.ok:
            # An alias moved outside the guard (by hand in the MLflow UI, a script) to a version the gates do not
            # clear: not served.
            raise ModelRefusedError(verdict.explain())
        # Warm-up off the request path: the first call of a fresh pipeline is slower.
        model.predict(pd.DataFrame({c: [np.nan] for c in model.columns}).astype("float64", errors="ignore"))
        if model.numeric_only:
            model.predict_matrix(np.full((1, len(model.columns)), np.nan))
        return model

    # ------------------------------------------------------------------------------------ predict
    def validate(self, body: bytes) -> _Pending:
        model = self.current_model()
        return _Pending(parse_predict(body, model.schema, self.options.limits), model.schema)

    def current_model(self) -> ServedModel:
        model = self.slot.current
        if model is None:
            raise NoModelError(self.slot.refusal or "no champion model is loaded")
        return model

    async def predict(self, pending: _Pending) -> bytes:
        """The JSON response body for a validated request (batched with concurrent ones)."""
        return await self.batcher.submit(pending, pending.request.n)

    def process(self, jobs: Sequence[Job]) -> list[Any]:
        """One batch, in the worker thread: a result (JSON bytes) or an exception per job."""
        model = self.slot.current  # one model for the whole batch
        if model is None:
            err = NoModelError(self.slot.refusal or "no champion model is loaded")
            return [err] * len(jobs)
        results: list[Any] = [None] * len(jobs)
        ok: list[int] = []
        for i, job in enumerate(jobs):
            if job.payload.schema != model.schema:
                results[i] = InputError(
                    "body",
                    f"the served model changed to version {model.version}, whose inputs differ; retry",
                    409,
                )
            else:
                ok.append(i)
        if not ok:
            return results
        out: Sequence[bytes | RequestError]
        try:
            out = self._predict_jobs(model, [jobs[i].payload.request for i in ok])
        except Exception as err:
            if len(ok) == 1:
                out = [self._request_error(err)]
            else:
                # One bad request must not fail its neighbours: redo them one by one, so that only the request
                # that fails alone gets an error.
                redone: list[bytes | RequestError] = []
                for i in ok:
                    try:
                        redone.extend(self._predict_jobs(model, [jobs[i].payload.request]))
                    except Exception as one:
                        redone.append(self._request_error(one))
                out = redone
        for i, res in zip(ok, out, strict=True):
            results[i] = res
        return results

    @staticmethod
    def _request_error(err: Exception) -> RequestError:
        """A request's own failure: its 4xx as raised, anything else a 500 (logged: a bug, or a store down)."""
        if isinstance(err, RequestError):
            return err
        log.error("a /predict request failed on its own: %s", err, exc_info=err)
        return RequestError("body", f"internal error ({type(err).__name__}); the service logged it", 500)

    def _inputs(
        self, model: ServedModel, requests: list[RowsRequest | EntitiesRequest]
    ) -> tuple[np.ndarray | pd.DataFrame, list[datetime], list[dict[str, Any]] | None]:
        """Model inputs for ``requests`` (in order): a float matrix (numeric models) or a frame, the event time
        and the entity keys of every row."""
        schema = model.schema
        n = sum(r.n for r in requests)
        columns: dict[str, Any] = {}
        times: list[datetime] = []
        entities: list[dict[str, Any]] | None = [] if schema.entities else None
        raw = [c for c in model.columns if c not in set(model.window_features)]
        kinds = {type(r) for r in requests}
        if EntitiesRequest in kinds and raw:
            # The online store holds window features only; raw event columns come with event rows.
            raise FeatureCompletionError(
                "entities",
                f"model version {model.version} also takes raw event columns {raw[:8]}"
                + (" ..." if len(raw) > 8 else "")
                + " that the online store does not hold; send event 'rows' instead",
                422,
            )
        event_rows = [r for r in requests if isinstance(r, RowsRequest)]  # all of them when raw is not empty
        for c in raw:
            columns[c] = [v for r in event_rows for v in r.columns[c]]
        for r in requests:
            if isinstance(r, RowsRequest):
                times += r.event_times
                if entities is not None:
                    cols = [r.columns[c] for c in schema.entities]
                    entities += [
                        dict(zip(schema.entities, vs, strict=True)) for vs in zip(*cols, strict=True)
                    ]
            else:
                times += [r.as_of] * r.n
                if entities is not None:
                    entities += r.entities
        if model.window_features:
            field = f"rows[].{schema.timestamp}" if kinds == {RowsRequest} else "as_of"
            values = self.features.window_values(times, entities, field)
            for f in model.window_features:
                columns[f] = values[f]
        X: np.ndarray | pd.DataFrame
        if model.numeric_only:
            X = np.empty((n, len(model.columns)))
            for j, c in enumerate(model.columns):
                X[:, j] = columns[c]
        else:
            X = pd.DataFrame({c: columns[c] for c in model.columns})
            for c in schema.numeric:
                X[c] = X[c].astype("float64")
        return X, times, entities

    def _predict_jobs(self, model: ServedModel, requests: list[RowsRequest | EntitiesRequest]) -> list[bytes]:
        X, times, entities = self._inputs(model, requests)
        start = time.perf_counter()
        if isinstance(X, np.ndarray):
            pred, proba = model.predict_matrix(X)
            champion_ms = (time.perf_counter() - start) * 1000
            values = X.tolist()
        else:
            pred, proba = model.predict(X)
            champion_ms = (time.perf_counter() - start) * 1000
            values = X[list(model.columns)].to_numpy(dtype=object).tolist()
        n = len(times)
        self.metrics.observe_batch(n)

        # Log records; the writer thread turns the inputs into JSON (NaN -> null), off the request path.
        now = datetime.now(UTC)
        cols = model.columns
        ids = [uuid.uuid4().hex for _ in range(n)]
        pred_l, proba_l = pred.tolist(), proba.tolist()
        self.prediction_log.submit(
            [
                {
                    "id": ids[k],
                    "predicted_at": now,
                    "event_time": times[k],
                    "model_name": model.model_name,
                    "model_version": model.version,
                    "inputs": (cols, values[k], entities[k] if entities is not None else None),
                    "prediction": int(pred_l[k]),
                    "probability": float(proba_l[k]),
                }
                for k in range(n)
            ]
        )
        self.shadow.offer(model, X, lambda shadow: self._inputs(shadow, requests)[0], ids, champion_ms, now)
        out, k = [], 0
        for r in requests:
            out.append(
                json.dumps(
                    {
                        "predictions": pred_l[k : k + r.n],
                        "probabilities": proba_l[k : k + r.n],
                        "model_version": model.version,
                        "ids": ids[k : k + r.n],
                    }
                ).encode()
            )
            k += r.n
        return out

    # ------------------------------------------------------------------------------------ feedback
    def feedback(self, ids: list[str], labels: list[int]) -> int:
        n = self.prediction_log.attach_labels(ids, labels)
        self.metrics.observe_labels(n)
        return n

    def health(self) -> dict[str, Any]:
        model = self.slot.current
        if model is None:
            return {"status": "unavailable", "model_version": None, "reason": self.slot.refusal}
        out: dict[str, Any] = {"status": "ok", "model_version": model.version, "model_name": model.model_name}
        if self.slot.refusal:
            out["warning"] = self.slot.refusal
        probation = self.probation.status()
        if probation is not None:
            out["probation"] = probation
        shadow = self.shadow.status()
        if shadow is not None:
            out["shadow"] = shadow
        log_status = self.prediction_log.status()
        if log_status["status"] != "ok":
            # Still answering, so still healthy enough to take traffic; but predictions wait to be stored. /health
            # needs no token: it says what kind of problem, never the database's address or the spill folder (the
            # service log has both).
            out["status"] = "degraded"
            out["prediction_log"] = {
                "status": "degraded",
                "spilled_files": log_status["spilled_files"],
                "error": _public_reason(log_status.get("error")),
            }
        return out


def _public_reason(error: str | None) -> str:
    """What an open endpoint may say about a prediction-log failure: whether the database was locked, unreachable
    or refused the write, never its address or its own message."""
    text = (error or "").lower()
    if "locked" in text or "waiting for the database" in text:
        return (
            "the prediction log's database is locked or slow; predictions are kept and stored when it answers"
        )
    if error is None:
        return "predictions wait in spill files to be stored"
    return "the prediction log's database refused or could not take writes; predictions are kept and stored later"
