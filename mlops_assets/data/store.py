"""Per-partition Parquet files: the local store behind raw and validated data.

A partition is one file, written to a temporary name and renamed into place, so a crash mid-write never leaves a
half-written partition and rematerializing a partition replaces it whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


class PartitionStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid partition key {key!r}")
        return self.root / f"{key}.parquet"

    def write(self, key: str, frame: pd.DataFrame) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.parquet"))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(
        self, keys: list[str] | None = None, *, missing_ok: bool = False, columns: list[str] | None = None
    ) -> pd.DataFrame:
        keys = self.keys() if keys is None else keys
        paths = []
        for key in keys:
            p = self.path(key)
            if not p.is_file():
                if missing_ok:
                    continue
                raise FileNotFoundError(f"partition {key!r} has not been materialized ({p})")
            paths.append(p)
        if not paths:
            return pd.DataFrame()
        if len(paths) == 1:
            return pd.read_parquet(paths[0], columns=columns)
        return _read_many(paths, columns)

    def row_count(self, key: str) -> int:
        """Rows of a stored partition, from the Parquet footer."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path(key)).metadata.num_rows


def _read_many(paths: list[Path], columns: list[str] | None) -> pd.DataFrame:
    """The files' rows in order, as one frame: Arrow tables joined, then converted to pandas once.

    Converting each file to pandas and concatenating the frames costs about a millisecond per file in conversion
    alone, which a run over hundreds of partitions pays on every multi-partition read. Files whose columns Arrow
    cannot reconcile (a column holding integers in one file and text in another) are read the pandas way, with
    pandas' own type widening.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=columns) for p in paths]
    try:
        joined = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return joined.to_pandas()
