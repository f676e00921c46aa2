"""The outcome of the last ``mlops-assets run`` of a model, kept in ``$MLOPS_HOME/<model>/last_run.json`` so that
``status`` can say how it ended (a data gate that blocked it included) without importing Dagster; and the one
way a check result is put into words, for the run summary and ``status`` alike.

Plain JSON and no heavy import: ``status`` reads it in a light process.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LAST_RUN_FILE = "last_run.json"
# Partitions named in one line before "(+N more)".
SHOWN_PARTITIONS = 5


def last_run_path(home: Path, model_name: str) -> Path:
    return Path(home) / model_name / LAST_RUN_FILE


def record_last_run(home: Path, model_name: str, report: Mapping[str, Any]) -> Path:
    """Keep what the run's report says about its outcome (status, error, failed checks, versions); written
    atomically."""
    body = {
        "status": report["status"],
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": report.get("run_id"),
        "partitions": report.get("partitions"),
        "seconds": report.get("seconds"),
        "error": report.get("error"),
        "failed_checks": [c for c in report.get("checks", []) if not c["passed"]],
        "checks_passed": sum(1 for c in report.get("checks", []) if c["passed"]),
        "trained_version": next((r["version"] for r in report.get("retrains", [])), None),
        "unchanged_champion_version": report.get("unchanged_champion_version"),
    }
    path = last_run_path(home, model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LAST_RUN_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_last_run(home: Path, model_name: str) -> dict[str, Any] | None:
    """The last run's record, or None when ``mlops-assets run`` has not finished one here (or the file is
    unreadable: a status report is not the place to fail over it)."""
    try:
        body = json.loads(last_run_path(home, model_name).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def describe_check(check: Mapping[str, Any]) -> str:
    """One line for a failed check: what it asserts or found, measured against its threshold, and where.

    ``check`` is a report entry (``asset``, ``check``, ``severity``, ``blocking``, ``metadata``)."""
    md = check.get("metadata") or {}
    # Check names start with their asset's name (raw_data_has_min_rows); others get it in front.
    name = str(check["check"])
    parts = [name if name.startswith(str(check["asset"])) else f"{check['asset']}.{name}"]
    text = check.get("description") or md.get("message")
    if text:
        parts.append(f": {str(text).rstrip('.')}")
    numbers = []
    if md.get("measured") is not None:
        numbers.append(f"measured {_number(md['measured'])}")
    if md.get("threshold") is not None:
        numbers.append(f"threshold {_number(md['threshold'])}")
    if numbers:
        parts.append(f" ({', '.join(numbers)})")
    partitions = list(md.get("failing_partitions") or [])
    if partitions:
        more = max(len(partitions), int(md.get("failing_partition_count") or 0)) - SHOWN_PARTITIONS
        parts.append(
            f"; partitions {', '.join(map(str, partitions[:SHOWN_PARTITIONS]))}"
            + (f" (+{more} more)" if more > 0 else "")
        )
    columns = list(md.get("failing_columns") or [])
    if columns:
        parts.append(f"; columns {', '.join(map(str, columns[:8]))}")
    return "".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
