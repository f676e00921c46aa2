"""Feature completion for serving: a thin adapter over the feature store's own code.

Window features come from the feature engine's :func:`~mlops_assets.features.engine.evaluate` over the online
store's events (:meth:`~mlops_assets.features.online.OnlineStore.events`), as of each row's timestamp: exactly the
two calls :func:`~mlops_assets.features.online.complete_features` makes. The adapter calls them directly with the
timestamps and keys validation has already parsed, because ``complete_features``' frame handling (timestamp
parsing, copying, assembling the full input frame) costs several milliseconds per call, more than the model
itself on the request path. The online-vs-offline equality test of the service guards the equivalence.

On SQLite the store's events are also held in memory (:class:`_EventCache`): a batch then reads them with a few
array slices instead of a SQL query (~0.6 ms), and ``PRAGMA data_version`` (a counter SQLite bumps on every commit
by another connection, read in microseconds) says when to reload them. The batch sees exactly the rows, the
retention horizon and the code version the SQL read would return, from one read transaction.

Errors of the store become request errors: a row older than the store's retention is the client's problem (422
naming the timestamp field); a store that is not materialized is the service's (503).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlops_assets.features import feature_registry, lookback
from mlops_assets.features.engine import (
    Events,
    FeatureInputError,
    entity_keys_from_records,
    evaluate,
)
from mlops_assets.features.feature_set import FeatureDefinition
from mlops_assets.features.online import OnlineStore, OnlineStoreError
from mlops_assets.features.stores import online_store
from mlops_assets.serving.validation import RequestError

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

    from mlops_assets.config import MlopsConfig
    from mlops_assets.storage import Storage


class FeatureCompletionError(RequestError, RuntimeError):
    """Window features cannot be completed for a request; ``status`` 422 (the request) or 503 (the store)."""


class _Definition(FeatureDefinition):
    """A feature definition whose window and TTL are parsed once: the engine reads both for every feature of
    every batch, and ``pd.Timedelta("30D")`` costs microseconds each time (~0.1 ms a batch)."""

    @functools.cached_property
    def window_td(self) -> pd.Timedelta:
        return pd.Timedelta(self.window)

    @functools.cached_property
    def ttl_td(self) -> pd.Timedelta:
        return pd.Timedelta(self.ttl)


class OnlineFeatures:
    """The online store of ``cfg`` (the model's own store, as the feature store resolves it), as serving uses it."""

    def __init__(self, cfg: MlopsConfig, storage: Storage):
        self.cfg = cfg
        self.store = online_store(cfg, storage)
        self.defs = [
            _Definition(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d)})
            for d in feature_registry(cfg)
        ]
        self.lookback_ns = int(lookback(cfg).value)
        self.cache = _EventCache(self.store, cfg) if self.store.url.startswith("sqlite") else None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

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
        uniq, lo, hi = list(dict.fromkeys(keys)), int(ts.min()) - self.lookback_ns, int(ts.max())
        try:
            known = self.cache.events(uniq, lo, hi) if self.cache is not None else None
            if known is None:  # not cached (another database, a store too big, or a row before the horizon)
                known = self.store.events(self.cfg, uniq, lo, hi)
            return evaluate(self.defs, known, np.array(keys, dtype=object), ts)
        except (FeatureInputError, OnlineStoreError) as err:
            raise self._error(err, field) from err


def timestamps_ns(times: Sequence[datetime]) -> np.ndarray:
    """tz-aware datetimes as int64 nanoseconds since the epoch, UTC (exact to the microsecond)."""
    return np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[ns]").view("int64")


class _EventCache:
    """The online store's events in memory, sorted by (entity key, time), reloaded when the database changes.

    Used by the one thread that runs batches. The change signal is ``PRAGMA data_version`` on a connection kept
    open for it; it is read before each reload, so a commit during a reload triggers another one.
    """

    MAX_EVENTS = 500_000  # beyond this a reload would stall the batch; such stores are read per batch

    def __init__(self, store: OnlineStore, cfg: MlopsConfig):
        self.store = store
        self.cfg = cfg
        self._conn: PoolProxiedConnection | None = None
        self._version: int | None = None
        self._error: Exception | None = None  # the store's refusal (not materialized, other code version)
        self._horizon = 0
        self._events: Events | None = None
        self._spans: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _commit_counter(self) -> int:
        if self._conn is None:
            self._conn = self.store._read.raw_connection()  # autocommit: each PRAGMA sees the latest commit
        cur = self._conn.cursor()
        try:
            cur.execute("PRAGMA data_version")
            row = cur.fetchone()
            assert row is not None  # the pragma always answers one row
            return int(row[0])
        finally:
            cur.close()

    def _reload(self) -> None:
        # The store's own reading code (its meta checks and its row decoding), over every stored key and time,
        # in one read transaction: what per-batch reads would return, from the same snapshot.
        store, cfg = self.store, self.cfg
        self._events, self._spans, self._error = None, {}, None
        events_t, _, meta_t = store._tables(cfg)
        with store._read.connect() as conn:
            try:
                meta = store._checked_meta(conn, cfg, meta_t)
            except OnlineStoreError as err:
                self._error = err
                return
            n = conn.execute(sa.select(sa.func.count()).select_from(events_t)).scalar_one()
            if n > self.MAX_EVENTS:
                return
            known = store._load(conn, cfg, events_t, None, -(2**63), 2**63 - 1)
        self._horizon = int(meta["horizon"])
        codes, uniq = pd.factorize(known.keys)
        order = np.lexsort((known.ts, codes))
        codes = codes[order]
        self._events = Events(
            keys=known.keys[order],
            ts=known.ts[order],
            values={s: v[order] for s, v in known.values.items()},
        )
        bounds = np.searchsorted(codes, np.arange(len(uniq) + 1), side="left")
        self._spans = {k: (int(bounds[i]), int(bounds[i + 1])) for i, k in enumerate(uniq)}

    def events(self, keys: list[str], lo: int, hi: int) -> Events | None:
        """Stored events of ``keys`` in ``[lo, hi)`` (ns), as :meth:`OnlineStore.events` returns them; None when
        the caller must ask the store (not cached, or ``lo`` before the horizon: the store words that error)."""
        version = self._commit_counter()
        if version != self._version:
            self._version = None  # a failed reload is retried by the next batch
            self._reload()
            self._version = version
        if self._error is not None:
            raise OnlineStoreError(str(self._error))
        ev = self._events
        if ev is None or lo < self._horizon:
            return None
        parts = []
        for k in keys:
            span = self._spans.get(k)
            if span is None:
                continue
            a, b = span
            t = ev.ts[a:b]
            i, j = a + int(np.searchsorted(t, lo, "left")), a + int(np.searchsorted(t, hi, "left"))
            if j > i:
                parts.append(slice(i, j))
        if len(parts) == 1:
            sl = parts[0]
            return Events(keys=ev.keys[sl], ts=ev.ts[sl], values={s: v[sl] for s, v in ev.values.items()})
        idx = np.concatenate([np.arange(p.start, p.stop) for p in parts]) if parts else np.empty(0, "int64")
        return Events(keys=ev.keys[idx], ts=ev.ts[idx], values={s: v[idx] for s, v in ev.values.items()})
