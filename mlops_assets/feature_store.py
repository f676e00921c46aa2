"""The public feature API (INTERFACE.md, "Python API"): historical and online lookups, the feature list.

``config`` is a path to ``mlops.yaml`` or ``None`` (``$MLOPS_CONFIG``, else the bundled default), like the CLI;
storage comes from the environment (:func:`mlops_assets.storage.storage_from_env`). Every lookup runs the one
point-in-time engine of :mod:`mlops_assets.features.engine`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.config import MlopsConfig, config_path, load_config
from mlops_assets.features.engine import (
    Events,
    FeatureInputError,
    entity_keys,
    entity_keys_from_columns,
    evaluate,
    source_columns,
    timestamps_ns,
)
from mlops_assets.features.feature_set import (
    FeatureDefinition,
    feature_registry,
    features_code_version,
    lookback,
)
from mlops_assets.features.online import online_features_as_of
from mlops_assets.features.stores import offline_store, online_store, store_name
from mlops_assets.storage import storage_from_env

__all__ = ["get_historical_features", "get_online_features", "list_features"]

_CONFIGS: dict[tuple[str, str, int], MlopsConfig] = {}
_CONFIGS_LOCK = threading.Lock()
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def _config(config: str | os.PathLike[str] | MlopsConfig | None) -> MlopsConfig:
    # Parsed once per file version: the online path must not re-read YAML on every lookup.
    if isinstance(config, MlopsConfig):
        return config
    path = str(config_path(config))
    try:
        key = (path, os.getcwd(), os.stat(path).st_mtime_ns)
    except FileNotFoundError:
        return load_config(path)  # raises the ConfigError that names the file
    cfg = _CONFIGS.get(key)
    if cfg is None:
        cfg = load_config(path)
        with _CONFIGS_LOCK:
            _CONFIGS[key] = cfg
    return cfg


def _select(cfg: MlopsConfig, features: Iterable[str] | None) -> list[FeatureDefinition]:
    defs = feature_registry(cfg)
    if features is None:
        return defs
    wanted = list(features)
    by_name = {d.name: d for d in defs}
    unknown = [f for f in wanted if f not in by_name]
    if unknown:
        raise KeyError(f"unknown features {unknown}; defined: {sorted(by_name)}")
    return [by_name[f] for f in wanted]


def get_historical_features(
    entity_df: pd.DataFrame,
    features: Sequence[str] | None = None,
    config: str | os.PathLike[str] | MlopsConfig | None = None,
) -> pd.DataFrame:
    """Each row's features as known at the row's time, from the offline store (point-in-time, TTL applied).

    ``entity_df`` has the configured entity columns and the timestamp column (tz-aware, ISO strings or naive
    UTC). A row at ``t`` sees only events in ``[t - window, t)``. Returns those columns plus one per feature,
    same order and index as ``entity_df``.
    """
    cfg = _config(config)
    ds = cfg.dataset
    defs = _select(cfg, features)
    ts = timestamps_ns(entity_df, ds.timestamp_column, coerce=True)
    keys = entity_keys(entity_df, ds.entity_columns)
    sources = source_columns(defs)
    store = offline_store(cfg, storage_from_env())
    if not defs or not len(entity_df):
        known = Events.concat([], sources)
    else:
        frame = store.read()
        if frame.empty:
            raise FeatureInputError(f"{store!r} is empty: materialize the features asset first")
        kts = timestamps_ns(frame, ds.timestamp_column)
        lo = int(ts.min()) - max(int(d.window_td.value) for d in defs)
        frame = frame[(kts >= lo) & (kts < int(ts.max()))]
        known = Events.from_frame(cfg, frame, sources)
    values = evaluate(defs, known, keys, ts)
    out = entity_df[[*ds.entity_columns, ds.timestamp_column]].copy()
    out[ds.timestamp_column] = pd.Series(pd.to_datetime(ts, utc=True), index=out.index)
    return pd.concat(
        [out, pd.DataFrame(values, index=entity_df.index, columns=[d.name for d in defs])], axis=1
    )


def _entity_columns(cfg: MlopsConfig, entities: Any) -> tuple[list[list[Any]], int]:
    """The entity key values of ``entities``, one list per entity column (validated), and the number of rows
    (at least 1: ``[{}]`` is the one lookup of data without entity columns)."""
    cols = cfg.dataset.entity_columns
    if isinstance(entities, Mapping):
        raise FeatureInputError("entities: expected a list of dicts or a DataFrame, got one dict")
    if isinstance(entities, pd.DataFrame):
        missing = [c for c in cols if c not in entities.columns]
        if missing:
            raise FeatureInputError(f"entities: missing entity columns {missing}")
        values = [entities[c].tolist() for c in cols]
        n = len(entities) if cols else max(len(entities), 1)
    else:
        records = [e if type(e) is dict else dict(e) for e in entities]
        try:
            values = [[r[c] for r in records] for c in cols]
        except KeyError:
            missing = sorted({c for r in records for c in cols if c not in r})
            raise FeatureInputError(f"entities: missing entity columns {missing}") from None
        n = len(records)
    for c, vs in zip(cols, values, strict=True):
        for v in vs:
            if v is None or (isinstance(v, float) and v != v):
                raise FeatureInputError(f"entities: entity column {c!r} must not be null")
    return values, n


def get_online_features(
    entities: Sequence[Mapping[str, Any]] | pd.DataFrame,
    features: Sequence[str] | None = None,
    config: str | os.PathLike[str] | MlopsConfig | None = None,
    as_of: Any = None,
) -> pd.DataFrame:
    """The latest materialized feature values of each entity (``[{}]`` when the data has no entity columns).

    Returns the entity columns, the timestamp column (the time the values hold at: just after the newest
    materialized event, or ``as_of`` when given) and one column per feature. With ``as_of`` the values are
    computed from the online store's recent events as of that time, exactly like the historical lookup.
    """
    cfg = _config(config)
    ds = cfg.dataset
    cols = list(ds.entity_columns)
    values, n = _entity_columns(cfg, entities)
    store = online_store(cfg, storage_from_env())
    defs = _select(cfg, features)
    names = [d.name for d in defs]
    if as_of is not None:
        frame = pd.DataFrame(dict(zip(cols, values, strict=True)), columns=cols)
        full = online_features_as_of(cfg, frame, as_of, store)
        return full[[*cols, ds.timestamp_column, *names]]
    as_of_ns, matrix = store.latest(cfg, entity_keys_from_columns(values, n))
    if features is None:
        positions: Iterable[int] = range(len(names))
    else:
        pos = {d.name: i for i, d in enumerate(feature_registry(cfg))}
        positions = [pos[name] for name in names]
    # One frame from column arrays: inserting columns one by one into a frame costs several times more.
    stamp = np.full(n, as_of_ns, dtype="int64").view("datetime64[ns]")
    data: dict[str, Any] = dict(zip(cols, values, strict=True))
    data[ds.timestamp_column] = pd.DatetimeIndex(stamp, dtype=_UTC_NS)
    for name, i in zip(names, positions, strict=True):
        data[name] = matrix[:, i]
    out = pd.DataFrame(data, copy=False)
    return out if len(data) == len(cols) + 1 + len(names) else out[[*cols, ds.timestamp_column, *names]]


def list_features(config: str | os.PathLike[str] | MlopsConfig | None = None) -> pd.DataFrame:
    """Name, entity, definition, window, TTL, boundary, owning asset and code version of every feature."""
    cfg = _config(config)
    version = features_code_version(cfg)
    rows = [
        {
            **d.as_dict(),
            "asset": f"{cfg.model.name}/features",
            "store": store_name(cfg),
            "features_code_version": version,
        }
        for d in feature_registry(cfg)
    ]
    cols = [
        "name", "entity", "source", "transformation", "window", "ttl", "boundary", "definition",
        "description", "code_version", "features_code_version", "asset", "store",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


# Kept here so the lead's asset can import everything feature-related from one module if it prefers.
_ = lookback
