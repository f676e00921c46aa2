"""What is new in the source since last time: the partitions a growing source needs ingested.

Sources grow in three ways, each noticed as cheaply as the source allows:

* new files in a folder or glob, or a file rewritten in place: the files' names, sizes and modification times are
  compared (no byte read); only the new or changed files' time ranges are read, and their partitions are due;
* new rows in a SQL table: a watermark on the timestamp column (one ``min/max/count`` aggregate); the partitions
  from the oldest row past the watermark (its period, which is the watermark's own when that was partial) to the
  new newest row are due; rows changed below the watermark (the count moved, the newest row did not) make every
  partition due;
* a file whose timestamps come from the row order: new rows extend the range past the last recorded end.

The state to remember is plain JSON (a sensor cursor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import keys_between
from mlops_assets.data.sources import open_source
from mlops_assets.data.sources.files import FileSource
from mlops_assets.data.sources.sql import SqlSource


@dataclass
class Arrivals:
    """Partitions due for ingestion (in order), why, and the state that marks them seen."""

    keys: list[str]
    reason: str
    state: dict[str, Any] = field(default_factory=dict)


def detect_arrivals(
    cfg: MlopsConfig, previous: dict[str, Any] | None, *, recorded_fingerprint: str | None = None
) -> Arrivals:
    """Compare the source with ``previous`` (the state an earlier call returned; None at first).

    With no previous state, everything is due unless ``recorded_fingerprint`` (what the last ingestion recorded)
    says the source has not changed since it was ingested.
    """
    source = open_source(cfg)
    if not isinstance(source, (FileSource, SqlSource)):
        raise TypeError(f"no way to watch {source.describe()} for new data")
    freq = cfg.partitions.freq
    if previous is None and recorded_fingerprint is not None and recorded_fingerprint == source.fingerprint():
        state = _state(source)
        if isinstance(source, FileSource):
            state["end"] = source.time_range().end.isoformat()
        return Arrivals([], "the source is unchanged since its last ingestion", state)
    if isinstance(source, FileSource):
        state = _state(source)
        if previous is None:
            rng = source.time_range()
            state["end"] = rng.end.isoformat()
            return Arrivals(keys_between(rng.start, rng.end, freq), "first look at the source", state)
        seen = previous.get("files", {})
        changed = [Path(p) for p, stat in state["files"].items() if seen.get(p) != stat]
        state["end"] = previous.get("end")
        if not changed:
            return Arrivals([], "no new or changed file", state)
        names = ", ".join(p.name for p in changed[:5]) + (" ..." if len(changed) > 5 else "")
        if cfg.dataset.timestamp_from_row_order is not None:
            # Timestamps follow the row order of all files: what is new lies past the last end seen.
            rng = source.time_range()
            state["end"] = rng.end.isoformat()
            start = pd.Timestamp(previous["end"]) if previous.get("end") else rng.start
            return Arrivals(keys_between(start, rng.end, freq), f"changed: {names}", state)
        rng = FileSource(cfg, changed).time_range()
        return Arrivals(keys_between(rng.start, rng.end, freq), f"new or changed file(s): {names}", state)
    # A database: a watermark on the timestamp column, from one aggregate (range and fingerprint read separately
    # could straddle a commit and call new rows a change below the watermark).
    rng, fingerprint, stored_now = source.snapshot()
    state = {"watermark": rng.end.isoformat(), "fingerprint": fingerprint, "stored_watermark": stored_now}
    if previous is None or previous.get("watermark") is None:
        return Arrivals(keys_between(rng.start, rng.end, freq), "first look at the source", state)
    if fingerprint == previous.get("fingerprint"):
        return Arrivals([], "no new rows", state)
    watermark = pd.Timestamp(previous["watermark"])
    if rng.end > watermark:
        # The rows past the watermark decide where the due range starts: the watermark's own period only when
        # rows were added to it (it was partial), so a complete period is not ingested again.
        stored = previous.get("stored_watermark")
        newer = source.time_range_after(stored) if stored is not None else None
        start = newer.start if newer is not None else watermark
        return Arrivals(keys_between(start, rng.end, freq), f"rows newer than {watermark.isoformat()}", state)
    return Arrivals(
        keys_between(rng.start, rng.end, freq),
        "rows changed at or below the watermark: every partition",
        state,
    )


def _state(source: FileSource | SqlSource) -> dict[str, Any]:
    if isinstance(source, FileSource):
        return {"files": source.listing()}
    rng, fingerprint, stored = source.snapshot()
    return {"watermark": rng.end.isoformat(), "fingerprint": fingerprint, "stored_watermark": stored}
