"""The ``features:`` section of ``mlops.yaml``: declarative feature definitions.

This module imports nothing from the project, so :mod:`mlops_assets.config` can import it at the top level
without an import cycle.

A definition names one or more *source* columns of the validated data, a *transformation*, one or more *windows*
and optionally a *TTL*; it expands into one feature per (source, window)::

    features:
      definitions:
        - source: rain                   # the label's past values are legitimate inputs, the current one never
          transformation: last
          window: 1D                     # -> feature "rain_last_1D": yesterday's rain
        - source: [temperature, dew point]
          transformation: mean
          window: [3D, 7D]               # -> "temperature_mean_3D", "temperature_mean_7D", ...

Every feature of an event at time ``t`` is computed from the events of the same entity (``dataset.entity_columns``;
the whole stream when there are none) whose timestamp lies in ``[t - window, t)``: strictly before ``t``, so the
event itself and any other event at exactly ``t`` are never used. ``ttl`` (default: the window) is the largest
age of the newest contributing observation; older -> the feature is missing, never stale.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Transformation = Literal["last", "mean", "sum", "count", "std", "trend", "time_since", "rate"]

TRANSFORMATIONS: dict[str, str] = {
    "last": "the most recent non-missing value in the window",
    "mean": "mean of the non-missing values in the window",
    "sum": "sum of the non-missing values in the window (missing when there are none)",
    "count": "number of non-missing values in the window (0 when there are none)",
    "std": "sample standard deviation (ddof=1) of the values in the window; needs two values",
    "trend": "least-squares slope of value against time, per day, over the window; needs two distinct times",
    "time_since": "days since the most recent non-zero value in the window (for the label: the positive class)",
    "rate": "non-missing values per day in the window (count / window length in days)",
}


def parse_duration(text: str, *, key: str) -> pd.Timedelta:
    """A fixed, positive duration such as ``1D``, ``12h``, ``90min`` (calendar units like months are not fixed)."""
    import pandas as pd  # here, not at the top: config.py imports this module on every command

    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise ValueError(f"{key}: {text!r} is not a fixed duration (examples: 1D, 7D, 12h, 30min)") from None
    if td <= pd.Timedelta(0):
        raise ValueError(f"{key}: duration must be positive, got {text!r}")
    return td


_PLAIN_DURATION = re.compile(r"(\d+)(D|h|min|s)")
_PLAIN_UNITS = {"D": "days", "h": "hours", "min": "minutes", "s": "seconds"}


def _duration_for_check(text: str, *, key: str) -> timedelta:
    """:func:`parse_duration` as a ``timedelta``, without pandas for the plain spellings (``7D``, ``12h``,
    ``30min``, ``45s``): validating the config is part of every command, and pandas costs ``rollback`` a third
    of a second. Anything else goes through pandas, so what is accepted does not change."""
    m = _PLAIN_DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        return parse_duration(text, key=key)  # a pd.Timedelta (a timedelta) compares with the plain ones
    td = timedelta(**{_PLAIN_UNITS[m.group(2)]: int(m.group(1))})
    if td <= timedelta(0):
        raise ValueError(f"{key}: duration must be positive, got {text!r}")
    return td


class FeatureSpec(BaseModel):
    """One declarative feature definition; expands into one feature per (source, window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | list[str]
    transformation: Transformation
    window: str | list[str]
    ttl: str | None = None
    # An explicit name; only for a definition that expands into exactly one feature.
    name: str | None = None
    description: str | None = None

    @field_validator("source", "window")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items or any(not str(i).strip() for i in items):
            raise ValueError("must name at least one non-empty value")
        return v

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        windows = [_duration_for_check(w, key="window") for w in self.windows]
        if self.ttl is not None:
            if self.transformation in ("count", "rate"):
                raise ValueError(f"ttl does not apply to {self.transformation!r}: an empty window counts 0")
            ttl = _duration_for_check(self.ttl, key="ttl")
            if any(ttl > w for w in windows):
                raise ValueError(
                    f"ttl {self.ttl} is longer than a window {self.windows}: the window bounds it"
                )
        if self.name is not None and len(self.sources) * len(self.windows) != 1:
            raise ValueError("name is only allowed for a definition with one source and one window")
        return self

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @property
    def windows(self) -> list[str]:
        return [self.window] if isinstance(self.window, str) else list(self.window)


class FeaturesConfig(BaseModel):
    """The ``features:`` section. Defaults: no window features, raw columns passed through to the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    definitions: list[FeatureSpec] = Field(default_factory=list)
    # Raw columns (everything but timestamp, entity keys, label and dataset.drop_columns) are model inputs too.
    passthrough: bool = True
    # How far back the online store keeps raw events behind the newest one (default: twice the longest
    # window). Rows older than (newest - online_retention + longest window) cannot be completed online and
    # are refused with an error, never answered from partial history.
    online_retention: str | None = None

    @field_validator("online_retention")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            _duration_for_check(v, key="online_retention")
        return v
