"""Content hashes: the data versions every materialization carries and every model records."""

from __future__ import annotations

import hashlib

import pandas as pd


def content_version(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's columns, dtypes and values (row order included)."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    if len(frame):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:20]


def combined_version(versions: list[str]) -> str:
    """One version for data written a piece at a time: a hash of the pieces' content versions, in order."""
    h = hashlib.sha256()
    for v in versions:
        h.update(v.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def content_versions(frame: pd.DataFrame, sizes: list[int]) -> list[str]:
    """:func:`content_version` of each consecutive slice of ``frame`` (``sizes`` rows each, in order), hashing the
    frame once: a row's hash depends on that row alone, so slicing the row hashes equals hashing each slice."""
    if sum(sizes) != len(frame):
        raise ValueError(f"slices of {sum(sizes)} rows for a frame of {len(frame)}")
    dtypes = repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode()
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy() if len(frame) else None
    versions, start = [], 0
    for n in sizes:
        h = hashlib.sha256()
        h.update(dtypes)
        if n:
            assert rows is not None
            h.update(rows[start : start + n].tobytes())
        versions.append(h.hexdigest()[:20])
        start += n
    return versions
