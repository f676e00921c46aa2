"""Find stored partition files that cannot be read, set them aside, and name the partitions to rebuild.

Every stored partition is a derivative of the source: raw_data (with its quarantined rows) is the source's rows of
one period, validated_data and the offline store's features are computed from them. A damaged file (0 bytes, cut
short by a full disk, overwritten) is therefore rebuilt by materializing its partition again from the source, which
``mlops-assets repair`` does after this step. The damaged file is moved, not deleted, under
``$MLOPS_HOME/<model>/damaged/<time>/`` so nothing stored is lost.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import Stores
from mlops_assets.data.store import CorruptPartitionError
from mlops_assets.storage import Storage


@dataclass(frozen=True)
class DamagedFile:
    """One unreadable partition file, and where it was moved (None until :func:`set_aside`)."""

    asset: str
    partition: str
    path: Path
    cause: str
    moved_to: Path | None = None

    def describe(self) -> str:
        where = f", moved to {self.moved_to}" if self.moved_to else ""
        return f"{self.asset} partition {self.partition}: {self.path} ({self.cause}){where}"


def find_damaged(cfg: MlopsConfig, storage: Storage) -> list[DamagedFile]:
    """Every stored partition file of ``cfg``'s model that cannot be read in full: raw_data, its quarantine,
    validated_data and the offline store (when it is the local Parquet one)."""
    from mlops_assets.features.stores import offline_store

    stores = Stores.at(storage.home, cfg.model.name)
    errors: list[CorruptPartitionError] = [
        *stores.raw.unreadable(),
        *stores.quarantine.unreadable(),
        *stores.validated.unreadable(),
        *offline_store(cfg, storage).unreadable(),
    ]
    return [DamagedFile(e.asset, e.partition, e.path, e.cause) for e in errors]


def set_aside(cfg: MlopsConfig, storage: Storage, damaged: list[DamagedFile]) -> list[DamagedFile]:
    """Move each damaged file under ``$MLOPS_HOME/<model>/damaged/<UTC time>/<folder>/`` (kept for a look, and out
    of the way of the rebuild)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = storage.home / cfg.model.name / "damaged" / stamp
    moved = []
    for d in damaged:
        target = base / d.path.parent.name / d.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(d.path, target)
        moved.append(DamagedFile(d.asset, d.partition, d.path, d.cause, target))
    return moved


def partitions_to_rebuild(damaged: list[DamagedFile], named: list[str]) -> list[str]:
    """The partition keys to materialize again: those with a damaged file and those named by the user."""
    return sorted({d.partition for d in damaged} | set(named))
