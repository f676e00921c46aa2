"""raw_data and validated_data, with the data contract's gates as blocking asset checks on raw_data."""

import json

import dagster as dg
import pandas as pd

from mlops_assets import progress
from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import choose_reference, validate_partitions, validated_partition
from mlops_assets.data.partitions import key_window, split_by_partition
from mlops_assets.data.schema import CATEGORICAL, GATES, GateResult, feature_kinds
from mlops_assets.data.sources import describe_source, peek_source, read_source
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.lineage import content_version

IO = "partition_io"


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
        io_manager_key=IO,
        check_specs=check_specs,
        group_name=prefix[-1],
        kinds={"pandas", "pandera"},
        description="Rows of the configured source, one partition per period, each checked against the data "
        "contract (Pandera, lazy validation: every failure collected). Rows are stored as read, annotated with "
        "their verdict: a failing gate blocks the batch; a few implausible rows are quarantined.",
    )
    def raw_data(context: dg.AssetExecutionContext, project: MlopsProject):
        keys = context.partition_keys
        progress.step("raw_data", f"reading {describe_source(cfg)}")
        frame = read_source(cfg)
        first, _ = key_window(keys[0], cfg.partitions.freq)
        _, end = key_window(keys[-1], cfg.partitions.freq)
        ts = frame[cfg.dataset.timestamp_column]
        frame = frame[(ts >= first) & (ts < end)]
        batch = split_by_partition(frame, cfg.dataset.timestamp_column, cfg.partitions.freq)
        empty = [k for k in keys if k not in batch]
        for k in empty:
            batch[k] = frame.iloc[:0]
        batch = dict(sorted(batch.items()))
        progress.step("raw_data", f"validating {len(keys)} partition(s)")
        reference, info = choose_reference(
            cfg, project.stores, {k: v for k, v in batch.items() if len(v)}, champion_window(cfg)
        )
        spec, result, annotated = validate_partitions(cfg, batch, reference, info)
        if empty:
            # A partition with no rows at all: the source lost data for that period.
            gate = result.gates["has_min_rows"]
            gate.passed, gate.value = False, 0
            gate.failing_partitions = sorted({*gate.failing_partitions, *empty})
            gate.details["empty_partitions"] = empty[:100]
            for k in empty:
                annotated[k] = batch[k].assign(__blocked__="has_min_rows", __quarantine__=None)
        project.stores.raw.root.mkdir(parents=True, exist_ok=True)
        (project.stores.raw.root.parent / "data_contract.json").write_text(
            json.dumps(spec.to_dict(), indent=2, default=str)
        )
        quarantined = int(sum(p["__quarantine__"].notna().sum() for p in annotated.values()))
        yield dg.Output(
            annotated,
            metadata={
                "rows": int(len(frame)),
                "partitions": len(keys),
                "empty_partitions": dg.MetadataValue.json(empty[:50]),
                "quarantined_rows": quarantined,
                "contract_version": spec.version,
                "contract_reference": dg.MetadataValue.json(info),
                "dagster/row_count": int(len(frame)),
            },
            data_version=dg.DataVersion(content_version(frame)),
        )
        for name in gates:
            gate = result.gates.get(name) or GateResult(
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
        ins={"raw_data": dg.AssetIn(key=raw_key)},
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=IO,
        group_name=prefix[-1],
        kinds={"pandas"},
        automation_condition=dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        description="raw_data that passed the data contract, quarantined rows removed (kept inspectable under "
        "$MLOPS_HOME/<model>/quarantine/). Refuses any partition the gates blocked.",
    )
    def validated_data(context: dg.AssetExecutionContext, project: MlopsProject, raw_data: pd.DataFrame):
        progress.step("validated_data", f"{len(context.partition_keys)} partition(s)")
        parts = split_by_partition(raw_data, cfg.dataset.timestamp_column, cfg.partitions.freq)
        out, held = {}, 0
        for key in context.partition_keys:
            clean, quarantined = validated_partition(cfg, key, parts.get(key, raw_data.iloc[:0]))
            out[key] = clean
            if len(quarantined):
                project.stores.quarantine.write(key, quarantined)
                held += len(quarantined)
        frame = pd.concat(list(out.values()), ignore_index=True)
        return dg.Output(
            out,
            metadata={
                "rows": int(len(frame)),
                "quarantined_rows": held,
                "dagster/row_count": int(len(frame)),
            },
            data_version=dg.DataVersion(content_version(frame)),
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
