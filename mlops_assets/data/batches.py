"""A batch of partitions through the data contract: reference selection, verdicts, quarantine.

Plain functions used by the Dagster data assets (and usable without Dagster).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import row_keys
from mlops_assets.data.schema import (
    NUMERIC,
    PARTITION_COLUMN,
    BatchValidation,
    DataSpec,
    feature_kinds,
    validate_batch,
)
from mlops_assets.data.store import PartitionStore
from mlops_assets.lineage import content_version, content_versions

BLOCKED_COLUMN = "__blocked__"
QUARANTINE_COLUMN = "__quarantine__"
ANNOTATIONS = (BLOCKED_COLUMN, QUARANTINE_COLUMN)


class BlockedPartitionError(RuntimeError):
    """A partition that failed the data gates was asked for downstream."""


@dataclass
class Stores:
    raw: PartitionStore
    validated: PartitionStore
    quarantine: PartitionStore

    @classmethod
    def at(cls, home: Path, model_name: str) -> Stores:
        base = Path(home) / model_name
        return cls(
            raw=PartitionStore(base / "raw_data"),
            validated=PartitionStore(base / "validated_data"),
            quarantine=PartitionStore(base / "quarantine"),
        )


def choose_reference(
    cfg: MlopsConfig,
    stores: Stores,
    batch: dict[str, pd.DataFrame],
    champion_window: tuple[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reference data for the contract: the champion's training window, else the earliest validated partitions,
    else the earliest partitions of this batch (the very first run)."""
    n = cfg.validation.reference_partitions
    stored = stores.validated.keys()
    if champion_window is not None:
        first, last = champion_window
        keys = [k for k in stored if first <= k <= last]
        if keys:
            return stores.validated.read(keys), {
                "source": "champion training window",
                "first": first,
                "last": last,
            }
    if stored:
        keys = stored[:n]
        return stores.validated.read(keys), {
            "source": "earliest validated partitions",
            "first": keys[0],
            "last": keys[-1],
        }
    keys = sorted(batch)[:n]
    frame = pd.concat([batch[k] for k in keys], ignore_index=True)
    return frame, {"source": "earliest partitions of the first batch", "first": keys[0], "last": keys[-1]}


def stored_labels(cfg: MlopsConfig, stores: Stores) -> Iterator[Any]:
    """The distinct labels of each validated partition stored so far, read (one column) as they are iterated.

    With the labels of the batch being ingested they complete a reference window that holds one class (see
    :func:`mlops_assets.data.schema.label_classes`, which only iterates them then: most ingestions read nothing).
    """
    label = cfg.dataset.label_column
    for key in stores.validated.keys():
        yield from stores.validated.read([key], columns=[label])[label].dropna().unique().tolist()


def labels_in(cfg: MlopsConfig, frame: pd.DataFrame, keys: set[str]) -> set[Any]:
    """The distinct labels of the rows of ``frame`` that fall in partitions ``keys``."""
    ds = cfg.dataset
    wanted = row_keys(frame[ds.timestamp_column], cfg.partitions.freq).isin(keys).to_numpy()
    return set(frame.loc[wanted, ds.label_column].dropna().unique().tolist())


def validate_partitions(
    cfg: MlopsConfig, batch: dict[str, pd.DataFrame], spec: DataSpec
) -> tuple[BatchValidation, dict[str, pd.DataFrame]]:
    """Validate a batch against the contract; return the gate results and each partition annotated with its
    verdict.

    An annotated partition keeps every raw row and gains ``__blocked__`` (why the partition may not go downstream,
    or null) and ``__quarantine__`` (why a row is held back, or null).
    """
    result, annotated, parts = annotate_partitions(cfg, batch, spec)
    bounds = [0, *itertools.accumulate(n for _, n in parts)]
    slices = itertools.pairwise(bounds)
    return result, {
        key: annotated.iloc[a:b].reset_index(drop=True)
        for (key, _), (a, b) in zip(parts, slices, strict=True)
    }


def annotate_partitions(
    cfg: MlopsConfig, batch: dict[str, pd.DataFrame], spec: DataSpec
) -> tuple[BatchValidation, pd.DataFrame, list[tuple[str, int]]]:
    """:func:`validate_partitions` with the annotated partitions as one frame: their rows in partition key order
    (each partition's rows in batch order) and each partition's (key, rows), so a caller can write and hash the
    partitions as slices of one frame."""
    frame = pd.concat(list(batch.values()), ignore_index=True) if batch else pd.DataFrame()
    result = validate_batch(frame, spec)
    blocked: dict[str, list[str]] = {}
    for gate in result.gates.values():
        if gate.passed:
            continue
        targets = gate.failing_partitions or list(batch)  # batch-wide failures (a missing column) block all
        for key in targets:
            blocked.setdefault(key, []).append(gate.gate)
    keys = row_keys(frame[cfg.dataset.timestamp_column], cfg.partitions.freq)
    reasons = pd.Series(None, index=frame.index, dtype=object)
    if len(result.quarantined):
        reasons.loc[result.quarantined.index] = result.quarantined["quarantine_reason"].to_numpy()
    # Rows by partition key, stable: a partition's rows keep their order (rows without a key are dropped, as a
    # group-by drops them).
    codes, uniques = pd.factorize(keys, sort=True)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    part_keys = [str(k) for k in uniques]  # partition keys are strings (row_keys)
    why = np.array([", ".join(blocked[k]) if k in blocked else None for k in part_keys], dtype=object)
    annotated = frame.iloc[order].reset_index(drop=True)
    annotated[BLOCKED_COLUMN] = why[codes[order]]
    annotated[QUARANTINE_COLUMN] = reasons.to_numpy()[order]
    sizes = np.bincount(codes[codes >= 0], minlength=len(part_keys))
    return result, annotated, [(k, int(n)) for k, n in zip(part_keys, sizes, strict=True)]


def staged_versions(
    batch: dict[str, pd.DataFrame], annotated: pd.DataFrame, parts: list[tuple[str, int]]
) -> dict[str, str]:
    """The content version of each partition of ``batch`` as staged (before annotation), for the partitions
    ``parts`` of :func:`annotate_partitions`: hashed as slices of the annotated frame when every partition has the
    same dtypes (their join then keeps them), else partition by partition."""
    frames = list(batch.values())
    if not frames:
        return {}
    dtypes = frames[0].dtypes
    alike = all(f.dtypes.equals(dtypes) for f in frames)
    if not alike or any(isinstance(t, pd.CategoricalDtype) for t in dtypes):
        return {key: content_version(batch[key]) for key, _ in parts}
    staged = annotated[list(frames[0].columns)]
    return dict(zip([k for k, _ in parts], content_versions(staged, [n for _, n in parts]), strict=True))


def check_verdict(key: str, raw: pd.DataFrame) -> None:
    """Refuse an annotated raw partition (or its ``__blocked__`` column alone) that is empty or was blocked."""
    if raw.empty:
        raise BlockedPartitionError(f"partition {key}: raw_data holds no rows")
    if BLOCKED_COLUMN in raw.columns and raw[BLOCKED_COLUMN].notna().any():
        why = raw[BLOCKED_COLUMN].dropna().iloc[0]
        raise BlockedPartitionError(
            f"partition {key} failed the data gates ({why}); fix the source and rematerialize raw_data"
        )


def validated_partition(cfg: MlopsConfig, key: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split an annotated raw partition into (validated rows, quarantined rows); refuse a blocked partition."""
    check_verdict(key, raw)
    clean, quarantined, _ = split_validated(cfg, raw)
    return clean, quarantined


def split_validated(cfg: MlopsConfig, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(validated rows, quarantined rows, which raw rows were held) of annotated raw rows whose verdicts were
    checked: a row at a time, so rows of several partitions split at once give each partition's split as
    consecutive slices."""
    held = (
        raw[QUARANTINE_COLUMN].notna()
        if QUARANTINE_COLUMN in raw.columns
        else pd.Series(False, index=raw.index)
    )
    clean = raw.loc[~held].drop(columns=[c for c in (*ANNOTATIONS, PARTITION_COLUMN) if c in raw.columns])
    for col, kind in feature_kinds(clean, cfg).items():
        if kind == NUMERIC:
            clean[col] = clean[col].astype("float64")
    quarantined = raw.loc[held].drop(columns=[BLOCKED_COLUMN], errors="ignore")
    return clean.reset_index(drop=True), quarantined.reset_index(drop=True), held.to_numpy()
