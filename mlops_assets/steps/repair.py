"""Find stored partition files that cannot be read, set them aside, and name the partitions to rebuild.

Every stored partition is a derivative of the source: raw_data (with its quarantined rows) is the source's rows of
one period, validated_data and the offline store's features are computed from them. A damaged file (0 bytes, cut
short by a full disk, overwritten) is therefore rebuilt by materializing its partition again from the source, which
``mlops-assets repair`` does after this step. The damaged file is moved, not deleted, under
``$MLOPS_HOME/<model>/damaged/<time>/`` so nothing stored is lost.

A run does the same on its own (:func:`set_aside_damaged`): before its data steps read the stores it moves every file
whose footer cannot be read aside, so the run rebuilds those partitions from the source as it materializes its
range, and leaves out, with a warning, those it cannot rebuild. Every file moved aside is recorded in
``$MLOPS_HOME/<model>/damaged/moved.jsonl``; :func:`needing_repair` is the recorded ones whose partition has not
been written again since (what ``status`` and the run report show).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import Stores
from mlops_assets.data.store import CorruptPartitionError, check_file
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

    def to_dict(self) -> dict[str, str | None]:
        return {k: None if v is None else str(v) for k, v in asdict(self).items()}


# Which stores a sweep looks at: the data steps' (raw_data, its quarantine, validated_data) and the offline store's.
DATA, FEATURES = "data", "features"


def find_damaged(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    footer_only: bool = False,
    stores_of: Iterable[str] = (DATA, FEATURES),
) -> list[DamagedFile]:
    """Every stored partition file of ``cfg``'s model that cannot be read in full (``footer_only``: whose footer
    cannot be read, one small read a file): raw_data, its quarantine, validated_data (``DATA``) and the offline
    store when it is the local Parquet one (``FEATURES``)."""
    from mlops_assets.features.stores import offline_store

    stores = Stores.at(storage.home, cfg.model.name)
    errors: list[CorruptPartitionError] = []
    if DATA in stores_of:
        for store in (stores.raw, stores.quarantine, stores.validated):
            errors += store.unreadable(footer_only=footer_only)
    if FEATURES in stores_of:
        errors += offline_store(cfg, storage).unreadable(footer_only=footer_only)
    return [DamagedFile(e.asset, e.partition, e.path, e.cause) for e in errors]


def set_aside_damaged(
    cfg: MlopsConfig, storage: Storage, *, stores_of: Iterable[str] = (DATA, FEATURES)
) -> list[DamagedFile]:
    """Before a run's steps read the stores: move every partition file of ``stores_of`` whose footer cannot be
    read (an empty or cut-short file) aside, and return them. The run then rebuilds those in its range from the
    source; the others stay recorded as needing repair (:func:`needing_repair`)."""
    return set_aside(cfg, storage, find_damaged(cfg, storage, footer_only=True, stores_of=stores_of))


def set_aside(cfg: MlopsConfig, storage: Storage, damaged: list[DamagedFile]) -> list[DamagedFile]:
    """Move each damaged file under ``$MLOPS_HOME/<model>/damaged/<UTC time>/<folder>/`` (kept for a look, and out
    of the way of the rebuild)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = storage.home / cfg.model.name / "damaged" / stamp
    moved = []
    for d in damaged:
        target = base / d.path.parent.name / d.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(d.path, target)
        except FileNotFoundError:
            continue  # another run on this storage moved it first
        moved.append(DamagedFile(d.asset, d.partition, d.path, d.cause, target))
    if moved:
        with _ledger(cfg, storage).open("a") as f:
            for d in moved:
                f.write(json.dumps(d.to_dict()) + "\n")
    return moved


def _ledger(cfg: MlopsConfig, storage: Storage) -> Path:
    return storage.home / cfg.model.name / "damaged" / "moved.jsonl"


def ledger_mark(cfg: MlopsConfig, storage: Storage) -> int:
    """Where the record of moved files ends now: :func:`moved_since` that mark is what was moved after it."""
    ledger = _ledger(cfg, storage)
    return ledger.stat().st_size if ledger.is_file() else 0


def moved_since(cfg: MlopsConfig, storage: Storage, mark: int) -> list[tuple[DamagedFile, bool]]:
    """The files moved aside since :func:`ledger_mark` gave ``mark``, each with whether its partition has been
    written again (rebuilt) and reads."""
    ledger = _ledger(cfg, storage)
    if not ledger.is_file():
        return []
    with ledger.open("rb") as f:
        f.seek(mark)
        rows = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    moved = [_from_row(row) for row in rows]
    return [(d, _readable(d.path)) for d in moved]


def warning(d: DamagedFile, rebuilt: bool | None = None) -> str:
    """The line a run logs (and reports) for a damaged file it moved aside."""
    what = f"damaged stored file moved aside: {d.describe()}"
    if rebuilt is None:
        return f"{what}; this run rebuilds partition {d.partition} if the source still holds it"
    if rebuilt:
        return f"{what}; rebuilt from the source"
    return f"{what}; not rebuilt (left out of this run): `mlops-assets repair --partition {d.partition}` rebuilds it"


def _from_row(row: dict) -> DamagedFile:
    moved_to = Path(row["moved_to"]) if row.get("moved_to") else None
    return DamagedFile(row["asset"], row["partition"], Path(row["path"]), row["cause"], moved_to)


def needing_repair(cfg: MlopsConfig, storage: Storage) -> list[DamagedFile]:
    """The partition files moved aside (by a run or ``repair``) that have not been written again since, or were
    written again and cannot be read: their partitions need ``mlops-assets repair`` (the source may no longer hold
    them, or their gates blocked the rebuild)."""
    ledger = _ledger(cfg, storage)
    if not ledger.is_file():
        return []
    latest: dict[str, DamagedFile] = {}
    for line in ledger.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest[row["path"]] = _from_row(row)
    return [d for d in latest.values() if not _readable(d.path)]


def _readable(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        check_file(path, footer_only=True)
    except CorruptPartitionError:
        return False
    return True


def partitions_to_rebuild(damaged: list[DamagedFile], named: list[str]) -> list[str]:
    """The partition keys to materialize again: those with a damaged file and those named by the user."""
    return sorted({d.partition for d in damaged} | set(named))
