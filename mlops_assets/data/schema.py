"""Data contracts: a spec inferred from reference data, checked by Pandera, judged by the quarantine policy.

Three layers, kept apart:

* :func:`infer_spec` reads reference data (the champion's training window, or the earliest partitions before any
  champion) and the config, and writes down what a good batch looks like: columns, kinds, plausibility ranges,
  categories, labels, keys. The spec is plain JSON, stored and shown in the UI.
* :func:`to_pandera` turns the spec into a ``pandera`` schema. Validation is lazy, so every failure in a batch is
  collected in one pass, element by element, with the failing rows' indices.
* :func:`validate_batch` groups those failures into the gates (one per property) and applies the policy:

  - a missing or renamed column, a changed dtype, unknown labels or categories, duplicate keys, a partition with
    fewer than ``min_rows`` rows, or a column whose null fraction exceeds ``max_null_fraction`` (10% by default,
    whatever the reference holds) in any partition: the batch is **blocked**;
  - values outside the plausibility range: the rows are **quarantined** (kept, inspectable, excluded downstream)
    while they are at most ``max_quarantine_fraction`` of their partition (at least one row is always allowed),
    and the batch is **blocked** above that: a stray reading is noise, a corrupt feed is not.

Plausibility ranges are deliberately wide: the reference's ``range_quantiles`` widened by ``range_margin`` times
their width on each side. Ordinary drift passes (drift is the drift detector's business; blocking it would stop the
retraining that cures it); a corrupt value such as 999,999,999 does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from mlops_assets.catalogue import DatasetShape, GateResult, data_gate, data_gates
from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import row_keys

PARTITION_COLUMN = "__partition__"

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # numeric | categorical
    min: float | None = None
    max: float | None = None
    categories: list[Any] | None = None


@dataclass(frozen=True)
class DataSpec:
    timestamp_column: str
    label_column: str
    labels: list[Any]
    entity_columns: list[str]
    columns: list[ColumnSpec]
    max_null_fraction: float
    min_rows: int
    max_quarantine_fraction: float
    max_unseen_category_fraction: float
    freq: str
    max_label_null_fraction: float = 0.5
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_columns(self) -> list[str]:
        return [
            self.timestamp_column,
            *self.entity_columns,
            *(c.name for c in self.columns),
            self.label_column,
        ]

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        data = dict(data)
        data["columns"] = [ColumnSpec(**c) for c in data["columns"]]
        return cls(**data)

    @property
    def version(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def feature_kinds(frame: pd.DataFrame, cfg: MlopsConfig) -> dict[str, str]:
    """Kind of every non-key, non-label column: from the config when given, else inferred from dtypes."""
    ds = cfg.dataset
    reserved = {ds.timestamp_column, ds.label_column, *ds.entity_columns, PARTITION_COLUMN}
    candidates = [c for c in frame.columns if c not in reserved]
    cats = set(ds.categorical_columns or [])
    nums = set(ds.numeric_columns or [])
    for name in sorted((cats | nums) - set(candidates)):
        if name not in frame.columns:
            raise ValueError(
                f"dataset: column {name!r} named in categorical_columns/numeric_columns is not in the data"
            )
    kinds = {}
    for col in candidates:
        if col in cats:
            kinds[col] = CATEGORICAL
        elif col in nums:
            kinds[col] = NUMERIC
        elif ds.categorical_columns is not None and ds.numeric_columns is not None:
            continue  # both lists given: anything else is not a feature
        elif pd.api.types.is_bool_dtype(frame[col]) or not pd.api.types.is_numeric_dtype(frame[col]):
            kinds[col] = CATEGORICAL
        else:
            kinds[col] = NUMERIC
    return kinds


def infer_spec(
    reference: pd.DataFrame, cfg: MlopsConfig, *, reference_info: dict[str, Any] | None = None
) -> DataSpec:
    """What a good batch looks like, learned from ``reference`` and bounded by the config's policy."""
    ds, val = cfg.dataset, cfg.validation
    if reference.empty:
        raise ValueError("reference data for the schema is empty")
    kinds = feature_kinds(reference, cfg)
    columns = []
    q_lo, q_hi = val.range_quantiles
    for name, kind in kinds.items():
        s = reference[name]
        if kind == NUMERIC:
            values = pd.to_numeric(s, errors="coerce").dropna().astype(float)
            if values.empty:
                columns.append(ColumnSpec(name, kind))
                continue
            lo, hi = float(values.quantile(q_lo)), float(values.quantile(q_hi))
            width = hi - lo
            if width == 0:
                width = max(abs(hi), 1.0)
            columns.append(
                ColumnSpec(name, kind, lo - val.range_margin * width, hi + val.range_margin * width)
            )
        else:
            cats = sorted({_plain(v) for v in s.dropna().unique()}, key=str)
            # id-like columns (too many distinct values) keep no category list: new values are expected there
            columns.append(
                ColumnSpec(name, kind, categories=cats if len(cats) <= val.max_checked_categories else None)
            )
    labels = sorted({_plain(v) for v in reference[ds.label_column].dropna().unique()}, key=str)
    if len(labels) != 2:
        raise ValueError(
            f"label column {ds.label_column!r}: binary classification needs two classes in the reference data, "
            f"found {labels[:10]}"
        )
    if _plain(ds.positive_label) not in labels and str(ds.positive_label) not in map(str, labels):
        raise ValueError(f"dataset.positive_label {ds.positive_label!r} is not one of the labels {labels}")
    return DataSpec(
        timestamp_column=ds.timestamp_column,
        label_column=ds.label_column,
        labels=labels,
        entity_columns=list(ds.entity_columns),
        columns=columns,
        max_null_fraction=val.max_null_fraction,
        min_rows=val.min_rows,
        max_quarantine_fraction=val.max_quarantine_fraction,
        max_unseen_category_fraction=val.max_unseen_category_fraction,
        freq=cfg.partitions.freq,
        max_label_null_fraction=val.max_label_null_fraction,
        reference=reference_info or {},
    )


def _plain(v: Any) -> Any:
    """numpy scalars to Python ones, so specs serialize and compare cleanly."""
    return v.item() if isinstance(v, np.generic) else v


def _null_limits(spec: DataSpec) -> dict[str, float]:
    """The null-fraction ceiling of every value column: the absolute limit, the label's own for the label."""
    limits = {c.name: spec.max_null_fraction for c in spec.columns}
    limits[spec.label_column] = spec.max_label_null_fraction
    return limits


def to_pandera(spec: DataSpec) -> pa.DataFrameSchema:
    """The Pandera schema for one batch (with its rows' partition keys in ``__partition__``)."""
    columns: dict[str, pa.Column] = {
        spec.timestamp_column: pa.Column("datetime64[ns, UTC]", nullable=False),
        PARTITION_COLUMN: pa.Column(str, nullable=False),
    }
    for ent in spec.entity_columns:
        columns[ent] = pa.Column(nullable=False)
    for c in spec.columns:
        if c.kind == NUMERIC:
            checks = []
            if c.min is not None:
                checks.append(pa.Check.in_range(c.min, c.max, name="plausible_range"))
            columns[c.name] = pa.Column("float64", coerce=True, nullable=True, checks=checks)
        else:
            columns[c.name] = pa.Column(nullable=True)
    columns[spec.label_column] = pa.Column(
        nullable=True, checks=[pa.Check.isin(spec.labels, name="known_label")]
    )
    value_columns = [c.name for c in spec.columns] + [spec.label_column]
    limit = spec.max_null_fraction

    limits = _null_limits(spec)

    def null_fractions_ok(df: pd.DataFrame) -> pd.DataFrame:
        present = [c for c in value_columns if c in df.columns]
        return df[present].isna().groupby(df[PARTITION_COLUMN]).mean() <= pd.Series(limits)[present]

    def min_rows_ok(df: pd.DataFrame) -> pd.Series:
        return df.groupby(PARTITION_COLUMN).size() >= spec.min_rows

    checks = [
        pa.Check(null_fractions_ok, name="max_null_fraction", error=f"null fraction above {limit:.0%}"),
        pa.Check(min_rows_ok, name="min_rows", error=f"fewer than {spec.min_rows} rows"),
    ]
    unique = [spec.timestamp_column, *spec.entity_columns] if spec.entity_columns else None
    return pa.DataFrameSchema(columns, checks=checks, strict=True, unique=unique, report_duplicates="all")


# -- the gates -------------------------------------------------------------------------------------------------


@dataclass
class BatchValidation:
    gates: dict[str, GateResult]
    clean: pd.DataFrame  # the batch with quarantined rows removed and dtypes coerced
    quarantined: pd.DataFrame  # rows removed, with a ``quarantine_reason`` column

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates.values())


def gate_names(spec_or_cfg: DataSpec | MlopsConfig) -> list[str]:
    """The data gates that exist for a dataset (see :mod:`mlops_assets.catalogue`)."""
    if isinstance(spec_or_cfg, DataSpec):
        shape = DatasetShape(
            kinds={c.name: c.kind for c in spec_or_cfg.columns},
            categorical_columns=None,
            entity_columns=list(spec_or_cfg.entity_columns),
        )
    else:
        shape = DatasetShape.of(spec_or_cfg)
    return [g.name for g in data_gates(shape)]


def _sample(frame: pd.DataFrame, index: pd.Index, n: int = 5) -> list[dict[str, Any]]:
    rows = frame.loc[frame.index.intersection(index)].head(n)
    return json.loads(rows.to_json(orient="records", date_format="iso", default_handler=str))


def validate_batch(frame: pd.DataFrame, spec: DataSpec) -> BatchValidation:
    """Validate a batch (any number of partitions) against the spec; every failure is collected (lazy)."""
    batch = frame.reset_index(drop=True).copy()
    batch[PARTITION_COLUMN] = (
        row_keys(batch[spec.timestamp_column], spec.freq) if len(batch) else pd.Series(dtype=str)
    )
    schema = to_pandera(spec)
    try:
        coerced = schema.validate(batch, lazy=True)
        failures = pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])
    except SchemaErrors as err:
        failures = err.failure_cases
        coerced = err.data
    return _judge(batch, coerced, failures, spec)


def _judge(
    batch: pd.DataFrame, coerced: pd.DataFrame, failures: pd.DataFrame, spec: DataSpec
) -> BatchValidation:
    fc = failures.copy()
    fc["check"] = fc["check"].astype(str)
    parts = batch[PARTITION_COLUMN]
    sizes = parts.value_counts()
    gates: dict[str, GateResult] = {}
    names = gate_names(spec)

    def rows_of(mask: pd.Series) -> pd.Index:
        idx = pd.to_numeric(fc.loc[mask, "index"], errors="coerce").dropna().astype(int)
        return pd.Index(idx.unique())

    # Columns: missing (renamed) or unexpected.
    m_missing = fc["check"].eq("column_in_dataframe")
    m_extra = fc["check"].eq("column_in_schema")
    missing = sorted(map(str, fc.loc[m_missing, "failure_case"]))
    extra = sorted(map(str, fc.loc[m_extra, "failure_case"]))
    gates["has_expected_columns"] = GateResult(
        "has_expected_columns",
        passed=not missing and not extra,
        value=len(missing) + len(extra),
        threshold=0,
        message=data_gate("has_expected_columns").description,
        failing_columns=missing + extra,
        details={"missing": missing, "unexpected": extra, "expected": spec.expected_columns},
    )

    # Dtypes: coercion failures and dtype mismatches.
    m_dtype = fc["check"].str.startswith(("coerce_dtype", "dtype(")) | fc["schema_context"].eq("Column") & fc[
        "check"
    ].str.contains("dtype", regex=False)
    bad_dtype_cols = sorted(set(map(str, fc.loc[m_dtype, "column"].dropna())))
    dtype_rows = rows_of(m_dtype)
    gates["has_expected_dtypes"] = GateResult(
        "has_expected_dtypes",
        passed=not bad_dtype_cols,
        value=len(bad_dtype_cols),
        threshold=0,
        message=data_gate("has_expected_dtypes").description,
        failing_columns=bad_dtype_cols,
        failing_partitions=sorted(parts.loc[parts.index.intersection(dtype_rows)].unique().tolist()),
        sample=_sample(batch, dtype_rows),
        details={"bad_values": list(map(str, fc.loc[m_dtype, "failure_case"].head(10)))},
    )

    # Null fractions per partition and column (measured directly; Pandera says which failed).
    value_cols = [c.name for c in spec.columns if c.name in batch.columns] + (
        [spec.label_column] if spec.label_column in batch.columns else []
    )
    null_frac = batch[value_cols].isna().groupby(parts).mean() if len(batch) else pd.DataFrame()
    limits = pd.Series(_null_limits(spec))[null_frac.columns] if null_frac.size else pd.Series(dtype=float)
    worst = (
        float(null_frac.drop(columns=[spec.label_column], errors="ignore").to_numpy().max())
        if null_frac.size
        else 0.0
    )
    over = null_frac > limits if null_frac.size else pd.DataFrame()
    gates["null_fraction_within_limit"] = GateResult(
        "null_fraction_within_limit",
        passed=not bool(over.to_numpy().any()) if over.size else True,
        value=round(worst, 6),
        threshold=spec.max_null_fraction,
        message=data_gate("null_fraction_within_limit").description,
        failing_partitions=sorted(over.index[over.any(axis=1)].tolist()) if over.size else [],
        failing_columns=sorted(over.columns[over.any(axis=0)].tolist()) if over.size else [],
        details={
            "label_limit": spec.max_label_null_fraction,
            "worst": {
                f"{p}/{c}": round(float(null_frac.loc[p, c]), 4)
                for p, c in zip(*np.nonzero(over.to_numpy()), strict=True)
                for p, c in [(over.index[p], over.columns[c])]
            }
            if over.size
            else {},
        },
    )

    # Plausibility: quarantine a few rows, block a corrupt feed.
    m_range = fc["check"].str.startswith("plausible_range") | fc["check"].str.startswith("in_range")
    range_rows = rows_of(m_range)
    bad_per_part = parts.loc[range_rows].value_counts() if len(range_rows) else pd.Series(dtype=int)
    allowed = (sizes * spec.max_quarantine_fraction // 1).clip(lower=1).astype(int)  # floor, at least one row
    blocked_parts = sorted(str(p) for p, n in bad_per_part.items() if n > allowed.get(p, 1))
    frac = (bad_per_part / sizes.reindex(bad_per_part.index)).max() if len(bad_per_part) else 0.0
    range_cols = sorted(set(map(str, fc.loc[m_range, "column"].dropna())))
    gates["values_plausible"] = GateResult(
        "values_plausible",
        passed=not blocked_parts,
        value=round(float(frac), 6),
        threshold=spec.max_quarantine_fraction,
        message=data_gate("values_plausible").description,
        failing_partitions=blocked_parts,
        failing_columns=range_cols,
        sample=_sample(batch, range_rows),
        details={
            "out_of_range_rows": len(range_rows),
            "quarantined_partitions": sorted(set(bad_per_part.index) - set(blocked_parts)),
            "ranges": {c.name: [c.min, c.max] for c in spec.columns if c.name in range_cols},
        },
    )

    m_label = fc["column"].astype(str).eq(spec.label_column) & fc["check"].str.startswith(
        ("isin", "known_label")
    )

    def row_gate(name: str, rows: pd.Index, details: dict[str, Any]) -> GateResult:
        """A gate that no row may fail: the count of failing rows, their partitions and a sample."""
        return GateResult(
            name,
            passed=len(rows) == 0,
            value=len(rows),
            threshold=0,
            message=data_gate(name).description,
            failing_partitions=sorted(parts.loc[rows].unique().tolist()) if len(rows) else [],
            sample=_sample(batch, rows),
            details=details,
        )

    gates["labels_known"] = row_gate(
        "labels_known",
        rows_of(m_label),
        {"expected": spec.labels, "unknown": sorted(map(str, fc.loc[m_label, "failure_case"].unique()))[:20]},
    )

    if "categories_known" in names:
        unseen = {}
        unseen_rows = pd.Index([])
        for c in spec.columns:
            if c.kind != CATEGORICAL or c.categories is None or c.name not in batch.columns:
                continue
            s = batch[c.name]
            mask = s.notna() & ~s.isin(c.categories or [])
            if mask.any():
                unseen[c.name] = sorted(map(str, s[mask].unique()))[:10]
                unseen_rows = unseen_rows.union(batch.index[mask])
        unseen_frac = (
            parts.loc[unseen_rows].value_counts() / sizes if len(unseen_rows) else pd.Series(dtype=float)
        )
        unseen_frac = unseen_frac.dropna()
        bad_parts = sorted(unseen_frac.index[unseen_frac > spec.max_unseen_category_fraction].tolist())
        gates["categories_known"] = GateResult(
            "categories_known",
            passed=not bad_parts,
            value=round(float(unseen_frac.max()), 6) if len(unseen_frac) else 0.0,
            threshold=spec.max_unseen_category_fraction,
            message=data_gate("categories_known").description,
            failing_partitions=bad_parts,
            failing_columns=sorted(unseen),
            sample=_sample(batch, unseen_rows),
            details={"unseen": unseen},
        )

    if "keys_unique" in names:
        m_dup = fc["check"].str.contains("uniqueness", regex=False)
        gates["keys_unique"] = row_gate(
            "keys_unique", rows_of(m_dup), {"key": [spec.timestamp_column, *spec.entity_columns]}
        )

    small = sizes[sizes < spec.min_rows]
    gates["has_min_rows"] = GateResult(
        "has_min_rows",
        passed=small.empty and len(batch) > 0,
        value=int(sizes.min()) if len(sizes) else 0,
        threshold=spec.min_rows,
        message=data_gate("has_min_rows").description,
        failing_partitions=sorted(small.index.tolist()),
    )

    # Quarantine: out-of-range rows of partitions that are not blocked. Blocked batches go nowhere downstream.
    quarantine_idx = range_rows
    clean = coerced if isinstance(coerced, pd.DataFrame) else batch
    quarantined = batch.loc[batch.index.intersection(quarantine_idx)].copy()
    if len(quarantined):
        reasons = fc.loc[m_range].assign(index=lambda d: pd.to_numeric(d["index"], errors="coerce"))
        by_row = reasons.groupby("index")["column"].apply(
            lambda s: "out of range: " + ", ".join(sorted(set(s)))
        )
        quarantined["quarantine_reason"] = by_row.reindex(quarantined.index).to_numpy()
    clean = clean.drop(index=clean.index.intersection(quarantine_idx))
    return BatchValidation(gates=gates, clean=clean, quarantined=quarantined)


# How a gate's measured value over several groups of partitions combines into the value over all of them.
_COMBINE_VALUE = {
    "has_expected_columns": "columns",
    "has_expected_dtypes": "columns",
    "labels_known": "sum",
    "keys_unique": "sum",
    "has_min_rows": "min",
}


def merge_gates(parts: list[dict[str, GateResult]]) -> dict[str, GateResult]:
    """The gates over a whole batch from the gates of its groups of partitions (validated one group at a time).

    Every gate is decided per partition or per row, so the whole batch passes a gate exactly when every group
    does; measured values combine as the gate defines them (worst fraction, total failing rows, fewest rows).
    """
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, GateResult] = {}
    for name in dict.fromkeys(n for p in parts for n in p):
        gates = [p[name] for p in parts if name in p]
        columns = _union([g.failing_columns for g in gates])
        values = [g.value for g in gates if g.value is not None]
        rule = _COMBINE_VALUE.get(name, "max")
        value: float | None
        if rule == "columns":
            value = len(columns)
        elif not values:
            value = None
        elif rule == "sum":
            value = sum(values)
        elif rule == "min":
            value = min(values)
        else:
            value = max(values)
        merged[name] = GateResult(
            name,
            passed=all(g.passed for g in gates),
            value=value,
            threshold=gates[0].threshold,
            message=gates[0].message,
            failing_partitions=sorted(_union([g.failing_partitions for g in gates])),
            failing_columns=sorted(columns),
            sample=[row for g in gates for row in g.sample][:5],
            details=_merge_details([g.details for g in gates]),
        )
    return merged


def _union(lists: list[list[Any]]) -> list[Any]:
    seen: dict[str, Any] = {}
    for items in lists:
        for item in items:
            seen.setdefault(json.dumps(item, sort_keys=True, default=str), item)
    return list(seen.values())


# Detail lists that are samples, capped as :func:`_judge` caps them (for "unseen", each column's list).
_DETAIL_CAPS = {"unknown": 20, "bad_values": 10, "unseen": 10}


def _merge_details(details: list[dict[str, Any]], cap: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for d in details for k in d):
        values = [d[key] for d in details if key in d]
        first = values[0]
        limit = _DETAIL_CAPS.get(key, cap)
        if isinstance(first, list | dict) and all(v == first for v in values):
            out[key] = first
        elif isinstance(first, list):
            out[key] = _union(values)[:limit]
        elif isinstance(first, dict):
            out[key] = _merge_details(values, limit)
        elif isinstance(first, int) and not isinstance(first, bool):
            out[key] = sum(values)
        else:
            out[key] = first
    return out
