"""Data contracts: a spec inferred from reference data, checked by Pandera, judged by the quarantine policy.

Three layers, kept apart:

* :func:`infer_spec` reads reference data (the champion's training window, or the earliest partitions before any
  champion) and the config, and writes down what a good batch looks like: columns, kinds, plausibility ranges,
  categories, labels, keys. The spec is plain JSON, stored and shown in the UI.
* :func:`to_pandera` turns the spec into a ``pandera`` schema. Validation is lazy, so every kind of failure in a
  batch is found in one pass; each element check keeps a few failure cases (``FAILURE_CASES``), not one per row.
* :func:`validate_batch` measures each gate with vectorized pandas (counts per partition, duplicate rows by
  hashing) and applies the policy; a gate's report holds counts and at most ``SAMPLE_ROWS`` rows, so a failing
  gate on a partition of a million rows costs seconds:

  - a missing or renamed column, a changed dtype, unknown labels or categories, rows ingested twice (exact
    duplicates, or a repeated ``dataset.unique_key``), a partition with
    fewer than ``min_rows`` rows, or a column whose null fraction exceeds ``max_null_fraction`` (10% by default)
    in any partition: the batch is **blocked**. A column that is sparse by nature (a wind gust recorded only when
    it blows) is held to its worst reference partition plus ``null_fraction_margin`` instead;
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
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from mlops_assets.catalogue import DatasetShape, GateResult, data_gate, data_gates
from mlops_assets.config import MlopsConfig
from mlops_assets.data.labels import positive_label_problem
from mlops_assets.data.partitions import row_keys
from mlops_assets.data.sources.base import SourceError

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
    # Ceiling on the null fraction above the spec's own, for a column sparse in the reference (None: the spec's).
    max_null_fraction: float | None = None


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
    unique_key: list[str] | None = None
    max_duplicate_fraction: float = 0.001
    # Share of exact copies in each reference partition: identical rows the data holds by nature.
    duplicate_rates: dict[str, float] = field(default_factory=dict)

    @property
    def expected_columns(self) -> list[str]:
        named = [
            self.timestamp_column,
            *self.entity_columns,
            *(c.name for c in self.columns),
            self.label_column,
        ]
        return [*named, *(k for k in self.unique_key or [] if k not in named)]

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
    reference: pd.DataFrame,
    cfg: MlopsConfig,
    *,
    reference_info: dict[str, Any] | None = None,
    labels_seen: Iterable[Any] = (),
) -> DataSpec:
    """What a good batch looks like, learned from ``reference`` and bounded by the config's policy.

    ``labels_seen`` are the labels of the data seen so far (stored validated data and the batch being ingested):
    with the configured positive label they complete a reference window that holds one class (see
    :func:`label_classes`).
    """
    ds, val = cfg.dataset, cfg.validation
    if reference.empty:
        raise ValueError("reference data for the schema is empty")
    kinds = feature_kinds(reference, cfg)
    columns = []
    q_lo, q_hi = val.range_quantiles
    sparse = _sparse_columns(reference, list(kinds), cfg)
    for name, kind in kinds.items():
        s = reference[name]
        if kind == NUMERIC:
            values = pd.to_numeric(s, errors="coerce").dropna().astype(float)
            if values.empty:
                columns.append(ColumnSpec(name, kind, max_null_fraction=sparse.get(name)))
                continue
            lo, hi = float(values.quantile(q_lo)), float(values.quantile(q_hi))
            width = hi - lo
            if width == 0:
                width = max(abs(hi), 1.0)
            columns.append(
                ColumnSpec(
                    name,
                    kind,
                    lo - val.range_margin * width,
                    hi + val.range_margin * width,
                    max_null_fraction=sparse.get(name),
                )
            )
        else:
            cats = sorted({_plain(v) for v in s.dropna().unique()}, key=str)
            # id-like columns (too many distinct values) keep no category list: new values are expected there
            columns.append(
                ColumnSpec(
                    name,
                    kind,
                    categories=cats if len(cats) <= val.max_checked_categories else None,
                    max_null_fraction=sparse.get(name),
                )
            )
    labels = label_classes(reference[ds.label_column], labels_seen, ds.positive_label, ds.label_column)
    absent = [c for c in ds.unique_key or [] if c not in reference.columns]
    if absent:
        raise ValueError(f"dataset.unique_key names columns that are not in the data: {absent}")
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
        unique_key=list(ds.unique_key) if ds.unique_key else None,
        max_duplicate_fraction=val.max_duplicate_fraction,
        duplicate_rates=_duplicate_rates(reference, cfg),
    )


# A partition may hold this many times the typical share of exact copies of the other reference partitions.
DUPLICATE_RATE_FACTOR = 2.0


def _duplicate_rates(reference: pd.DataFrame, cfg: MlopsConfig) -> dict[str, float]:
    """The share of exact copies (surplus rows) in each reference partition."""
    if reference.empty:
        return {}
    reference = reference if reference.index.is_unique else reference.reset_index(drop=True)
    keys = row_keys(reference[cfg.dataset.timestamp_column], cfg.partitions.freq)
    _, surplus = duplicate_rows(reference, [c for c in reference.columns if c != PARTITION_COLUMN])
    sizes = keys.value_counts()
    rates = keys.loc[surplus].value_counts().reindex(sizes.index, fill_value=0) / sizes
    return {str(k): round(float(v), 6) for k, v in sorted(rates.items())}


def duplicate_allowance(spec: DataSpec, partition: str | None = None) -> float:
    """The share of exact copies ``partition`` may hold: twice the median share of the *other* reference
    partitions, and at least ``validation.max_duplicate_fraction``.

    Identical rows are normal where rows carry no event id and time is coarse (two departures of one carrier to one
    city in the same hour: 1.4% of a week of flights described by five columns; half of a year of arrest records).
    A file sent twice adds its whole length on top. The partition being judged never counts towards its own
    allowance, so on a first ingestion, when it is part of the reference, its duplication is not learned as normal;
    the median keeps one duplicated reference partition from raising the others' allowance.
    """
    others = [r for k, r in spec.duplicate_rates.items() if k != partition]
    learned = DUPLICATE_RATE_FACTOR * float(np.median(others)) if others else 0.0
    return round(max(spec.max_duplicate_fraction, learned), 6)


def _sparse_columns(reference: pd.DataFrame, names: list[str], cfg: MlopsConfig) -> dict[str, float]:
    """Null ceilings of the columns the reference itself leaves often empty: the worst reference partition's null
    fraction plus ``validation.null_fraction_margin``, for columns where that is above ``max_null_fraction``.

    Sparse by nature is not broken (hourly weather records a gust only when there is one, 80% of hours); a column
    that goes from sparse to empty still blocks.
    """
    val = cfg.validation
    if not names or reference.empty:
        return {}
    keys = row_keys(reference[cfg.dataset.timestamp_column], cfg.partitions.freq)
    worst = reference[names].isna().groupby(keys.to_numpy()).mean().max()
    ceilings = (worst + val.null_fraction_margin).clip(upper=1.0)
    return {str(name): round(float(v), 6) for name, v in ceilings.items() if v > val.max_null_fraction}


def label_classes(
    reference: pd.Series, seen: Iterable[Any], positive: Any, column: str = "label"
) -> list[Any]:
    """The classes of the contract: the configured ``positive`` label and the other class.

    The earliest periods may hold one class only (a rare outcome that appears later), so the reference alone does
    not decide: the positive label comes from the config, and when the reference lacks the other class, a label
    ``seen`` so far (stored validated data, this batch) fills it, provided it is the only candidate. A third label,
    or two new labels competing for one place, is left out, and the ``labels_known`` gate blocks its rows.
    """
    ref = _distinct(reference.dropna().unique())
    if len(ref) > 2:
        raise SourceError(
            f"label column {column!r}: binary classification needs two classes in the reference data, "
            f"found {ref[:10]}: map them to two before ingesting"
        )
    if len(ref) == 2 and _match(positive, ref) is None:
        raise SourceError(
            positive_label_problem(positive, ref)
            or f"dataset.positive_label {positive!r} is not one of the labels {ref}"
        )
    classes = ref if _match(positive, ref) is not None else [*ref, _plain(positive)]
    if len(classes) < 2:
        new = [v for v in _distinct(seen) if _match(v, classes) is None]
        if len(new) == 1:
            classes.append(new[0])
    return sorted(classes, key=str)


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        v = _plain(v)
        if not pd.isna(v) and _match(v, out) is None:
            out.append(v)
    return sorted(out, key=str)


def _match(value: Any, labels: list[Any]) -> Any:
    """The element of ``labels`` that is ``value`` (1 matches 1.0 and "1": a label column's dtype varies with
    nulls and the file format), or None."""
    value = _plain(value)
    for label in labels:
        if label == value or str(label) == str(value):
            return label
    return None


def _plain(v: Any) -> Any:
    """numpy scalars to Python ones, so specs serialize and compare cleanly."""
    return v.item() if isinstance(v, np.generic) else v


def _null_limits(spec: DataSpec) -> dict[str, float]:
    """The null-fraction ceiling of every value column: the absolute limit, the label's own for the label."""
    limits = {c.name: c.max_null_fraction or spec.max_null_fraction for c in spec.columns}
    limits[spec.label_column] = spec.max_label_null_fraction
    return limits


# Failure cases Pandera keeps per element check. The gates count failing rows themselves (vectorized pandas), so
# Pandera only has to say which checks failed; one failure case per failing row made a failing gate on a big
# partition cost minutes.
FAILURE_CASES = 5
# Failing rows shown in a gate's report: evidence to read, never every failing row.
SAMPLE_ROWS = 5


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
                checks.append(
                    pa.Check.in_range(c.min, c.max, name="plausible_range", n_failure_cases=FAILURE_CASES)
                )
            columns[c.name] = pa.Column("float64", coerce=True, nullable=True, checks=checks)
        else:
            columns[c.name] = pa.Column(nullable=True)
    for key in spec.unique_key or []:
        columns.setdefault(key, pa.Column(nullable=True))  # a key column that is not a feature (an order id)
    columns[spec.label_column] = pa.Column(
        nullable=True, checks=[pa.Check.isin(spec.labels, name="known_label", n_failure_cases=FAILURE_CASES)]
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
    # Duplicate rows are not a Pandera check: its `unique=` reports every duplicated row, one failure case each.
    return pa.DataFrameSchema(columns, checks=checks, strict=True)


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
            unique_key=spec_or_cfg.unique_key,
        )
    else:
        shape = DatasetShape.of(spec_or_cfg)
    return [g.name for g in data_gates(shape)]


def _sample(frame: pd.DataFrame, index: pd.Index, n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The first ``n`` rows of ``index`` (in its order) as JSON records."""
    index = pd.Index(index)
    rows = frame.loc[index[index.isin(frame.index)][:n]]
    return json.loads(rows.to_json(orient="records", date_format="iso", default_handler=str))


def _as_numbers(batch: pd.DataFrame, spec: DataSpec) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The batch with its numeric columns as float64, and per column the rows whose value is not a number.

    Coerced here rather than by Pandera, which reports one failure case per unparsable value.
    """
    numbers = batch.copy(deep=False)
    unparsed: dict[str, pd.Series] = {}
    for c in spec.columns:
        if c.kind != NUMERIC or c.name not in batch.columns:
            continue
        s = batch[c.name]
        if pd.api.types.is_numeric_dtype(s):
            values = s
        else:
            values = pd.to_numeric(s, errors="coerce")
            bad = s.notna() & values.isna()
            if bad.any():
                unparsed[c.name] = bad
        numbers[c.name] = pd.Series(values.to_numpy(dtype="float64", na_value=np.nan), index=batch.index)
    return numbers, unparsed


def validate_batch(frame: pd.DataFrame, spec: DataSpec) -> BatchValidation:
    """Validate a batch (any number of partitions) against the spec; every kind of failure is found (lazy)."""
    batch = frame.reset_index(drop=True)
    batch[PARTITION_COLUMN] = (
        row_keys(batch[spec.timestamp_column], spec.freq) if len(batch) else pd.Series(dtype=str)
    )
    numbers, unparsed = _as_numbers(batch, spec)
    schema = to_pandera(spec)
    try:
        schema.validate(numbers, lazy=True, inplace=True)
        failures = pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])
    except SchemaErrors as err:
        failures = err.failure_cases
    return _judge(batch, numbers, failures, spec, unparsed)


def duplicate_rows(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.Index, pd.Index]:
    """Rows that repeat another row on ``columns``: every copy (copies next to each other), and the surplus
    copies (the rows a de-duplication keeping the first would drop).

    Rows are hashed first (one 64-bit hash per row, cheap on a million rows); only rows whose hash repeats are
    compared value by value, so a hash collision never blocks a partition.
    """
    none = pd.Index([], dtype=int)
    if frame.empty or not columns:
        return none, none
    hashes = pd.util.hash_pandas_object(frame[columns], index=False)
    candidates = hashes.duplicated(keep=False)
    if not candidates.any():
        return none, none
    subset = frame.loc[candidates, columns]
    copies = subset.duplicated(keep=False)
    surplus = subset.index[subset.duplicated(keep="first").to_numpy()]
    rows = hashes[candidates][copies.to_numpy()].sort_values(kind="stable").index
    return rows, surplus


def _judge(
    batch: pd.DataFrame,
    numbers: pd.DataFrame,
    failures: pd.DataFrame,
    spec: DataSpec,
    unparsed: dict[str, pd.Series] | None = None,
) -> BatchValidation:
    """The gates of a batch: Pandera's ``failures`` say which schema checks failed; the row counts, partitions and
    samples are measured here on ``batch`` (as it arrived) and ``numbers`` (numeric columns as float64)."""
    fc = failures.copy()
    fc["check"] = fc["check"].astype(str)
    unparsed = unparsed or {}
    parts = batch[PARTITION_COLUMN]
    sizes = parts.value_counts()
    gates: dict[str, GateResult] = {}
    names = gate_names(spec)

    def rows_of(mask: pd.Series) -> pd.Index:
        idx = pd.to_numeric(fc.loc[mask, "index"], errors="coerce").dropna().astype(int)
        return pd.Index(idx.unique())

    def partitions_of(rows: pd.Index) -> list[str]:
        return sorted(parts.loc[rows].unique().tolist()) if len(rows) else []

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

    # Dtypes: numbers that are not numbers (measured here), and Pandera's dtype failures (the timestamp column).
    m_dtype = fc["check"].str.startswith(("coerce_dtype", "dtype(")) | fc["schema_context"].eq("Column") & fc[
        "check"
    ].str.contains("dtype", regex=False)
    bad_dtype_cols = sorted(set(map(str, fc.loc[m_dtype, "column"].dropna())) | set(unparsed))
    dtype_rows = rows_of(m_dtype)
    bad_values = list(map(str, fc.loc[m_dtype, "failure_case"].head(10)))
    for col, mask in unparsed.items():
        dtype_rows = dtype_rows.union(batch.index[mask])
        bad_values += list(map(str, batch.loc[mask, col].unique()[:10]))
    gates["has_expected_dtypes"] = GateResult(
        "has_expected_dtypes",
        passed=not bad_dtype_cols,
        value=len(bad_dtype_cols),
        threshold=0,
        message=data_gate("has_expected_dtypes").description,
        failing_columns=bad_dtype_cols,
        failing_partitions=partitions_of(dtype_rows),
        sample=_sample(batch, dtype_rows),
        details={
            "bad_values": bad_values[:10],
            "unparsed_values": {col: int(mask.sum()) for col, mask in unparsed.items()},
        },
    )

    # Null fractions per partition and column (measured directly; Pandera says which failed).
    value_cols = [c.name for c in spec.columns if c.name in batch.columns] + (
        [spec.label_column] if spec.label_column in batch.columns else []
    )
    null_frac = batch[value_cols].isna().groupby(parts).mean() if len(batch) else pd.DataFrame()
    limits = pd.Series(_null_limits(spec))[null_frac.columns] if null_frac.size else pd.Series(dtype=float)
    sparse = {c.name: c.max_null_fraction for c in spec.columns if c.max_null_fraction is not None}
    # The measured value is the worst column held to the common limit; sparse columns show under details.
    worst = (
        float(
            null_frac.drop(columns=[spec.label_column, *sparse], errors="ignore").to_numpy().max(initial=0.0)
        )
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
            "sparse_column_limits": sparse,
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
    ranged = [
        (c.name, c.min, c.max)
        for c in spec.columns
        if c.kind == NUMERIC and c.min is not None and c.max is not None and c.name in numbers.columns
    ]
    out_of_range = pd.DataFrame(
        {name: numbers[name].notna() & ~numbers[name].between(lo, hi) for name, lo, hi in ranged},
        index=batch.index,
    )
    range_mask = out_of_range.any(axis=1) if len(ranged) else pd.Series(False, index=batch.index)
    range_rows = batch.index[range_mask.to_numpy()]
    bad_per_part = parts.loc[range_rows].value_counts() if len(range_rows) else pd.Series(dtype=int)
    allowed = (sizes * spec.max_quarantine_fraction // 1).clip(lower=1).astype(int)  # floor, at least one row
    blocked_parts = sorted(str(p) for p, n in bad_per_part.items() if n > allowed.get(p, 1))
    frac = (bad_per_part / sizes.reindex(bad_per_part.index)).max() if len(bad_per_part) else 0.0
    range_cols = sorted(c for c in out_of_range.columns if out_of_range[c].any())
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

    # Labels: one of the contract's classes (nulls are the null-fraction gate's business).
    label = batch[spec.label_column] if spec.label_column in batch.columns else pd.Series(dtype=object)
    unknown_mask = label.notna() & ~label.isin(spec.labels)
    label_rows = batch.index[unknown_mask.to_numpy()] if len(label) else pd.Index([], dtype=int)
    label_details: dict[str, Any] = {
        "expected": spec.labels,
        "unknown": sorted(map(str, label[unknown_mask].unique()))[:20],
    }
    if len(spec.labels) < 2:
        label_details["second_class"] = (
            "not known yet: it is the first new label when exactly one appears (two new labels at once are "
            "ambiguous)"
        )
    gates["labels_known"] = GateResult(
        "labels_known",
        passed=len(label_rows) == 0,
        value=len(label_rows),
        threshold=0,
        message=data_gate("labels_known").description,
        failing_partitions=partitions_of(label_rows),
        sample=_sample(batch, label_rows),
        details=label_details,
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

    # Rows ingested twice: exact copies over every column as it arrived (a few are allowed: identical events do
    # happen when timestamps are coarse and there is no event id), and any repeat of the declared unique key.
    arrived = [c for c in batch.columns if c != PARTITION_COLUMN]
    dup_rows, surplus = duplicate_rows(batch, arrived)
    details: dict[str, Any] = {"duplicate_rows": len(surplus)}
    keyed = False
    if spec.unique_key and set(spec.unique_key) <= set(batch.columns):
        key_rows, key_surplus = duplicate_rows(batch, list(spec.unique_key))
        details.update(unique_key=list(spec.unique_key), repeated_key_rows=len(key_surplus))
        # Exact copies repeat the key too: the key's rows come first in the sample, the exact copies after.
        dup_rows = key_rows.append(dup_rows.difference(key_rows, sort=False))
        surplus = key_surplus.union(surplus)
        keyed = True  # a key declared unique is never repeated
    details["rows_involved"] = len(dup_rows)
    dup_frac = parts.loc[surplus].value_counts().reindex(sizes.index, fill_value=0) / sizes
    allowed = pd.Series(
        [0.0 if keyed else duplicate_allowance(spec, p) for p in dup_frac.index],
        index=dup_frac.index,
        dtype=float,
    )
    excess = dup_frac - allowed
    dup_parts = sorted(excess.index[excess > 0].tolist())
    # The partition nearest to (or furthest over) its limit.
    closest = str(excess.idxmax()) if len(excess) else None
    gates["no_duplicate_rows"] = GateResult(
        "no_duplicate_rows",
        passed=not dup_parts,
        value=round(float(dup_frac[closest]), 6) if closest is not None else 0.0,
        threshold=float(allowed[closest]) if closest is not None else duplicate_allowance(spec),
        message=data_gate("no_duplicate_rows").description,
        failing_partitions=dup_parts,
        sample=_sample(batch, dup_rows),
        details=details,
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
    # In catalogue order, whatever order they were measured in.
    gates = {name: gates[name] for name in names if name in gates}

    # Quarantine: out-of-range rows of partitions that are not blocked. Blocked batches go nowhere downstream.
    quarantined = batch.loc[range_rows].copy()
    if len(quarantined):
        held = out_of_range.loc[range_rows]
        reason = pd.Series("", index=range_rows)
        for col in range_cols:
            reason = reason + np.where(held[col].to_numpy(), col + ", ", "")
        quarantined["quarantine_reason"] = ("out of range: " + reason.str[:-2]).to_numpy()
    clean = numbers.drop(index=range_rows)
    return BatchValidation(gates=gates, clean=clean, quarantined=quarantined)


# How a gate's measured value over several groups of partitions combines into the value over all of them.
_COMBINE_VALUE = {
    "has_expected_columns": "columns",
    "has_expected_dtypes": "columns",
    "labels_known": "sum",
    "has_min_rows": "min",
    "no_duplicate_rows": "excess",
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
        threshold = gates[0].threshold
        if rule == "excess":
            # Limits differ per partition: the group whose partition is furthest over (or nearest to) its own.
            worst = max(gates, key=lambda g: (g.value or 0.0) - (g.threshold or 0.0))
            value, threshold = worst.value, worst.threshold
        elif rule == "columns":
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
            threshold=threshold,
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
