"""``mlops-assets repair [--partition KEY ...] [--dry-run]``: find stored partition files that cannot be read, move
them aside, and materialize their partitions again from the source (raw_data, validated_data, features).

The finding and moving is :mod:`mlops_assets.steps.repair`; the rebuild is :func:`mlops_assets.runner.execute` over
the data steps, as a Dagster run like any other (the UI shows it, downstream assets show as stale).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from mlops_assets.commands.context import load_context
from mlops_assets.config import MlopsConfig
from mlops_assets.steps.repair import (
    DamagedFile,
    find_damaged,
    needing_repair,
    partitions_to_rebuild,
    set_aside,
)
from mlops_assets.storage import Storage

# The data steps: what a partition's stored files are made by.
REBUILT = ["raw_data", "validated_data", "features"]


@dataclass
class RepairOutcome:
    """What ``repair`` found, moved and rebuilt."""

    damaged: list[DamagedFile]
    partitions: list[str]
    status: str = "nothing to repair"  # nothing to repair | dry run | ok | blocked | failed
    run_id: str | None = None
    error: str | None = None
    still_damaged: list[DamagedFile] = field(default_factory=list)


def repair(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    config_file: str,
    partitions: list[str] | None = None,
    dry_run: bool = False,
) -> RepairOutcome:
    """Move damaged partition files aside and rebuild their partitions (and ``partitions``, and those a run moved
    aside and could not rebuild) from the source, over the range from the first to the last of them."""
    from mlops_assets.runner import execute

    damaged = find_damaged(cfg, storage)
    earlier = needing_repair(cfg, storage)  # moved aside already, by a run that could not rebuild them
    keys = partitions_to_rebuild([*damaged, *earlier], partitions or [])
    outcome = RepairOutcome([*damaged, *earlier], keys)
    if not keys:
        return outcome
    if dry_run:
        outcome.status = "dry run"
        return outcome
    outcome.damaged = [*set_aside(cfg, storage, damaged), *earlier]
    run = execute(
        cfg,
        config_file=config_file,
        storage=storage.ensure(),
        partition_keys=(keys[0], keys[-1]),
        selection=REBUILT,
    )
    outcome.status, outcome.run_id, outcome.error = run.status, run.run_id, run.error
    outcome.still_damaged = [d for d in find_damaged(cfg, storage) if d.partition in keys]
    if outcome.still_damaged and outcome.status == "ok":
        outcome.status = "failed"
    return outcome


def main(args: argparse.Namespace) -> int:
    """Exit 0 when nothing is damaged or every partition was rebuilt, 1 otherwise."""
    ctx = load_context(args.config)
    out = repair(
        ctx.cfg,
        ctx.storage,
        config_file=str(ctx.config_file),
        partitions=args.partition,
        dry_run=args.dry_run,
    )
    for d in out.damaged:
        print(f"damaged: {d.describe()}")
    if not out.partitions:
        print(f"{ctx.cfg.model.name}: every stored partition file reads in full; nothing to repair")
        return 0
    span = f"{out.partitions[0]}..{out.partitions[-1]}"
    if out.status == "dry run":
        print(
            f"would rebuild {', '.join(REBUILT)} over {span} from the source ({len(out.partitions)} partition(s) damaged or named)"
        )
        return 0
    if out.status == "ok":
        print(f"rebuilt {', '.join(REBUILT)} over {span} from the source (run {out.run_id})")
        return 0
    for d in out.still_damaged:
        print(f"still damaged: {d.describe()}", file=sys.stderr)
    print(
        f"mlops-assets repair: rebuilding {span} {out.status}" + (f": {out.error}" if out.error else ""),
        file=sys.stderr,
    )
    return 1
