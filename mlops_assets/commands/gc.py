"""``mlops-assets gc [--dry-run]``: remove the offline store's snapshots no version to keep needs, and the
prediction log's rows older than ``retention.prediction_log_days``.

A rewrite of a partition in the (Parquet) offline store keeps the bytes it replaces as a snapshot, so that a
registered version can be rebuilt (``mlops-assets reproduce``). A snapshot is needed by a version when the version's
provenance names its digest. Always kept: the snapshots of the champion, the previous version and every version
awaiting approval; and those of the newest ``retention.keep_versions`` versions. The rest is removed (``--dry-run``:
listed). A version that recorded no provenance needs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops_assets.commands.context import load_context, open_registry, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


@dataclass
class GcOutcome:
    kept_for: list[str]  # the versions whose snapshots were kept, oldest first
    kept: int  # snapshots kept
    removed: list[str] = field(default_factory=list)  # "<partition>@<digest>" of each removed snapshot
    freed_bytes: int = 0
    dry_run: bool = False
    note: str | None = None
    # Prediction-log retention (retention.prediction_log_days): rows and shadow answers removed, and the cut-off.
    log_removed: tuple[int, int] = (0, 0)
    log_cutoff: str | None = None

    def summary(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        lines = [self.note] if self.note else []
        if not self.note:
            lines.append(
                f"{verb} {len(self.removed)} snapshot(s), {self.freed_bytes / 1e6:.1f} MB; kept {self.kept} needed "
                f"by version(s) {', '.join(self.kept_for) or 'none'}"
            )
            lines += [f"  {verb}: {name}" for name in self.removed]
        if self.log_cutoff is None:
            lines.append("prediction log: kept for ever (retention.prediction_log_days is not set)")
        else:
            rows, shadow = self.log_removed
            lines.append(
                f"prediction log: {verb} {rows} prediction(s) and {shadow} shadow answer(s) made before "
                f"{self.log_cutoff}"
            )
        return lines


def versions_to_keep(cfg: MlopsConfig, registry: ModelRegistry) -> list[str]:
    """The champion, the previous version, every version awaiting approval or in shadow, and the newest
    ``retention.keep_versions`` versions; oldest first."""
    from mlops_assets.registry.model_registry import CHAMPION, PREVIOUS

    aliases = registry.aliases()
    keep = {aliases[a] for a in (CHAMPION, PREVIOUS) if a in aliases}
    keep |= {str(a.version) for a in registry.awaiting_approval()}
    running = registry.active_shadow()
    if running is not None:
        keep.add(running.version)
    newest = cfg.retention.keep_versions
    if newest:
        keep |= set(registry.versions()[-newest:])
    return sorted(keep, key=int)


def gc(cfg: MlopsConfig, storage: Storage, *, dry_run: bool = False) -> GcOutcome:
    """Remove (``dry_run``: list) the snapshots that no version of :func:`versions_to_keep` needs."""
    from mlops_assets.commands.reproduce import has_provenance, recorded_provenance
    from mlops_assets.features.stores import offline_store

    store = offline_store(cfg, storage)
    registry = open_registry(cfg, storage)
    if store.url is not None:
        out = GcOutcome(
            [],
            0,
            dry_run=dry_run,
            note="the offline store is a SQL table: it keeps no snapshots, nothing to remove",
        )
        return _trim_prediction_log(cfg, storage, registry, out)
    keep = versions_to_keep(cfg, registry)
    needed: set[tuple[str, str]] = set()
    for version in keep:
        if not has_provenance(registry, version):
            continue  # registered before provenance was recorded: it names no snapshot
        # Any error reading a provenance that exists stops gc: nothing is removed on a guess.
        needed |= set(recorded_provenance(registry, version).data_files.items())
    out = GcOutcome(keep, 0, dry_run=dry_run)
    for key, digest, path in store.snapshots():
        if (key, digest) in needed:
            out.kept += 1
            continue
        out.removed.append(f"{key}@{digest}")
        out.freed_bytes += path.stat().st_size
        if not dry_run:
            path.unlink()
    return _trim_prediction_log(cfg, storage, registry, out)


def _trim_prediction_log(
    cfg: MlopsConfig, storage: Storage, registry: ModelRegistry, out: GcOutcome
) -> GcOutcome:
    """retention.prediction_log_days: the prediction log's older rows go, never the running shadow's answers."""
    from datetime import UTC, datetime, timedelta

    from mlops_assets.serving.prediction_log import remove_older_than

    days = cfg.retention.prediction_log_days
    if days is None:
        return out
    cutoff = datetime.now(UTC) - timedelta(days=days)
    shadow = registry.active_shadow()
    out.log_removed = remove_older_than(
        storage.prediction_log_url,
        cfg.model.name,
        cutoff,
        keep_shadow=shadow.version if shadow is not None else None,
        dry_run=out.dry_run,
    )
    out.log_cutoff = cutoff.isoformat(timespec="seconds")
    return out


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per artifact read
    ctx = load_context(args.config)
    require_state(ctx.storage)
    try:
        outcome = gc(ctx.cfg, ctx.storage, dry_run=args.dry_run)
    except RegistryError as err:
        print(f"mlops-assets gc: {err}", file=sys.stderr)
        return 1
    print("\n".join(outcome.summary()))
    return 0
