"""Reference profiles: a compact, JSON-serializable summary of a model's training data.

A profile keeps, per numeric column, the reference's quantile bin edges and, per bin, the row count and the sum of
the values (enough for a binned Kolmogorov-Smirnov test *and* a near-exact Wasserstein-1 distance); per categorical
column the frequency of each value; and null counts. Every count is kept per *season* (calendar month by default),
so a partition can be compared with the reference rows of its own season. It is stored with the MLflow model
version (``Profile.to_dict()``) and is all :func:`mlops_assets.monitoring.drift.detect_drift` needs: the training
data itself is never read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_assets.monitoring.stats import design_effect_for_median_p

PROFILE_FORMAT = 1
OTHER = "__other__"
Seasonality = Literal["month", "none"]
Block = Literal["day", "week", "month", "year"]
_PERIOD = {"day": "D", "week": "W", "month": "M", "year": "Y"}
N_SEASONS = {"month": 12, "none": 1}


@dataclass(frozen=True)
class NumericProfile:
    """One numeric column: interior quantile edges (bin ``i`` is ``(edges[i-1], edges[i]]``, the outer bins open),
    per-season counts and value sums per bin (shape ``(seasons, len(edges) + 1)``), per-season null counts."""

    name: str
    edges: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    nulls: np.ndarray
    scale: float  # robust standard deviation of the reference (IQR / 1.349, else std, else 1)
    mean: float | None
    std: float | None
    design_effect: float  # variance inflation of the test statistic from serial dependence (>= 1; see below)

    kind: Literal["numeric"] = "numeric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "sums": self.sums.tolist(),
            "nulls": self.nulls.tolist(),
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            "design_effect": self.design_effect,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NumericProfile:
        return cls(
            name=d["name"],
            edges=np.asarray(d["edges"], dtype=float),
            counts=np.asarray(d["counts"], dtype=np.int64),
            sums=np.asarray(d["sums"], dtype=float),
            nulls=np.asarray(d["nulls"], dtype=np.int64),
            scale=float(d["scale"]),
            mean=d["mean"],
            std=d["std"],
            design_effect=float(d["design_effect"]),
        )


@dataclass(frozen=True)
class CategoricalProfile:
    """One categorical column: the reference values (as strings; :data:`OTHER` collects the rare ones) and their
    per-season counts (shape ``(seasons, len(categories))``), per-season null counts."""

    name: str
    categories: list[str]
    counts: np.ndarray
    nulls: np.ndarray
    design_effect: float

    kind: Literal["categorical"] = "categorical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "nulls": self.nulls.tolist(),
            "design_effect": self.design_effect,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalProfile:
        return cls(
            name=d["name"],
            categories=[str(c) for c in d["categories"]],
            counts=np.asarray(d["counts"], dtype=np.int64),
            nulls=np.asarray(d["nulls"], dtype=np.int64),
            design_effect=float(d["design_effect"]),
        )


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class Profile:
    """The reference profile of a frame. ``season_rows[s]`` is the number of reference rows in season ``s``."""

    columns: dict[str, ColumnProfile]
    n_rows: int
    seasonality: Seasonality
    timestamp_column: str | None
    season_rows: np.ndarray
    start: str | None = None  # first and last reference timestamps (ISO), for the reader
    end: str | None = None

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c, p in self.columns.items() if isinstance(p, NumericProfile)]

    @property
    def categorical_columns(self) -> list[str]:
        return [c for c, p in self.columns.items() if isinstance(p, CategoricalProfile)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (no NaN), so ``json.dumps(profile.to_dict(), allow_nan=False)`` works."""
        return {
            "format": PROFILE_FORMAT,
            "n_rows": self.n_rows,
            "seasonality": self.seasonality,
            "timestamp_column": self.timestamp_column,
            "season_rows": self.season_rows.tolist(),
            "start": self.start,
            "end": self.end,
            "columns": [p.to_dict() for p in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        if d.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"unsupported profile format {d.get('format')!r} (this code reads {PROFILE_FORMAT})"
            )
        cols: dict[str, ColumnProfile] = {}
        for c in d["columns"]:
            if c["kind"] == "numeric":
                cols[c["name"]] = NumericProfile.from_dict(c)
            elif c["kind"] == "categorical":
                cols[c["name"]] = CategoricalProfile.from_dict(c)
            else:
                raise ValueError(f"profile column {c.get('name')!r}: unknown kind {c['kind']!r}")
        return cls(
            columns=cols,
            n_rows=int(d["n_rows"]),
            seasonality=d["seasonality"],
            timestamp_column=d["timestamp_column"],
            season_rows=np.asarray(d["season_rows"], dtype=np.int64),
            start=d.get("start"),
            end=d.get("end"),
        )


def season_index(timestamps: pd.Series, seasonality: Seasonality) -> np.ndarray:
    """The season (0-based) of each timestamp: calendar month - 1, or 0 for everything."""
    if seasonality == "none":
        return np.zeros(len(timestamps), dtype=np.int64)
    ts = pd.to_datetime(timestamps, utc=True)
    if ts.isna().any():
        raise ValueError(f"timestamp column {timestamps.name!r} has {int(ts.isna().sum())} missing values")
    return (ts.dt.month.to_numpy() - 1).astype(np.int64)


def block_index(timestamps: pd.Series, block: Block) -> np.ndarray:
    """An integer id per row for the calendar ``block`` (day, week, month, year) the timestamp falls in."""
    ts = pd.to_datetime(timestamps, utc=True).dt.tz_localize(None)
    return ts.dt.to_period(_PERIOD[block]).astype("int64").to_numpy()


def numeric_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for missing values; a clear error when it is not numeric."""
    s = frame[column]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise TypeError(f"column {column!r} is profiled as numeric but has dtype {s.dtype}")
    return s.to_numpy(dtype=float, na_value=np.nan)


def categorical_values(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as strings, null mask). Values are compared as strings so that a profile survives JSON."""
    s = frame[column]
    isnull = s.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        # 1, 1.0 and "1" are the same label: integral numbers are written without a decimal point.
        x = s.to_numpy(dtype=float, na_value=np.nan)
        out = np.empty(len(x), dtype=object)
        integral = ~isnull & (np.mod(x, 1) == 0)
        out[integral] = x[integral].astype(np.int64).astype(str)
        rest = ~isnull & ~integral
        out[rest] = x[rest].astype(str)
        out[isnull] = ""
        return out, isnull
    return s.astype("string").fillna("").to_numpy(dtype=object), isnull


# Serial dependence. Daily weather, or the many rows of one session, carry fewer independent observations than
# rows: a plain test on a 30-day partition would "detect" every warm month. The profile measures how much its own
# partition-sized blocks (calendar months by default) differ from the rest of the reference, in the very statistic
# the drift test uses, and stores the factor by which the sample sizes must shrink for the median block p-value
# to be 0.5, as it is for independent rows: the design effect. The test then
# divides both sample sizes by it. This absorbs autocorrelation *and* year-to-year variation of the seasons. With
# fewer than MIN_BLOCKS blocks it falls back to the AR(1) factor (1 + rho) / (1 - rho) of the lag-1 autocorrelation.
MIN_BLOCKS = 8
MIN_BLOCK_ROWS = 5


def _lag1(x: np.ndarray) -> float:
    """Lag-1 autocorrelation, clipped to [0, 0.99] (negative correlation would only inflate the sample size)."""
    if len(x) < 3 or np.all(x == x[0]):
        return 0.0
    a, b = x[:-1] - x.mean(), x[1:] - x.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if denom == 0.0:
        return 0.0
    return float(np.clip((a * b).sum() / denom, 0.0, 0.99))


def _ar1_effect(rho: float) -> float:
    return (1 + rho) / (1 - rho)


def _block_tables(
    codes: np.ndarray,
    seasons: np.ndarray,
    blocks: np.ndarray,
    counts: np.ndarray,
    k: int,
    min_season_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per block: its bin counts, and the leave-one-out reference counts of its season (pooled when thin)."""
    uniq, b = np.unique(blocks, return_inverse=True)
    n_blocks = len(uniq)
    table = np.bincount(b * k + codes, minlength=n_blocks * k).reshape(n_blocks, k).astype(float)
    n_b = table.sum(axis=1)
    keep = n_b >= MIN_BLOCK_ROWS
    if keep.sum() < MIN_BLOCKS:
        return None
    block_season = np.zeros(n_blocks, dtype=np.int64)
    block_season[b] = seasons  # a block lies in one season (blocks are no longer than seasons)
    ref = counts[block_season].astype(float) - table
    thin = ref.sum(axis=1) < min_season_rows
    ref[thin] = counts.sum(axis=0) - table[thin]
    table, ref, n_b = table[keep], ref[keep], n_b[keep]
    n_r = ref.sum(axis=1)
    ok = n_r > 0
    return table[ok], ref[ok], n_b[ok], n_r[ok]


def _numeric_design_effect(
    idx: np.ndarray, seasons: np.ndarray, blocks: np.ndarray, counts: np.ndarray, min_season_rows: int
) -> float | None:
    k = counts.shape[1]
    if k < 2:
        return 1.0
    t = _block_tables(idx, seasons, blocks, counts, k, min_season_rows)
    if t is None:
        return None
    table, ref, n_b, n_r = t
    d = np.abs(np.cumsum(table / n_b[:, None], axis=1) - np.cumsum(ref / n_r[:, None], axis=1))[:, :-1].max(
        axis=1
    )
    return design_effect_for_median_p(d, n_b * n_r / (n_b + n_r))


def _categorical_design_effect(
    codes: np.ndarray, seasons: np.ndarray, blocks: np.ndarray, counts: np.ndarray, min_season_rows: int
) -> float | None:
    from scipy import stats

    k = counts.shape[1]
    if k < 2:
        return 1.0
    t = _block_tables(codes, seasons, blocks, counts, k, min_season_rows)
    if t is None:
        return None
    table, ref, n_b, n_r = t
    q_b, q_r = table / n_b[:, None], ref / n_r[:, None]
    n_eff = (n_b * n_r / (n_b + n_r))[:, None]
    pooled = (table + ref) / (n_b + n_r)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pooled > 0, (q_b - q_r) ** 2 / pooled, 0.0)
    chi2 = (n_eff * terms).sum(axis=1)
    dof = max(int((counts.sum(axis=0) > 0).sum()) - 1, 1)
    return float(max(1.0, np.median(chi2) / stats.chi2.median(dof)))


def _numeric_profile(
    name: str,
    x: np.ndarray,
    seasons: np.ndarray,
    n_seasons: int,
    bins: int,
    blocks: np.ndarray | None,
    min_season_rows: int,
) -> NumericProfile:
    valid = ~np.isnan(x)
    xv = x[valid]
    sv = seasons[valid]
    nulls = np.bincount(seasons[~valid], minlength=n_seasons)
    if len(xv) == 0:
        raise ValueError(f"column {name!r} has no non-null values in the reference frame")
    levels = np.arange(1, bins) / bins
    edges = np.unique(np.quantile(xv, levels))
    idx = np.searchsorted(edges, xv, side="left")
    k = len(edges) + 1
    flat = sv * k + idx
    counts = np.bincount(flat, minlength=n_seasons * k).reshape(n_seasons, k)
    sums = np.bincount(flat, weights=xv, minlength=n_seasons * k).reshape(n_seasons, k)
    q1, q3 = np.quantile(xv, [0.25, 0.75])
    std = float(xv.std(ddof=1)) if len(xv) > 1 else 0.0
    scale = (q3 - q1) / 1.349 if q3 > q1 else (std if std > 0 else 1.0)
    effect = 1.0
    if blocks is not None:
        block_effect = _numeric_design_effect(idx, sv, blocks[valid], counts, min_season_rows)
        # Indicator of "above this season's median": the serial dependence the KS statistic actually sees.
        med = np.zeros(n_seasons)
        for s in np.unique(sv):
            med[s] = np.median(xv[sv == s])
        ar1 = _ar1_effect(_lag1((xv > med[sv]).astype(float)))
        effect = max(ar1, block_effect or 1.0)
    return NumericProfile(
        name=name,
        edges=edges,
        counts=counts,
        sums=sums,
        nulls=nulls,
        scale=float(scale),
        mean=float(xv.mean()),
        std=std,
        design_effect=float(effect),
    )


def _categorical_profile(
    name: str,
    values: np.ndarray,
    isnull: np.ndarray,
    seasons: np.ndarray,
    n_seasons: int,
    max_categories: int,
    blocks: np.ndarray | None,
    min_season_rows: int,
) -> CategoricalProfile:
    nulls = np.bincount(seasons[isnull], minlength=n_seasons)
    v = values[~isnull]
    sv = seasons[~isnull]
    if len(v) == 0:
        raise ValueError(f"column {name!r} has no non-null values in the reference frame")
    uniq, inv, freq = np.unique(v, return_inverse=True, return_counts=True)
    order = np.argsort(-freq, kind="stable")
    keep = order[:max_categories] if len(uniq) > max_categories else order
    cats = [str(uniq[i]) for i in keep]
    slot = np.full(len(uniq), len(cats), dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    if len(uniq) > max_categories:
        cats.append(OTHER)
    codes = slot[inv]
    k = len(cats)
    counts = np.bincount(sv * k + codes, minlength=n_seasons * k).reshape(n_seasons, k)
    effect = 1.0
    if blocks is not None:
        block_effect = _categorical_design_effect(codes, sv, blocks[~isnull], counts, min_season_rows)
        if block_effect is None and len(codes) > 2:
            # Lag-1 agreement beyond chance (Cohen's kappa of consecutive rows) as an AR(1) coefficient.
            same = float(np.mean(codes[1:] == codes[:-1]))
            p = counts.sum(axis=0) / counts.sum()
            chance = float((p * p).sum())
            rho = float(np.clip((same - chance) / (1 - chance), 0.0, 0.99)) if chance < 1 else 0.0
            block_effect = _ar1_effect(rho)
        effect = block_effect if block_effect is not None else 1.0
    return CategoricalProfile(
        name=name, categories=cats, counts=counts, nulls=nulls, design_effect=float(effect)
    )


def build_profile(
    frame: pd.DataFrame,
    numeric_columns: Sequence[str],
    categorical_columns: Sequence[str] = (),
    *,
    bins: int = 20,
    timestamp_column: str | None = None,
    seasonality: Seasonality = "month",
    max_categories: int = 50,
    block: Block = "month",
    min_season_rows: int = 30,
) -> Profile:
    """Profile ``frame`` (the training features) for later drift checks.

    ``bins`` quantile bins per numeric column (fewer when values tie). With a ``timestamp_column``, counts are
    kept per season (``seasonality="month"``) and the design effect of serial dependence is measured on blocks of
    one ``block`` (the partition frequency: a block is what a drift check will see); without one the profile is
    pooled (one season) and rows are treated as independent.
    """
    missing = [c for c in [*numeric_columns, *categorical_columns] if c not in frame.columns]
    if missing:
        raise KeyError(f"columns not in the reference frame: {missing}")
    overlap = set(numeric_columns) & set(categorical_columns)
    if overlap:
        raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
    if len(frame) == 0:
        raise ValueError("cannot profile an empty frame")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    start = end = None
    if timestamp_column is None:
        seasonality = "none"
    else:
        if timestamp_column not in frame.columns:
            raise KeyError(f"timestamp column {timestamp_column!r} not in the reference frame")
        ts = pd.to_datetime(frame[timestamp_column], utc=True)
        order = np.argsort(ts.to_numpy(), kind="stable")
        frame = frame.iloc[order]
        start, end = ts.min().isoformat(), ts.max().isoformat()
    n_seasons = N_SEASONS[seasonality]
    seasons = (
        season_index(frame[timestamp_column], seasonality)
        if timestamp_column is not None
        else np.zeros(len(frame), dtype=np.int64)
    )
    blocks = None
    if timestamp_column is not None:
        blocks = block_index(frame[timestamp_column], block)
    # Block-level design effects compare a block with its own season; a year spans all seasons: pooled then.
    block_min_rows = (
        min_season_rows if not (block == "year" and seasonality != "none") else np.iinfo(np.int64).max
    )
    cols: dict[str, ColumnProfile] = {}
    for c in numeric_columns:
        x = numeric_values(frame, c)
        cols[c] = _numeric_profile(c, x, seasons, n_seasons, bins, blocks, block_min_rows)
    for c in categorical_columns:
        values, isnull = categorical_values(frame, c)
        cols[c] = _categorical_profile(
            c, values, isnull, seasons, n_seasons, max_categories, blocks, block_min_rows
        )
    return Profile(
        columns=cols,
        n_rows=len(frame),
        seasonality=seasonality,
        timestamp_column=timestamp_column,
        season_rows=np.bincount(seasons, minlength=n_seasons),
        start=start,
        end=end,
    )
