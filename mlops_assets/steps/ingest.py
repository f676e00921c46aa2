"""Ingest a range of partitions from the source through the data contract, and publish the rows that passed.

:func:`ingest` streams the source, files its rows under their partitions (in memory, or spilled to a scratch folder
for a long backfill), learns the data contract from reference data, validates a group of partitions at a time and
stores every raw partition annotated with its verdict. :func:`publish_validated` moves the rows that passed into the
validated store, refusing the whole range before writing anything if one partition was blocked.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_assets import progress
from mlops_assets.catalogue import GateResult, data_gate
from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import (
    BLOCKED_COLUMN,
    QUARANTINE_COLUMN,
    BlockedPartitionError,
    Stores,
    annotate_partitions,
    check_verdict,
    choose_reference,
    labels_in,
    split_validated,
    staged_versions,
    stored_labels,
)
from mlops_assets.data.schema import DataSpec, infer_spec, merge_gates
from mlops_assets.data.source_state import record_ingestion, source_identity
from mlops_assets.data.sources import TimeRange, describe_source, iter_source, open_source
from mlops_assets.data.staging import Staging, group_keys
from mlops_assets.lineage import combined_version, content_version, content_versions

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry

CONTRACT_FILE = "data_contract.json"


class IngestError(RuntimeError):
    """A range that cannot be ingested at all (nothing to learn a contract from); the message says why."""


@dataclass
class IngestOutcome:
    """What one ingestion of a partition range found and stored."""

    partitions: list[str]
    rows: int
    empty_partitions: list[str]
    quarantined_rows: int
    contract: DataSpec
    contract_reference: dict[str, Any]
    gates: list[GateResult]  # one per requested gate, in the order asked
    partition_versions: dict[str, str] = field(default_factory=dict)

    @property
    def data_version(self) -> str:
        return combined_version([self.partition_versions[k] for k in self.partitions])

    @property
    def blocked(self) -> bool:
        return any(not g.passed for g in self.gates)


def champion_window(registry: ModelRegistry) -> tuple[str, str] | None:
    """The champion's training window (first, last partition), the data contract's reference once one exists."""
    from mlops_assets.registry.model_registry import TAG_DATA_WINDOW

    champ = registry.champion()
    window = champ.tags.get(TAG_DATA_WINDOW) if champ else None
    if not window or ".." not in window:
        return None
    first, last = window.split("..", 1)
    return first, last


def contract_path(stores: Stores) -> Path:
    return stores.raw.root.parent / CONTRACT_FILE


def ingest(
    cfg: MlopsConfig,
    stores: Stores,
    keys: list[str],
    *,
    gate_names: list[str],
    scratch: Path,
    home: Path,
    champion_window: tuple[str, str] | None = None,
) -> IngestOutcome:
    """Read the source's rows for partitions ``keys``, validate them and store each raw partition with its
    verdict; return the data gates named ``gate_names`` over the whole range.

    ``scratch`` is a folder this call may spill to and removes afterwards; ``home`` is where the source's state is
    recorded (``$MLOPS_HOME``); ``champion_window`` (first, last partition) is the data contract's reference once
    a champion exists.
    """
    budget = cfg.partitions.rows_per_batch
    staging = Staging(
        scratch,
        timestamp_column=cfg.dataset.timestamp_column,
        freq=cfg.partitions.freq,
        memory_rows=budget,
        keep=set(keys),
    )
    # Before reading, so a change made during the read is seen as a change next time.
    fingerprint = open_source(cfg).fingerprint()
    ts_col = cfg.dataset.timestamp_column
    seen: TimeRange | None = None
    with staging:
        progress.step("raw_data", f"reading {describe_source(cfg)}")
        template = None
        labels: set[Any] = set()  # with the stored ones: the contract's classes (one may appear late)
        for frame in iter_source(cfg, budget):
            if template is None:
                template = frame.iloc[:0]
            if len(frame):
                seen = TimeRange(frame[ts_col].min(), frame[ts_col].max()).union(seen)
            staging.add(frame)
            labels |= labels_in(cfg, frame, set(keys))
        assert template is not None  # iter_source raises on a source without rows
        present = [k for k in keys if k in staging.rows]
        empty = [k for k in keys if k not in staging.rows]
        progress.step("raw_data", f"validating {len(keys)} partition(s)")
        first = {k: staging.read(k) for k in present[: cfg.validation.reference_partitions]}
        if not first and not stores.validated.keys():
            raise IngestError(
                f"none of the {len(keys)} requested partition(s) ({keys[0]}..{keys[-1]}) has rows in "
                f"{describe_source(cfg)}, and no validated data exists to learn the data contract from"
            )
        reference, info = choose_reference(cfg, stores, first, champion_window)
        classes = itertools.chain(labels, stored_labels(cfg, stores))
        spec = infer_spec(reference, cfg, reference_info=info, labels_seen=classes)
        del reference, first
        stores.raw.root.mkdir(parents=True, exist_ok=True)
        contract_path(stores).write_text(json.dumps(spec.to_dict(), indent=2, default=str))
        parts: list[dict[str, GateResult]] = []
        versions: dict[str, str] = {}
        rows = quarantined = 0
        for group in group_keys(present, staging.rows, budget) or [[]]:
            batch = {k: staging.read(k) for k in group} or {keys[0]: template}
            validation, annotated, written = annotate_partitions(cfg, batch, spec)
            parts.append(validation.gates)
            assert [key for key, _ in written] == group  # a staged partition holds its own rows only
            # Written and hashed as slices of one frame: a group of partitions costs a few conversions, not one each.
            stores.raw.write_slices(annotated, written)
            versions.update(staged_versions(batch, annotated, written))
            quarantined += int(annotated[QUARANTINE_COLUMN].notna().sum())
            rows += sum(len(batch[key]) for key in group)
        merged = merge_gates(parts)
    if empty:
        # A partition with no rows at all: the source lost data for that period.
        gate = merged["has_min_rows"]
        gate.passed, gate.value = False, 0
        gate.failing_partitions = sorted({*gate.failing_partitions, *empty})
        gate.details["empty_partitions"] = empty[:100]
        for key in empty:
            blocked = template.assign(**{BLOCKED_COLUMN: "has_min_rows", QUARANTINE_COLUMN: None})
            stores.raw.write(key, blocked)
            versions[key] = content_version(blocked)
    gates = [merged.get(name) or _not_evaluated(name) for name in gate_names]
    if seen is not None:
        # The range of every row read (not only the requested partitions): what the definitions and the arrival
        # sensor answer from without reading the source.
        record_ingestion(
            home,
            cfg.model.name,
            time_range=seen,
            columns=list(template.columns),
            kinds={c.name: c.kind for c in spec.columns},
            fingerprint=fingerprint,
            source=source_identity(cfg),
        )
    return IngestOutcome(
        partitions=list(keys),
        rows=rows,
        empty_partitions=empty,
        quarantined_rows=quarantined,
        contract=spec,
        contract_reference=info,
        gates=gates,
        partition_versions=versions,
    )


def _not_evaluated(name: str) -> GateResult:
    """A declared gate the contract no longer has (e.g. categories, when the source lost its text columns)."""
    return GateResult(
        name,
        passed=False,
        value=None,
        threshold=None,
        message=data_gate(name).description,
        details={
            "reason": "the source now has text columns where the data contract has none: "
            "see has_expected_dtypes and has_expected_columns"
        },
    )


@dataclass
class ValidatedOutcome:
    partitions: list[str]
    rows: int
    quarantined_rows: int
    partition_versions: dict[str, str]

    @property
    def data_version(self) -> str:
        return combined_version([self.partition_versions[k] for k in self.partitions])


def publish_validated(cfg: MlopsConfig, stores: Stores, keys: list[str]) -> ValidatedOutcome:
    """The raw rows of ``keys`` that passed, quarantined rows moved aside, a group of partitions
    (``partitions.rows_per_batch`` rows) in memory at a time.

    Every verdict is read first (one column per file), so a blocked partition refuses the call before anything is
    written: the validated store is never left half-updated.
    """
    progress.step("validated_data", f"{len(keys)} partition(s)")
    for key in keys:
        if not stores.raw.exists(key):
            raise BlockedPartitionError(f"partition {key}: raw_data has not been materialized")
    sizes = {key: stores.raw.row_count(key) for key in keys}
    # Every verdict column in one read; only when something is wrong, partition by partition to name it.
    verdicts = stores.raw.read(keys, columns=[BLOCKED_COLUMN])
    if verdicts[BLOCKED_COLUMN].notna().any() or not all(sizes.values()):
        for key in keys:
            check_verdict(key, stores.raw.read([key], columns=[BLOCKED_COLUMN]))
    versions: dict[str, str] = {}
    rows = held = 0
    for group in group_keys(keys, sizes, cfg.partitions.rows_per_batch):
        # Split and hashed a run of partitions at a time: per-partition pandas work costs milliseconds a call,
        # hundreds of times. A run is the group's consecutive partitions whose files share a schema (a partition
        # with quarantined rows has a text column where the others have an empty one: a run of its own).
        for run, raw, counts in stores.raw.read_runs(group):
            clean, quarantined, held_rows = split_validated(cfg, raw)
            bounds = np.cumsum([0, *counts])
            held_counts = [int(held_rows[a:b].sum()) for a, b in itertools.pairwise(bounds)]
            clean_counts = [n - h for n, h in zip(counts, held_counts, strict=True)]
            stores.validated.write_slices(clean, list(zip(run, clean_counts, strict=True)))
            versions.update(zip(run, content_versions(clean, clean_counts), strict=True))
            start = 0
            for key, n in zip(run, held_counts, strict=True):
                if n:
                    stores.quarantine.write(key, quarantined.iloc[start : start + n].reset_index(drop=True))
                    start += n
            rows += len(clean)
            held += len(quarantined)
    return ValidatedOutcome(list(keys), rows, held, versions)
