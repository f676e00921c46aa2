"""The feature registry: the declarative ``features:`` section expanded into concrete feature definitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import pandas as pd

from mlops_assets.features.code_version import (
    FeatureDefinitionError,
    _code_version,
    _expand,
    _hash,
    _semantics,
)
from mlops_assets.features.settings import TRANSFORMATIONS, parse_duration

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig


@dataclass(frozen=True)
class FeatureDefinition:
    """One concrete feature: what it reads, how it is computed, and exactly which past it may see."""

    name: str
    entity: tuple[str, ...]  # () = over the whole stream
    source: str
    transformation: str
    window: str
    ttl: str
    description: str
    code_version: str

    @property
    def window_td(self) -> pd.Timedelta:
        return pd.Timedelta(self.window)

    @property
    def ttl_td(self) -> pd.Timedelta:
        return pd.Timedelta(self.ttl)

    @property
    def boundary(self) -> str:
        """Which events an event at time ``t`` may use: left-closed, right-open, ``t`` itself excluded."""
        return f"[t - {self.window}, t)"

    @property
    def definition(self) -> str:
        """A one-line human-readable definition."""
        return (
            f"{self.transformation}({self.source}) over events in {self.boundary}"
            + (f" per {', '.join(self.entity)}" if self.entity else " over the whole stream")
            + f"; missing when the newest observation is older than {self.ttl}: "
            + TRANSFORMATIONS[self.transformation]
        )

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["entity"] = list(self.entity)
        d["boundary"] = self.boundary
        d["definition"] = self.definition
        return d


_MEMO: dict[tuple[str, int], tuple[object, object]] = {}
_T = TypeVar("_T")


def _memo(kind: str, cfg: MlopsConfig, compute: Callable[[], _T]) -> _T:
    # Configs are frozen: cache per config object (the serving hot path asks for the registry on every call).
    key = (kind, id(cfg))
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is cfg:
        return cast(_T, hit[1])  # what ``kind`` computed for this config: the type ``compute`` returns
    value = compute()
    if len(_MEMO) > 256:
        _MEMO.clear()
    _MEMO[key] = (cfg, value)
    return value


def feature_registry(cfg: MlopsConfig) -> list[FeatureDefinition]:
    """Every window feature of the config, in definition order, each with its own code version."""
    return list(_memo("registry", cfg, lambda: _registry(cfg)))


def _registry(cfg: MlopsConfig) -> list[FeatureDefinition]:
    sem = _semantics(cfg)
    entity = tuple(cfg.dataset.entity_columns)
    return [
        FeatureDefinition(entity=entity, code_version=_hash({**d, **sem, "description": ""}), **d)
        for d in _expand(cfg)
    ]


def features_code_version(cfg: MlopsConfig) -> str:
    """A stable hash of every definition, the passthrough choice and the engine version (Dagster code_version)."""
    return _memo("version", cfg, lambda: _code_version(cfg))


def lookback(cfg: MlopsConfig) -> pd.Timedelta:
    """How much history before a partition its features need: the longest window (0 without window features)."""
    return max((d.window_td for d in feature_registry(cfg)), default=pd.Timedelta(0))


def online_retention(cfg: MlopsConfig) -> pd.Timedelta:
    """How far behind the newest event the online store keeps raw events (default: twice the lookback, so
    rows up to one lookback older than the newest event can still be completed; never less than the lookback)."""
    lb = lookback(cfg)
    ret = cfg.features.online_retention
    return max(lb, parse_duration(ret, key="features.online_retention")) if ret else 2 * lb


def passthrough_columns(cfg: MlopsConfig, columns: Sequence[str]) -> list[str]:
    """The raw columns of ``columns`` that are model inputs, in their order."""
    if not cfg.features.passthrough:
        return []
    ds = cfg.dataset
    excluded = {ds.timestamp_column, ds.label_column, *ds.entity_columns, *ds.drop_columns}
    if ds.numeric_columns is not None or ds.categorical_columns is not None:
        declared = {*(ds.numeric_columns or []), *(ds.categorical_columns or [])}
        missing = sorted(declared - set(columns))
        if missing:
            raise FeatureDefinitionError(f"declared dataset columns missing from the data: {missing}")
        return [c for c in columns if c in declared and c not in excluded]
    return [c for c in columns if c not in excluded]


def model_feature_columns(cfg: MlopsConfig, columns: Sequence[str] | None = None) -> list[str]:
    """The model's input columns, in order: raw pass-through columns, then the window features.

    When the config does not declare ``dataset.numeric_columns`` / ``categorical_columns``, the raw columns are
    only known from the data: pass ``columns`` (e.g. the columns of the features frame).
    """
    names = [d.name for d in feature_registry(cfg)]
    ds = cfg.dataset
    if columns is None:
        if cfg.features.passthrough and ds.numeric_columns is None and ds.categorical_columns is None:
            raise FeatureDefinitionError(
                "model_feature_columns: the raw input columns are inferred from the data; pass `columns` "
                "(or declare dataset.numeric_columns / dataset.categorical_columns)"
            )
        columns = [*(ds.numeric_columns or []), *(ds.categorical_columns or [])]
    feature_set = set(names)
    raw = [c for c in passthrough_columns(cfg, list(columns)) if c not in feature_set]
    return raw + names
