"""Source rows sorted into partitions in one streaming pass, whatever the source's order, in bounded memory.

A backfill reads its source once, batch by batch. Each batch's rows go to their partition: held in memory while the
whole read fits in one batch (the common small case), else spilled as uncompressed Arrow IPC pieces (scratch data
read back once: no encoding to pay for) under a scratch folder, one folder per partition. Afterwards a partition is read back whole, rows in source order then sorted by time (stable),
exactly as sorting the entire source would order them.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pandas as pd

from mlops_assets.data.partitions import row_keys
from mlops_assets.data.store import PartitionStore


class Staging:
    def __init__(
        self, root: Path, *, timestamp_column: str, freq: str, memory_rows: int, keep: set[str] | None = None
    ):
        self.root = Path(root)
        self.keep = keep  # the partitions wanted; rows of any other are dropped on arrival
        self.timestamp_column = timestamp_column
        self.freq = freq
        self.memory_rows = memory_rows
        self.rows: dict[str, int] = defaultdict(int)
        self._memory: dict[str, list[pd.DataFrame]] = defaultdict(list)
        self._pieces: dict[str, int] = defaultdict(int)
        self._spilled = False

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def add(self, frame: pd.DataFrame) -> None:
        """File a batch of source rows under their partitions."""
        if frame.empty:
            return
        keys = row_keys(frame[self.timestamp_column], self.freq)
        for key, part in frame.groupby(keys, sort=False):
            if self.keep is not None and key not in self.keep:
                continue
            self.rows[key] += len(part)
            if self._spilled:
                self._write(key, part)
            else:
                self._memory[key].append(part)
        if not self._spilled and self.total_rows > self.memory_rows:
            self._spill()

    def keys(self) -> list[str]:
        return sorted(self.rows)

    def read(self, key: str) -> pd.DataFrame:
        """One partition's rows, sorted by time (stable: ties keep their source order)."""
        if key not in self.rows:
            raise KeyError(f"no staged rows for partition {key!r}")
        if self._spilled:
            import pyarrow as pa
            import pyarrow.feather as feather

            pieces = [feather.read_table(p) for p in sorted(self._folder(key).glob("*.arrow"))]
            try:
                frame = pa.concat_tables(pieces).to_pandas() if len(pieces) > 1 else pieces[0].to_pandas()
            except pa.ArrowInvalid:
                # Batches whose columns Arrow cannot join (a column all empty in one, numbers in another): joined
                # the pandas way, as before.
                frame = pd.concat([p.to_pandas() for p in pieces], ignore_index=True)
        else:
            parts = self._memory[key]
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return frame.sort_values(self.timestamp_column, kind="stable").reset_index(drop=True)

    def close(self) -> None:
        self._memory.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _spill(self) -> None:
        self._spilled = True
        for key, parts in self._memory.items():
            for part in parts:
                self._write(key, part)
        self._memory.clear()

    def _folder(self, key: str) -> Path:
        return PartitionStore(self.root).path(key).with_suffix("")

    def _write(self, key: str, part: pd.DataFrame) -> None:
        folder = self._folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        n = self._pieces[key]
        self._pieces[key] = n + 1
        import pyarrow as pa
        import pyarrow.feather as feather

        table = pa.Table.from_pandas(part, preserve_index=False)
        feather.write_feather(table, folder / f"{n:08d}.arrow", compression="uncompressed")


def group_keys(keys: list[str], rows: dict[str, int], budget: int) -> list[list[str]]:
    """Consecutive partitions in groups of at most ``budget`` rows (a larger partition is a group of its own)."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for key in keys:
        n = rows.get(key, 0)
        if current and size + n > budget:
            groups.append(current)
            current, size = [], 0
        current.append(key)
        size += n
    if current:
        groups.append(current)
    return groups
