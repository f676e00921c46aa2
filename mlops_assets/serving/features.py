"""Feature completion for serving: a thin adapter over the feature store's own code.

Window features come from the feature engine's :func:`~mlops_assets.features.engine.evaluate` over the online
store's events (:meth:`~mlops_assets.features.online.OnlineStore.events`), as of each row's timestamp: exactly the
two calls :func:`~mlops_assets.features.online.complete_features` makes. The adapter calls them directly with the
timestamps and keys validation has already parsed, because ``complete_features``' frame handling (timestamp
parsing, copying, assembling the full input frame) costs several milliseconds per call, more than the model
itself on the request path. The online-vs-offline equality test of the service guards the equivalence.

Errors of the store become request errors: a row older than the store's retention is the client's problem (422
naming the timestamp field); a store that is not materialized is the service's (503).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from mlops_assets.features import feature_registry, lookback
from mlops_assets.features.engine import FeatureInputError, entity_keys_from_records, evaluate
from mlops_assets.features.online import OnlineStoreError
from mlops_assets.features.stores import online_store


class FeatureCompletionError(RuntimeError):
    """Window features cannot be completed for a request; ``status`` 422 (the request) or 503 (the store)."""

    def __init__(self, field: str, message: str, status: int):
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, str]:
        return {"error": str(self), "field": self.field}


class OnlineFeatures:
    """The online store of ``cfg`` (the model's own store, as the feature store resolves it), as serving uses it."""

    def __init__(self, cfg: Any, storage: Any):
        self.cfg = cfg
        self.store = online_store(cfg, storage)
        self.defs = feature_registry(cfg)
        self.lookback_ns = int(lookback(cfg).value)

    def code_version(self) -> str | None:
        """The feature code version the store was materialized with (None when it was never materialized)."""
        return self.store.info(self.cfg).get("code_version")

    def _error(self, err: Exception, field: str) -> FeatureCompletionError:
        msg = str(err)
        if isinstance(err, FeatureInputError) or "keeps events since" in msg:
            return FeatureCompletionError(field, msg, 422)
        return FeatureCompletionError("features", msg, 503)

    def window_values(
        self, times: Sequence[datetime], entities: Sequence[dict[str, Any]] | None, field: str
    ) -> dict[str, np.ndarray]:
        """Every window feature for each (entity, time): events of that entity in ``[t - window, t)``.

        ``times`` are tz-aware UTC datetimes; ``entities`` one dict of entity keys per time (None when the data
        has no entity columns); ``field`` names the request field for errors."""
        ts = timestamps_ns(times)
        ents = entities if entities is not None else [{}] * len(ts)
        keys = entity_keys_from_records(ents, self.cfg.dataset.entity_columns)
        try:
            known = self.store.events(
                self.cfg, list(dict.fromkeys(keys)), int(ts.min()) - self.lookback_ns, int(ts.max())
            )
            return evaluate(self.defs, known, np.array(keys, dtype=object), ts)
        except (FeatureInputError, OnlineStoreError) as err:
            raise self._error(err, field) from err


def timestamps_ns(times: Sequence[datetime]) -> np.ndarray:
    """tz-aware datetimes as int64 nanoseconds since the epoch, UTC (exact to the microsecond)."""
    return np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[ns]").view("int64")
