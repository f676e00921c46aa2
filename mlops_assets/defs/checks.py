"""Gate results as Dagster asset checks: the one converter from :class:`~mlops_assets.catalogue.GateResult` to
``AssetCheckResult``, and the check specs built from the catalogue."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import dagster as dg

from mlops_assets.catalogue import GateResult, GateSpec


def check_specs(gates: Iterable[GateSpec], asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """One blocking check per gate of the catalogue."""
    return [
        dg.AssetCheckSpec(g.check_name, asset=asset, blocking=True, description=g.description) for g in gates
    ]


def _json(value: Any) -> dg.MetadataValue:
    return dg.MetadataValue.json(json.loads(json.dumps(value, default=str)))


def check_result(spec: GateSpec, result: GateResult, asset: dg.AssetKey) -> dg.AssetCheckResult:
    """The check result of one gate: measured value and threshold as floats (the UI charts them), the message,
    and for data gates the failing partitions, columns and a sample of failing rows."""
    # A data gate's message is its catalogue description, already the check's description.
    md: dict[str, Any] = {} if spec.kind == "data" else {"message": result.message}
    if result.value is not None:
        md["measured"] = dg.MetadataValue.float(float(result.value))
    if result.threshold is not None:
        md["threshold"] = dg.MetadataValue.float(float(result.threshold))
    if spec.kind == "data":
        md |= {
            "failing_partitions": _json(result.failing_partitions[:100]),
            "failing_partition_count": len(result.failing_partitions),
            "failing_columns": _json(result.failing_columns),
            "sample_failing_rows": _json(result.sample),
        }
    md["details"] = _json(result.details)
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=spec.check_name,
        passed=bool(result.passed),
        severity=dg.AssetCheckSeverity.ERROR,
        description=spec.description if spec.kind == "data" else None,
        metadata=md,
    )
