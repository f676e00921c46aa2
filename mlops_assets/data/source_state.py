"""What ingestion last recorded about the source, so that loading the definitions reads no data.

A code location loads on every run, sensor tick and UI reload; the data gates it declares need the column kinds,
and the new-data sensor needs to know whether the source changed since it was last ingested. Ingestion, which reads
the source anyway, records the range, columns, kinds and fingerprint in ``$MLOPS_HOME/<model>/source_state.json``;
:func:`known_columns` answers from that file (before the first ingestion the definitions peek at the source).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.sources import SourceError, TimeRange, describe_source

STATE_FILE = "source_state.json"


@dataclass(frozen=True)
class SourceState:
    """One ingestion's view of the source."""

    time_range: TimeRange
    columns: list[str]
    kinds: dict[str, str]  # column -> "numeric" | "categorical", as the data contract inferred them
    fingerprint: str  # Source.fingerprint() when it was read
    source: dict[str, Any] | None  # source_identity() of the config it was read with
    recorded_at: str


def source_identity(cfg: MlopsConfig) -> dict[str, Any]:
    """What decides which rows and timestamps the source yields; a recorded state for another identity is stale."""
    ds = cfg.dataset
    order = ds.timestamp_from_row_order
    return {
        "source": describe_source(cfg),
        "query": ds.query,
        "timestamp_column": ds.timestamp_column,
        "timestamp_format": ds.timestamp_format,
        "timestamp_from_row_order": None if order is None else [str(order.start), str(order.step)],
    }


def state_path(home: Path, model_name: str) -> Path:
    return Path(home) / model_name / STATE_FILE


def record_ingestion(
    home: Path,
    model_name: str,
    *,
    time_range: TimeRange,
    columns: list[str],
    kinds: dict[str, str],
    fingerprint: str,
    source: dict[str, Any] | None = None,
) -> Path:
    """Record what an ingestion read (``source``: :func:`source_identity` of its config, so that a changed config
    is not answered from an old record). Written atomically: a reader sees the old file or the new one."""
    path = state_path(home, model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "time_range": {"start": time_range.start.isoformat(), "end": time_range.end.isoformat()},
        "columns": list(columns),
        "kinds": dict(kinds),
        "fingerprint": fingerprint,
        "source": source,
        "recorded_at": datetime.now(UTC).isoformat(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{STATE_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def recorded_state(home: Path, model_name: str) -> SourceState | None:
    """The last recorded state, or None before the first ingestion. A damaged file is an error naming it."""
    path = state_path(home, model_name)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read the recorded source state: {err}") from None
    try:
        rng = body["time_range"]
        return SourceState(
            time_range=TimeRange(_utc(rng["start"]), _utc(rng["end"])),
            columns=list(body["columns"]),
            kinds=dict(body["kinds"]),
            fingerprint=str(body["fingerprint"]),
            source=body.get("source"),
            recorded_at=str(body["recorded_at"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SourceError(f"{path}: malformed recorded source state ({type(err).__name__}: {err})") from None


def _utc(value: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _current(cfg: MlopsConfig, home: Path) -> SourceState | None:
    state = recorded_state(home, cfg.model.name)
    if state is None or (state.source is not None and state.source != source_identity(cfg)):
        return None
    return state


def known_columns(cfg: MlopsConfig, home: Path) -> dict[str, str] | None:
    """The column kinds ingestion recorded ({column: "numeric" | "categorical"}), or None when nothing current is
    recorded (the caller then decides from a peek at the source)."""
    state = _current(cfg, home)
    return dict(state.kinds) if state is not None else None
