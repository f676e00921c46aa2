"""The point-in-time engine: the one piece of code that computes every window feature, offline and online.

Given *known* events (entity key, timestamp, numeric source values) and *queries* (entity key, time ``t``), each
feature of a query is computed from the known events of the same entity whose timestamp lies in
``[t - window, t)``. Offline, the queries are the events themselves (and the known events are those events plus
the history before them); online, the known events come from the online store and the queries are the rows to
score. Same function, same arithmetic, same order of summation (oldest to newest within the window), so the
two agree bit for bit on the same events.

Vectorized: events sorted by (entity, time) once; each query's window is a slice ``[start, end)`` of that order
found with one ``searchsorted`` on a composite integer key; "last" / "time since" / "count" come from prefix
arrays in O(n); moments (mean, sum, std, trend) are accumulated slice position by slice position, which costs
O(n x longest window in events) and keeps the summation order independent of what else is in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_assets.features.feature_set import FeatureDefinition, feature_registry, passthrough_columns

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig

DAY_NS = 86_400 * 10**9
_KEY_SEP = "\x1f"
_MOMENTS = {"mean", "sum", "std", "trend"}
_CHUNK = 131_072


class FeatureInputError(ValueError):
    """Input rows that the feature engine cannot use; the message names the column."""


# ---------------------------------------------------------------------------------------------- input handling
def timestamps_ns(frame: pd.DataFrame, column: str, *, coerce: bool = False) -> np.ndarray:
    """The timestamp column as int64 nanoseconds since the epoch (UTC).

    ``coerce=False`` (internal data) demands tz-aware datetimes; ``coerce=True`` (serving input) also accepts
    ISO strings and naive datetimes, taken as UTC.
    """
    if column not in frame.columns:
        raise FeatureInputError(f"timestamp column {column!r} is missing")
    s = frame[column]
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        if not coerce:
            raise FeatureInputError(
                f"timestamp column {column!r} must be tz-aware UTC datetimes, got dtype {s.dtype}"
            )
        try:
            s = pd.to_datetime(s, utc=True, format="ISO8601")
        except (ValueError, TypeError) as err:
            raise FeatureInputError(
                f"timestamp column {column!r}: not parseable as ISO times ({err})"
            ) from None
    if s.isna().any():
        raise FeatureInputError(f"timestamp column {column!r} has missing values")
    naive = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy(dtype="datetime64[ns]").view("int64")


def key_part(value: object) -> str:
    """One spelling per entity key value, whatever the carrier: 7, 7.0, "7" (JSON, CSV, SQL) are one entity."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _normalize_key(s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s.dtype):
        return s.map(key_part).astype(object)
    return s.astype(str).astype(object)


def entity_keys(frame: pd.DataFrame, entity_columns: Sequence[str]) -> np.ndarray:
    """One key per row: int64 for a single integer column (0 for all when there are no entity columns: the
    whole stream is one entity), else strings joined as :func:`key_part` spells each value."""
    if not entity_columns:
        return np.zeros(len(frame), dtype="int64")
    missing = [c for c in entity_columns if c not in frame.columns]
    if missing:
        raise FeatureInputError(f"entity columns missing: {missing}")
    if len(entity_columns) == 1 and pd.api.types.is_integer_dtype(frame[entity_columns[0]].dtype):
        # Integer keys stay integers (fast); they meet string keys (stores, JSON) spelled as key_part does.
        return frame[entity_columns[0]].to_numpy(dtype="int64")
    if len(frame) <= 64:  # the serving path: plain Python beats pandas on a handful of rows
        cols = [frame[c].tolist() for c in entity_columns]
        return np.array(
            [_KEY_SEP.join(key_part(v) for v in vs) for vs in zip(*cols, strict=True)], dtype=object
        )
    parts = [_normalize_key(frame[c]) for c in entity_columns]
    key = parts[0]
    for p in parts[1:]:
        key = key + _KEY_SEP + p
    return key.to_numpy(dtype=object)


def key_strings(keys: np.ndarray) -> np.ndarray:
    """Keys as strings (how the online store holds them)."""
    return keys.astype(str).astype(object) if keys.dtype.kind in "iu" else keys


def entity_keys_from_records(
    records: Sequence[dict[str, object]], entity_columns: Sequence[str]
) -> list[str]:
    """The keys of entity dicts (serving requests), spelled exactly like :func:`key_strings` of
    :func:`entity_keys`."""
    if not entity_columns:
        return ["0"] * len(records)
    return [_KEY_SEP.join(key_part(r[c]) for c in entity_columns) for r in records]


def entity_keys_from_columns(values: Sequence[Sequence[object]], n: int) -> list[str]:
    """The keys of ``n`` entities given as one list of values per entity column (``[]``: no entity columns),
    spelled exactly like :func:`entity_keys_from_records`; the lookup hot path, without a dict per row."""
    if not values:
        return ["0"] * n
    # ints and strings are spelled by str() (key_part's answer), without its isinstance checks
    parts = [
        [v if type(v) is str else str(v) if type(v) is int else key_part(v) for v in vs] for vs in values
    ]
    return parts[0] if len(parts) == 1 else [_KEY_SEP.join(p) for p in zip(*parts, strict=True)]


def source_columns(defs: Sequence[FeatureDefinition]) -> list[str]:
    """The distinct source columns, in first-use order."""
    return list(dict.fromkeys(d.source for d in defs))


def source_values(cfg: MlopsConfig, frame: pd.DataFrame, sources: Sequence[str]) -> dict[str, np.ndarray]:
    """Each source column as float64: the label as its positive-class indicator, other columns as numbers."""
    ds = cfg.dataset
    out: dict[str, np.ndarray] = {}
    for src in sources:
        if src not in frame.columns:
            raise FeatureInputError(f"feature source column {src!r} is missing from the data")
        s = frame[src]
        if src == ds.label_column:
            ind = (s == ds.positive_label).astype("float64")
            out[src] = np.where(s.isna().to_numpy(), np.nan, ind.to_numpy())
        elif pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            out[src] = s.astype("float64").to_numpy(na_value=np.nan)
        else:
            raise FeatureInputError(
                f"feature source column {src!r} has dtype {s.dtype}: window features need numbers"
            )
    return out


@dataclass
class Events:
    """Known events in numeric form: what the engine reads."""

    keys: np.ndarray  # entity keys: int64, or an object array of strings (see entity_keys)
    ts: np.ndarray  # int64 ns UTC
    values: dict[str, np.ndarray]  # source -> float64

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_frame(cls, cfg: MlopsConfig, frame: pd.DataFrame, sources: Sequence[str]) -> Events:
        ds = cfg.dataset
        return cls(
            keys=entity_keys(frame, ds.entity_columns),
            ts=timestamps_ns(frame, ds.timestamp_column),
            values=source_values(cfg, frame, sources),
        )

    @classmethod
    def concat(cls, parts: Sequence[Events], sources: Sequence[str]) -> Events:
        return cls(
            keys=np.concatenate([p.keys for p in parts]) if parts else np.empty(0, dtype=object),
            ts=np.concatenate([p.ts for p in parts]) if parts else np.empty(0, dtype="int64"),
            values={s: np.concatenate([p.values[s] for p in parts]) for s in sources}
            if parts
            else {s: np.empty(0) for s in sources},
        )


# ---------------------------------------------------------------------------------------------- the engine
def evaluate(
    defs: Sequence[FeatureDefinition], known: Events, query_keys: np.ndarray, query_ts: np.ndarray
) -> dict[str, np.ndarray]:
    """Every feature of ``defs`` for each query, from the known events strictly before the query's time."""
    nq, nk = len(query_ts), len(known)
    out: dict[str, np.ndarray] = {}
    if not defs:
        return out
    if nk == 0:
        return {
            d.name: (np.zeros(nq) if d.transformation in ("count", "rate") else np.full(nq, np.nan))
            for d in defs
        }

    kc, qc = _codes(known.keys, query_keys)
    sources = source_columns(defs)

    # Rank of each known time among the distinct known times (one sort instead of a hash-based unique).
    t_order = np.argsort(known.ts)
    t_sorted = known.ts[t_order]
    new_t = np.concatenate([[True], t_sorted[1:] != t_sorted[:-1]])
    uniq_t = t_sorted[new_t]
    rank = np.empty(nk, dtype="int64")
    rank[t_order] = np.cumsum(new_t) - 1
    # Composite key: entity code, then time rank. A query at time t for entity c sorts before every known
    # event of c at or after t, and after every one before t.
    base = np.int64(len(uniq_t) + 1)
    kkey = kc * base + rank
    order = np.argsort(kkey)  # equal keys (tied events) are put in a canonical order below
    kkey, kc, kts = kkey[order], kc[order], known.ts[order]
    vals = {s: known.values[s][order] for s in sources}
    # Events of one entity at one instant: order them by value so that the summation order does not depend
    # on the order in which a store returned them.
    same = kkey[1:] == kkey[:-1]
    if same.any():
        tie = np.lexsort((*[np.nan_to_num(vals[s], nan=-np.inf) for s in reversed(sources)], kkey))
        kkey, kc, kts = kkey[tie], kc[tie], kts[tie]
        vals = {s: v[tie] for s, v in vals.items()}
        # Tied events are one observation for "last": the largest of their values.
        run_start = np.concatenate([[True], kkey[1:] != kkey[:-1]])
        run_id = np.cumsum(run_start) - 1
        tied_max = {s: np.fmax.reduceat(v, np.flatnonzero(run_start))[run_id] for s, v in vals.items()}
    else:
        tied_max = vals

    q_order = np.argsort(query_ts) if nq >= 4096 else None  # shared by every window: t - w keeps the order

    def first_at_or_after(t: np.ndarray) -> np.ndarray:
        return _search(kkey, qc * base + _search(uniq_t, t, q_order))

    end = first_at_or_after(query_ts)
    idx = np.arange(nk)
    last_valid = {s: np.maximum.accumulate(np.where(~np.isnan(v), idx, -1)) for s, v in vals.items()}

    by_window: dict[int, list[FeatureDefinition]] = {}
    for d in defs:
        by_window.setdefault(int(d.window_td.value), []).append(d)

    for w_ns, wdefs in by_window.items():
        start = first_at_or_after(query_ts - w_ns)
        moment_sources = list(dict.fromkeys(d.source for d in wdefs if d.transformation in _MOMENTS))
        moments = _moments(vals, kts, moment_sources, start, end, query_ts, last_valid)
        for d in wdefs:
            out[d.name] = _feature(d, vals, tied_max, kts, start, end, query_ts, last_valid, moments)
    return {d.name: out[d.name] for d in defs}


def _search(sorted_arr: np.ndarray, needles: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """``searchsorted(side="left")`` with the needles visited in sorted order: cache-friendly on big arrays."""
    if len(needles) < 4096:
        return np.searchsorted(sorted_arr, needles, side="left")
    o = np.argsort(needles) if order is None else order
    out = np.empty(len(needles), dtype="int64")
    out[o] = np.searchsorted(sorted_arr, needles[o], side="left")
    return out


def _codes(known_keys: np.ndarray, query_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer entity codes shared by known events and queries (integer keys stay integers: fast)."""
    a, b = known_keys, query_keys
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        both = np.concatenate([a.astype("int64"), b.astype("int64")])
    else:
        if a.dtype.kind in "iu":
            a = a.astype(str).astype(object)
        if b.dtype.kind in "iu":
            b = b.astype(str).astype(object)
        both = np.concatenate([a, b])
    codes, _ = pd.factorize(both, use_na_sentinel=False)
    codes = codes.astype("int64")
    return codes[: len(a)], codes[len(a) :]


def _newest(prefix: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Index of the newest flagged event in each window, -1 when there is none."""
    j = prefix[np.maximum(end - 1, 0)]
    return np.where((end > start) & (j >= start), j, -1)


def _feature(
    d: FeatureDefinition,
    vals: dict[str, np.ndarray],
    tied_max: dict[str, np.ndarray],
    kts: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    qts: np.ndarray,
    last_valid: dict[str, np.ndarray],
    moments: dict[str, dict[str, np.ndarray]],
) -> np.ndarray:
    v = vals[d.source]
    ttl_ns = int(d.ttl_td.value)
    window_days = d.window_td.value / DAY_NS
    t = d.transformation
    if t in ("count", "rate"):
        valid = ~np.isnan(v)
        csum = np.concatenate([[0], np.cumsum(valid, dtype="int64")])
        n = (csum[end] - csum[start]).astype("float64")
        return n if t == "count" else n / window_days
    if t == "time_since":
        flagged = ~np.isnan(v) & (v != 0)
        prefix = np.maximum.accumulate(np.where(flagged, np.arange(len(v)), -1))
        j = _newest(prefix, start, end)
    else:
        j = _newest(last_valid[d.source], start, end)
    fresh = (j >= 0) & (kts[np.maximum(j, 0)] >= qts - ttl_ns)
    if t == "last":
        return np.where(fresh, tied_max[d.source][np.maximum(j, 0)], np.nan)
    if t == "time_since":
        return np.where(fresh, (qts - kts[np.maximum(j, 0)]) / DAY_NS, np.nan)
    m = moments[d.source]
    n = m["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if t == "sum":
            res = m["shift"] * n + m["sx"]
            ok = n > 0
        elif t == "mean":
            res = m["shift"] + m["sx"] / n
            ok = n > 0
        elif t == "std":
            var = (m["sxx"] - m["sx"] * m["sx"] / n) / (n - 1)
            res = np.sqrt(np.maximum(var, 0.0))
            ok = n > 1
        elif t == "trend":
            stt = m["stt"] - m["st"] * m["st"] / n
            res = (m["stx"] - m["st"] * m["sx"] / n) / stt
            # Two distinct times at least (a tiny tolerance against rounding for ties).
            ok = (n > 1) & (stt > 1e-12)
        else:  # pragma: no cover - the settings model only admits the transformations above
            raise ValueError(f"unknown transformation {t!r}")
    return np.where(ok & fresh, res, np.nan)


def _moments(
    vals: dict[str, np.ndarray],
    kts: np.ndarray,
    sources: list[str],
    start: np.ndarray,
    end: np.ndarray,
    qts: np.ndarray,
    last_valid: dict[str, np.ndarray],
) -> dict[str, dict[str, np.ndarray]]:
    """Shifted sums over each window, accumulated oldest to newest (deterministic for the same events).

    Values are shifted by the window's newest value (numerically stable variance and slope); times are days
    relative to the query.
    """
    if not sources:
        return {}
    nq = len(qts)
    ns = len(sources)
    V = np.column_stack([vals[s] for s in sources])
    shift = np.column_stack(
        [np.nan_to_num(vals[s][np.maximum(_newest(last_valid[s], start, end), 0)]) for s in sources]
    )
    acc = {k: np.zeros((nq, ns)) for k in ("n", "sx", "sxx", "st", "stt", "stx")}
    length = end - start
    for lo in range(0, nq, _CHUNK):
        hi = min(lo + _CHUNK, nq)
        st_c, len_c = start[lo:hi], length[lo:hi]
        for k in range(int(len_c.max()) if hi > lo else 0):
            rows = np.flatnonzero(len_c > k)
            j = st_c[rows] + k
            x = V[j] - shift[lo + rows]
            ok = ~np.isnan(x)
            x = np.where(ok, x, 0.0)
            okf = ok.astype("float64")
            dt = ((kts[j] - qts[lo + rows]) / DAY_NS)[:, None] * okf
            r = lo + rows
            acc["n"][r] += okf
            acc["sx"][r] += x
            acc["sxx"][r] += x * x
            acc["st"][r] += dt
            acc["stt"][r] += dt * dt
            acc["stx"][r] += dt * x
    return {s: {"shift": shift[:, i], **{k: a[:, i] for k, a in acc.items()}} for i, s in enumerate(sources)}


# ---------------------------------------------------------------------------------------------- public entry
def compute_features(
    cfg: MlopsConfig, events: pd.DataFrame, history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Features of one partition's validated events, point-in-time correct.

    ``events``: validated rows of one partition (tz-aware UTC timestamp column, entity columns, raw columns,
    label); ``history``: earlier validated rows covering at least :func:`lookback` (``None``/empty at the start
    of the data). Returns one row per event, in the same order and with the same index: timestamp, entity
    columns, every model input column (raw pass-through columns, then the window features) and the label
    column when present. A window feature of an event at ``t`` uses only events in ``[t - window, t)``.
    """
    ds = cfg.dataset
    defs = feature_registry(cfg)
    sources = source_columns(defs)
    target = Events.from_frame(cfg, events, sources)
    parts = [target]
    if history is not None and len(history):
        parts.insert(0, Events.from_frame(cfg, history, sources))
    known = Events.concat(parts, sources)
    values = evaluate(defs, known, target.keys, target.ts)
    return _assemble(cfg, events, values, include_label=ds.label_column in events.columns)


def _assemble(
    cfg: MlopsConfig, rows: pd.DataFrame, values: dict[str, np.ndarray], *, include_label: bool
) -> pd.DataFrame:
    ds = cfg.dataset
    raw = passthrough_columns(cfg, list(rows.columns))
    clash = sorted(set(raw) & set(values))
    if clash:
        raise FeatureInputError(f"feature names collide with data columns: {clash}")
    head = rows[[ds.timestamp_column, *ds.entity_columns, *raw]]
    feats = pd.DataFrame(values, index=rows.index, columns=list(values))
    parts = [head, feats]
    if include_label:
        parts.append(rows[[ds.label_column]])
    return pd.concat(parts, axis=1)
