"""The outcome of the last run of a model's pipeline, kept in ``$MLOPS_HOME/<model>/last_run.json`` so that
``status`` can say how it ended (a data gate that blocked it included) without importing Dagster; and the one
way a check result is put into words, for the run summary and ``status`` alike.

Two writers: ``mlops-assets run`` for the run it executes, and the last-run sensors
(:mod:`mlops_assets.defs.last_run_sensor`) for the runs of the model's jobs the daemon or the UI launched. A record
never replaces one of a run that finished later.

Plain JSON and no heavy import: ``status`` reads it in a light process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LAST_RUN_FILE = "last_run.json"
# The trigger `mlops-assets run` records for its own runs.
RUN_COMMAND = "mlops-assets run"
# Partitions named in one line before "(+N more)".
SHOWN_PARTITIONS = 5


def last_run_path(home: Path, model_name: str) -> Path:
    return Path(home) / model_name / LAST_RUN_FILE


def record_last_run(
    home: Path,
    model_name: str,
    report: Mapping[str, Any],
    *,
    finished_at: datetime | None = None,
    job: str | None = None,
    trigger: str | None = None,
    reason: str | None = None,
    partition_range: tuple[str, str] | None = None,
) -> Path | None:
    """Keep what the run's report says about its outcome (status, error, failed checks, versions), with the job,
    what launched it (``trigger``), its retrain ``reason`` and partition range when known; written atomically.

    ``finished_at`` (default: now) is when the run ended. A record of a run that finished later is kept: nothing is
    written then, and None is returned (a sensor catching up on an older run after a newer one was recorded)."""
    ended = finished_at or datetime.now(UTC)
    body = {
        "status": report["status"],
        "finished_at": ended.astimezone(UTC).isoformat(timespec="milliseconds"),
        "run_id": report.get("run_id"),
        "job": job,
        "trigger": trigger,
        "reason": reason,
        "partitions": report.get("partitions"),
        "partition_range": list(partition_range) if partition_range else None,
        "seconds": report.get("seconds"),
        "error": report.get("error"),
        "failed_checks": [c for c in report.get("checks", []) if not c["passed"]],
        "checks_passed": sum(1 for c in report.get("checks", []) if c["passed"]),
        "trained_version": next((r["version"] for r in report.get("retrains", [])), None),
        "unchanged_champion_version": report.get("unchanged_champion_version"),
    }
    path = last_run_path(home, model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        newer = finished_at_of(read_last_run(home, model_name))
        if newer is not None and newer > ended:
            return None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LAST_RUN_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh, indent=2, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (POSIX), so that two writers do not both find themselves newer."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def finished_at_of(record: Mapping[str, Any] | None) -> datetime | None:
    """When the recorded run ended (UTC), or None when the record does not say."""
    try:
        ended = datetime.fromisoformat(str(record["finished_at"])) if record else None
    except (KeyError, ValueError):
        return None
    return ended if ended is None or ended.tzinfo else ended.replace(tzinfo=UTC)


def describe_run(record: Mapping[str, Any]) -> str | None:
    """What the recorded run was and who launched it, for ``status``: ``drift retrain, by the daemon``,
    ``ingest, launched by hand in Dagster``, ``run, by mlops-assets run``; None for a record without its job (an older
    one)."""
    job = record.get("job")
    if not job:
        return None
    job = str(job)
    if job.endswith("_retrain_job"):
        what = f"{record.get('reason') or 'manual'} retrain"
    elif job.endswith("_ingest_job"):
        what = "ingest"
    elif job.endswith("_run_job"):
        what = "run"
    else:
        what = job
    trigger = str(record.get("trigger") or "")
    if trigger == RUN_COMMAND:
        by = f"by {RUN_COMMAND}"
    elif trigger.startswith(("sensor ", "schedule ", "backfill ")):
        by = f"by the daemon ({trigger})"
    elif trigger.startswith("re-execution"):
        by = f"{trigger}, launched in Dagster"
    else:
        by = "launched by hand in Dagster"
    return f"{what}, {by}"


def read_last_run(home: Path, model_name: str) -> dict[str, Any] | None:
    """The last run's record, or None when no run has been recorded here (or the file is
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
