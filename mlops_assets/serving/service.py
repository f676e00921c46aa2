"""The prediction service without HTTP: the served model, batching, feature completion, the prediction log.

:class:`PredictionService` is what the ASGI app (:mod:`mlops_assets.serving.app`) wraps. ``process`` runs one
batch of validated requests in the batcher's worker thread: one feature-completion call for all event rows of
the batch, one for all entity lookups, one ``predict_proba``, then per-request slices, ids and log records.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
from mlops_assets.serving.validation import (
    EntitiesRequest,
    InputError,
    InputSchema,
    Limits,
    RowsRequest,
    parse_predict,
)
from mlops_assets.settings import Storage, storage_from_env

log = logging.getLogger("mlops_assets.serving")


class NoModelError(RuntimeError):
    """No champion is being served (none registered yet, or the only one was refused)."""


@dataclass(frozen=True)
class ServiceOptions:
    """Tuning knobs of one service process (defaults are what ``mlops-assets serve`` uses)."""

    limits: Limits = field(default_factory=Limits)
    max_batch_rows: int = 1024
    max_wait: float = 0.001  # seconds a batch may wait for more requests (only under concurrency)
    poll_interval: float = 2.0  # seconds between looks at the champion alias
    log_batch_size: int = 2000
    log_flush_interval: float = 0.2


@dataclass
class _Pending:
    """A validated /predict request waiting in the batcher, with the schema it was validated against."""

    request: RowsRequest | EntitiesRequest
    schema: InputSchema


class PredictionService:
    """Serves the champion of ``cfg.model.name``; storage from the environment unless given."""

    def __init__(
        self,
        cfg: Any,
        storage: Storage | None = None,
        options: ServiceOptions | None = None,
    ):
        from mlops_assets.features import feature_registry
        from mlops_assets.registry.model_registry import CHAMPION, ModelRegistry

        self.cfg = cfg
        self.storage = storage or storage_from_env()
        self.options = options or ServiceOptions()
        self.registry = ModelRegistry(cfg.model.name, self.storage)
        self._champion_alias = CHAMPION
        self.window_features = [d.name for d in feature_registry(cfg)]
        self.features = OnlineFeatures(cfg, self.storage.online_store_url)
        self.metrics = ServiceMetrics(cfg.model.name)
        self.slot = ModelSlot()
        self.prediction_log = PredictionLog(
            self.storage.prediction_log_url,
            batch_size=self.options.log_batch_size,
            flush_interval=self.options.log_flush_interval,
        )
        self.batcher = MicroBatcher(
            self.process, max_rows=self.options.max_batch_rows, max_wait=self.options.max_wait
        )
        self.watcher = ChampionWatcher(
            self.slot,
            self._champion_version,
            self.load_version,
            poll_interval=self.options.poll_interval,
            on_swap=lambda m: self.metrics.model_loaded(m.version),
            on_refuse=lambda v, _why: self.metrics.model_refused(v),
        )

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the current champion (synchronously: the service is ready when this returns) and start watching."""
        self.watcher.check_once()
        if self.slot.current is None:
            log.warning("no model is served yet: %s", self.slot.refusal)
        self.watcher.start()

    def close(self) -> None:
        self.watcher.stop()
        self.prediction_log.close()

    # ------------------------------------------------------------------------------------ model loading
    def _champion_version(self) -> str | None:
        return self.registry.aliases().get(self._champion_alias)

    def load_version(self, version: str) -> ServedModel:
        """Verified load of ``version``, the feature-version check against the online store, and a warm-up."""
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
        # Warm-up off the request path: the first call of a fresh pipeline is slower.
        model.predict(pd.DataFrame({c: [np.nan] for c in model.columns}).astype("float64", errors="ignore"))
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
        try:
            out = self._predict_jobs(model, [jobs[i].payload.request for i in ok])
        except (InputError, FeatureCompletionError):
            if len(ok) == 1:
                raise
            # One bad request must not fail its neighbours: redo them one by one.
            out = []
            for i in ok:
                try:
                    out.extend(self._predict_jobs(model, [jobs[i].payload.request]))
                except (InputError, FeatureCompletionError) as err:
                    out.append(err)
        for i, res in zip(ok, out, strict=True):
            results[i] = res
        return results

    def _predict_jobs(self, model: ServedModel, requests: list[RowsRequest | EntitiesRequest]) -> list[bytes]:
        schema = model.schema
        rows = [r for r in requests if isinstance(r, RowsRequest)]
        ents = [r for r in requests if isinstance(r, EntitiesRequest)]
        frames, times = [], []
        if rows:
            cols = {c: [v for r in rows for v in r.columns[c]] for c in schema.columns}
            raw = pd.DataFrame(cols)
            raw[schema.timestamp] = pd.to_datetime(raw[schema.timestamp], utc=True)
            for c in schema.numeric:
                raw[c] = raw[c].astype("float64")
            if model.window_features:
                feats = self.features.complete(raw, model.window_features)
                raw = pd.concat([raw, feats], axis=1)
            frames.append(raw)
            times += [t for r in rows for t in r.event_times]
        if ents:
            frames.append(self.features.at_entities(ents, model))
            times += [r.as_of for r in ents for _ in r.entities]
        X = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        pred, proba = model.predict(X)
        self.metrics.observe_batch(len(X))

        # Log records: the model's inputs (and entity keys) per row, NaN as null.
        now = datetime.now(UTC)
        in_cols = [*schema.entities, *model.columns]
        values = X[in_cols].astype(object).where(X[in_cols].notna(), None).to_numpy().tolist()
        ids = [uuid.uuid4().hex for _ in range(len(X))]
        pred_l, proba_l = pred.tolist(), proba.tolist()
        self.prediction_log.submit(
            [
                {
                    "id": ids[k],
                    "predicted_at": now,
                    "event_time": times[k],
                    "model_name": model.model_name,
                    "model_version": model.version,
                    "inputs": dict(zip(in_cols, values[k], strict=True)),
                    "prediction": int(pred_l[k]),
                    "probability": float(proba_l[k]),
                }
                for k in range(len(X))
            ]
        )
        # Responses in request order: rows requests first in the frame, then entity requests.
        out: dict[int, bytes] = {}
        k = 0
        for idx in [i for i, r in enumerate(requests) if isinstance(r, RowsRequest)] + [
            i for i, r in enumerate(requests) if isinstance(r, EntitiesRequest)
        ]:
            n = requests[idx].n
            out[idx] = json.dumps(
                {
                    "predictions": pred_l[k : k + n],
                    "probabilities": proba_l[k : k + n],
                    "model_version": model.version,
                    "ids": ids[k : k + n],
                }
            ).encode()
            k += n
        return [out[i] for i in range(len(requests))]

    # ------------------------------------------------------------------------------------ feedback
    def feedback(self, ids: list[str], labels: list[int]) -> int:
        n = self.prediction_log.attach_labels(ids, labels)
        self.metrics.observe_labels(n)
        return n

    def health(self) -> dict[str, Any]:
        model = self.slot.current
        if model is None:
            return {"status": "unavailable", "model_version": None, "reason": self.slot.refusal}
        out = {"status": "ok", "model_version": model.version, "model_name": model.model_name}
        if self.slot.refusal:
            out["warning"] = self.slot.refusal
        return out


def _now() -> float:
    return time.perf_counter()
