"""raw_data and validated_data, with the data contract's gates as blocking asset checks on raw_data.

Thin wiring over :mod:`mlops_assets.steps.ingest`: the assets call the steps and translate their outcomes.
"""

from pathlib import Path

import dagster as dg

from mlops_assets.catalogue import DatasetShape, GateSpec, data_gates
from mlops_assets.config import MlopsConfig
from mlops_assets.data.schema import feature_kinds
from mlops_assets.data.source_state import known_columns
from mlops_assets.data.sources import open_source
from mlops_assets.defs.checks import check_result, check_specs
from mlops_assets.defs.resources import MlopsProject
from mlops_assets.steps.ingest import IngestError, ingest, publish_validated


def declared_gates(cfg: MlopsConfig, home: Path) -> list[GateSpec]:
    """The data gates this dataset has: from the column kinds the last ingestion recorded (no data read), else,
    before the first ingestion, from the kinds of the source's first rows."""
    kinds = known_columns(cfg, home)
    if kinds is None:
        kinds = feature_kinds(open_source(cfg).peek(), cfg)
    return data_gates(DatasetShape.of(cfg, kinds))


def build_data_assets(
    cfg: MlopsConfig, partitions_def: dg.PartitionsDefinition, prefix: list[str], home: Path
):
    raw_key = dg.AssetKey([*prefix, "raw_data"])
    gates = declared_gates(cfg, home)

    @dg.asset(
        key=raw_key,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=check_specs(gates, raw_key),
        group_name=prefix[-1],
        kinds={"pandas", "pandera", "parquet"},
        description="Rows of the configured source, one partition per period, each checked against the data "
        "contract (Pandera, lazy validation: every failure collected). Rows are stored as read, annotated with "
        "their verdict: a failing gate blocks the batch; a few implausible rows are quarantined. The source is "
        "streamed and validated a group of partitions at a time (partitions.rows_per_batch rows).",
    )
    def raw_data(context: dg.AssetExecutionContext, project: MlopsProject):
        from mlops_assets.steps.repair import set_aside_damaged, warning

        stores = project.stores
        # A damaged stored file (empty, cut short) is moved aside before anything reads it; this run's data steps
        # write its partition again when it is in the run's range.
        for damaged in set_aside_damaged(cfg, project.storage):
            context.log.warning(warning(damaged))
        try:
            outcome = ingest(
                cfg,
                stores,
                context.partition_keys,
                gate_names=[g.name for g in gates],
                scratch=stores.raw.root.parent / ".staging" / context.run_id,
                home=project.storage.home,
                champion_window=project.champion_window(),
            )
        except IngestError as err:
            raise dg.Failure(str(err)) from None
        yield dg.MaterializeResult(
            metadata={
                "rows": outcome.rows,
                "partitions": len(outcome.partitions),
                "empty_partitions": dg.MetadataValue.json(outcome.empty_partitions[:50]),
                "quarantined_rows": outcome.quarantined_rows,
                "contract_version": outcome.contract.version,
                "contract_reference": dg.MetadataValue.json(outcome.contract_reference),
                "path": dg.MetadataValue.path(str(stores.raw.root)),
                "dagster/row_count": outcome.rows,
            },
            data_version=dg.DataVersion(outcome.data_version),
        )
        for spec, result in zip(gates, outcome.gates, strict=True):
            yield check_result(spec, result, raw_key)

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
        stores = project.stores
        outcome = publish_validated(cfg, stores, context.partition_keys)
        return dg.MaterializeResult(
            metadata={
                "rows": outcome.rows,
                "quarantined_rows": outcome.quarantined_rows,
                "path": dg.MetadataValue.path(str(stores.validated.root)),
                "dagster/row_count": outcome.rows,
            },
            data_version=dg.DataVersion(outcome.data_version),
        )

    return [raw_data, validated_data]
