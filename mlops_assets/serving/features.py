"""Feature completion for serving: a thin layer over the feature store's own code.

Window features are computed by :func:`mlops_assets.features.online.complete_features` (rows, as of each row's
timestamp) and :func:`~mlops_assets.features.online.online_features_as_of` (entity keys, as of a given time): the
same engine as training, reading the online store. This module only maps the store's errors to request errors
(a row older than the store's retention is the client's problem: 422 naming the timestamp field; a store that is
not materialized is the service's: 503) and checks what entity requests can serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_assets.features.engine import FeatureInputError
from mlops_assets.features.online import (
    OnlineStore,
    OnlineStoreError,
    complete_features,
    online_features_as_of,
)

if TYPE_CHECKING:
    from mlops_assets.serving.model import ServedModel
    from mlops_assets.serving.validation import EntitiesRequest


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
    """The online store of ``cfg`` at ``url``, as serving uses it."""

    def __init__(self, cfg: Any, url: str):
        self.cfg = cfg
        self.store = OnlineStore(url)

    def code_version(self) -> str | None:
        """The feature code version the store was materialized with (None when it was never materialized)."""
        return self.store.info(self.cfg).get("code_version")

    def _error(self, err: Exception, field: str) -> FeatureCompletionError:
        msg = str(err)
        if isinstance(err, FeatureInputError) or "keeps events since" in msg:
            return FeatureCompletionError(field, msg, 422)
        return FeatureCompletionError("features", msg, 503)

    def complete(self, raw: pd.DataFrame, window_features: tuple[str, ...]) -> pd.DataFrame:
        """The window features of each raw row as of its own timestamp (same index as ``raw``)."""
        try:
            full = complete_features(self.cfg, raw, self.store)
        except (FeatureInputError, OnlineStoreError) as err:
            raise self._error(err, f"rows[].{self.cfg.dataset.timestamp_column}") from err
        return full[list(window_features)]

    def at_entities(self, requests: list[EntitiesRequest], model: ServedModel) -> pd.DataFrame:
        """Model inputs for entity requests: every input must be a window feature (the online store holds no raw
        event columns); otherwise the request is refused with the columns it would need."""
        raw = [c for c in model.columns if c not in set(model.window_features)]
        if raw:
            raise FeatureCompletionError(
                "entities",
                f"model version {model.version} also takes raw event columns {raw[:8]}"
                + (" ..." if len(raw) > 8 else "")
                + " that the online store does not hold; send event 'rows' instead",
                422,
            )
        ds = self.cfg.dataset
        frames = []
        for r in requests:
            ents = pd.DataFrame(r.entities, columns=list(ds.entity_columns))
            if not ds.entity_columns:
                ents = pd.DataFrame(index=range(len(r.entities)))
            try:
                frames.append(online_features_as_of(self.cfg, ents, r.as_of, self.store))
            except (FeatureInputError, OnlineStoreError) as err:
                raise self._error(err, "as_of") from err
        out = pd.concat(frames, ignore_index=True)
        return out
