"""The feature code version (the hash of every feature definition) without pandas.

Split from :mod:`.feature_set` because the champion guard needs the *current* feature version on the light
``mlops-assets rollback`` path, which must not import pandas; :mod:`.feature_set` re-exports all of it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import TYPE_CHECKING

from mlops_assets.features.settings import _duration_for_check

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig

# Bump whenever the engine's results change for the same definitions: it is part of every code version.
ENGINE_VERSION = "1"


class FeatureDefinitionError(ValueError):
    """A feature definition that cannot be used with this dataset; the message names the definition."""


def _expand(cfg: MlopsConfig) -> list[dict[str, str]]:
    ds = cfg.dataset
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    reserved = {ds.timestamp_column, *ds.entity_columns}
    for i, spec in enumerate(cfg.features.definitions):
        where = f"features.definitions.{i}"
        for src in spec.sources:
            if src in reserved:
                raise FeatureDefinitionError(f"{where}: source {src!r} is the timestamp or an entity key")
            if src in ds.drop_columns:
                raise FeatureDefinitionError(f"{where}: source {src!r} is in dataset.drop_columns")
            for win in spec.windows:
                w = _duration_for_check(win, key=f"{where}.window")
                ttl = _duration_for_check(spec.ttl, key=f"{where}.ttl") if spec.ttl else w
                name = spec.name or f"{src}_{spec.transformation}_{win}"
                if name in seen:
                    raise FeatureDefinitionError(f"{where}: feature name {name!r} is defined twice")
                if name in reserved or name == ds.label_column:
                    raise FeatureDefinitionError(
                        f"{where}: feature name {name!r} collides with a dataset column"
                    )
                seen.add(name)
                out.append(
                    {
                        "name": name,
                        "source": src,
                        "transformation": spec.transformation,
                        # Canonical spellings so that "7D" and "168h" hash the same.
                        "window": _canonical(w),
                        "ttl": _canonical(ttl),
                        "description": spec.description or "",
                    }
                )
    return out


def _canonical(td: timedelta) -> str:
    """One spelling per duration ("7D" and "168h" are both "7D")."""
    # A pd.Timedelta (an unusual spelling went through pandas) carries nanoseconds; a plain timedelta does not.
    value = getattr(td, "value", None)
    ns = int(value) if value is not None else (td // timedelta(microseconds=1)) * 1000
    for unit, size in (("D", 86_400 * 10**9), ("h", 3_600 * 10**9), ("min", 60 * 10**9), ("s", 10**9)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def _hash(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _semantics(cfg: MlopsConfig) -> dict[str, object]:
    # What else changes values: the entity keys, and which label value counts as positive (label sources).
    ds = cfg.dataset
    return {
        "engine": ENGINE_VERSION,
        "entity": list(ds.entity_columns),
        "label": ds.label_column,
        "positive_label": repr(ds.positive_label),
        "timestamp": ds.timestamp_column,
    }


def _code_version(cfg: MlopsConfig) -> str:
    payload = {
        "definitions": [{k: v for k, v in d.items() if k != "description"} for d in _expand(cfg)],
        "passthrough": cfg.features.passthrough,
        "drop": sorted(cfg.dataset.drop_columns),
        **_semantics(cfg),
    }
    return _hash(payload)


def current_feature_version(cfg: MlopsConfig) -> str:
    """The code version of ``cfg``'s features (what :func:`~.feature_set.features_code_version` returns, uncached)."""
    return _code_version(cfg)
