"""raw_data and validated_data, with the data contract's gates as blocking asset checks on raw_data."""

import json

import dagster as dg
import pandas as pd

from mlops_assets import progress
from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import (
    BLOCKED_COLUMN,
    QUARANTINE_COLUMN,
    BlockedPartitionError,
    check_verdict,
    choose_reference,
    validate_partitions,
    validated_partition,
)
from mlops_assets.data.schema import CATEGORICAL, GATES, GateResult, feature_kinds, infer_spec, merge_gates
from mlops_assets.data.sources import describe_source, iter_source, peek_source
from mlops_assets.data.staging import Staging, group_keys
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.lineage import combined_version, content_version


def data_gate_check_name(gate: str) -> str:
    return f"raw_data_{gate}"


def declared_gates(cfg: MlopsConfig, sample: pd.DataFrame) -> list[str]:
    """The data gates this dataset has, decided from the config and a sample of the source."""
    kinds = feature_kinds(sample, cfg)
    names = list(GATES)
    if CATEGORICAL not in kinds.values():
        names.remove("categories_known")
    if not cfg.dataset.entity_columns:
        names.remove("keys_unique")
    return names


def build_data_assets(cfg: MlopsConfig, partitions_def: dg.PartitionsDefinition, prefix: list[str]):
    raw_key = dg.AssetKey([*prefix, "raw_data"])
    gates = declared_gates(cfg, peek_source(cfg))
    check_specs = [
        dg.AssetCheckSpec(data_gate_check_name(g), asset=raw_key, blocking=True, description=GATES[g])
        for g in gates
    ]

    @dg.asset(
        key=raw_key,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=check_specs,
        group_name=prefix[-1],
        kinds={"pandas", "pandera", "parquet"},
        description="Rows of the configured source, one partition per period, each checked against the data "
        "contract (Pandera, lazy validation: every failure collected). Rows are stored as read, annotated with "
        "their verdict: a failing gate blocks the batch; a few implausible rows are quarantined. The source is "
        "streamed and validated a group of partitions at a time (partitions.rows_per_batch rows).",
    )
    def raw_data(context: dg.AssetExecutionContext, project: MlopsProject):
        keys = context.partition_keys
        stores = project.stores
        budget = cfg.partitions.rows_per_batch
        staging = Staging(
            stores.raw.root.parent / ".staging" / context.run_id,
            timestamp_column=cfg.dataset.timestamp_column,
            freq=cfg.partitions.freq,
            memory_rows=budget,
            keep=set(keys),
        )
        with staging:
            progress.step("raw_data", f"reading {describe_source(cfg)}")
            template = None
            for frame in iter_source(cfg, budget):
                if template is None:
                    template = frame.iloc[:0]
                staging.add(frame)
            present = [k for k in keys if k in staging.rows]
            empty = [k for k in keys if k not in staging.rows]
            progress.step("raw_data", f"validating {len(keys)} partition(s)")
            first = {k: staging.read(k) for k in present[: cfg.validation.reference_partitions]}
            if not first and not stores.validated.keys():
                raise dg.Failure(
                    f"none of the {len(keys)} requested partition(s) ({keys[0]}..{keys[-1]}) has rows in "
                    f"{describe_source(cfg)}, and no validated data exists to learn the data contract from"
                )
            reference, info = choose_reference(cfg, stores, first, champion_window(cfg))
            spec = infer_spec(reference, cfg, reference_info=info)
            del reference, first
            stores.raw.root.mkdir(parents=True, exist_ok=True)
            (stores.raw.root.parent / "data_contract.json").write_text(
                json.dumps(spec.to_dict(), indent=2, default=str)
            )
            gate_parts, versions, rows, quarantined = [], [], 0, 0
            for group in group_keys(present, staging.rows, budget) or [[]]:
                batch = {k: staging.read(k) for k in group} or {keys[0]: template}
                part, annotated = validate_partitions(cfg, batch, spec)
                gate_parts.append(part.gates)
                for key in group:
                    versions.append(content_version(batch[key]))
                    stores.raw.write(key, annotated[key])
                    quarantined += int(annotated[key][QUARANTINE_COLUMN].notna().sum())
                    rows += len(batch[key])
            gates_over_batch = merge_gates(gate_parts)
        if empty:
            # A partition with no rows at all: the source lost data for that period.
            gate = gates_over_batch["has_min_rows"]
            gate.passed, gate.value = False, 0
            gate.failing_partitions = sorted({*gate.failing_partitions, *empty})
            gate.details["empty_partitions"] = empty[:100]
            for key in empty:
                stores.raw.write(
                    key, template.assign(**{BLOCKED_COLUMN: "has_min_rows", QUARANTINE_COLUMN: None})
                )
        yield dg.MaterializeResult(
            metadata={
                "rows": rows,
                "partitions": len(keys),
                "empty_partitions": dg.MetadataValue.json(empty[:50]),
                "quarantined_rows": quarantined,
                "contract_version": spec.version,
                "contract_reference": dg.MetadataValue.json(info),
                "path": dg.MetadataValue.path(str(stores.raw.root)),
                "dagster/row_count": rows,
            },
            data_version=dg.DataVersion(combined_version(versions)),
        )
        for name in gates:
            gate = gates_over_batch.get(name) or GateResult(
                name,
                passed=False,
                value=None,
                threshold=None,
                description=GATES[name],
                details={
                    "reason": "the source now has text columns where the data contract has none: "
                    "see has_expected_dtypes and has_expected_columns"
                },
            )
            yield dg.AssetCheckResult(
                asset_key=raw_key,
                check_name=data_gate_check_name(gate.name),
                passed=bool(gate.passed),
                severity=dg.AssetCheckSeverity.ERROR,
                description=gate.description,
                metadata=_gate_metadata(gate),
            )

    @dg.asset(
        key=[*prefix, "validated_data"],
        deps=[raw_key],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=prefix[-1],
        kinds={"pandas", "parquet"},
        automation_condition=dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        description="raw_data that passed the data contract, quarantined rows removed (kept inspectable under "
        "$MLOPS_HOME/<model>/quarantine/). Refuses any partition the gates blocked; one partition in memory at a "
        "time.",
    )
    def validated_data(context: dg.AssetExecutionContext, project: MlopsProject):
        keys = context.partition_keys
        stores = project.stores
        progress.step("validated_data", f"{len(keys)} partition(s)")
        # Every verdict first (one column per file), so a blocked partition refuses the run before anything is
        # written: the validated store is never left half-updated by a run that fails.
        for key in keys:
            if not stores.raw.exists(key):
                raise BlockedPartitionError(f"partition {key}: raw_data has not been materialized")
            check_verdict(key, stores.raw.read([key], columns=[BLOCKED_COLUMN]))
        versions, rows, held = [], 0, 0
        for key in keys:
            clean, quarantined = validated_partition(cfg, key, stores.raw.read([key]))
            stores.validated.write(key, clean)
            versions.append(content_version(clean))
            rows += len(clean)
            if len(quarantined):
                stores.quarantine.write(key, quarantined)
                held += len(quarantined)
        return dg.MaterializeResult(
            metadata={
                "rows": rows,
                "quarantined_rows": held,
                "path": dg.MetadataValue.path(str(stores.validated.root)),
                "dagster/row_count": rows,
            },
            data_version=dg.DataVersion(combined_version(versions)),
        )

    return [raw_data, validated_data]


def champion_window(cfg: MlopsConfig) -> tuple[str, str] | None:
    """The champion's training window (first, last partition), the data contract's reference once one exists."""
    from mlops_assets.registry.model_registry import TAG_DATA_WINDOW, ModelRegistry

    champ = ModelRegistry(cfg.model.name).champion()
    window = champ.tags.get(TAG_DATA_WINDOW) if champ else None
    if not window or ".." not in window:
        return None
    first, last = window.split("..", 1)
    return first, last


def _gate_metadata(gate) -> dict:
    md = {
        "measured": dg.MetadataValue.float(float(gate.value)) if gate.value is not None else None,
        "threshold": dg.MetadataValue.float(float(gate.threshold)) if gate.threshold is not None else None,
        "failing_partitions": dg.MetadataValue.json(gate.failing_partitions[:100]),
        "failing_partition_count": len(gate.failing_partitions),
        "failing_columns": dg.MetadataValue.json(gate.failing_columns),
        "sample_failing_rows": dg.MetadataValue.json(gate.sample),
        "details": dg.MetadataValue.json(gate.details),
    }
    return {k: v for k, v in md.items() if v is not None}
