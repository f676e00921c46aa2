"""Build the point-in-time features of a range of validated partitions into the offline and online stores."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops_assets import progress
from mlops_assets.config import MlopsConfig
from mlops_assets.data.batches import Stores
from mlops_assets.data.partitions import key_window, row_keys, split_by_partition
from mlops_assets.data.staging import group_keys
from mlops_assets.lineage import combined_version, content_version, content_versions
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.features.offline import OfflineStore


class FeaturesError(RuntimeError):
    """Features asked for partitions whose validated data does not exist."""


@dataclass
class FeaturesOutcome:
    partitions: list[str]
    rows: int
    columns: list[str]
    code_version: str
    online: dict[str, Any]
    partition_versions: dict[str, str] = field(default_factory=dict)

    @property
    def data_version(self) -> str:
        return combined_version([self.partition_versions[k] for k in self.partitions])


def build_features(cfg: MlopsConfig, stores: Stores, storage: Storage, keys: list[str]) -> FeaturesOutcome:
    """Compute the features of partitions ``keys`` a group at a time (``partitions.rows_per_batch`` rows), each
    group with the validated history its windows reach; write the offline store per partition and the online
    store's retention window."""
    from mlops_assets.features import compute_features, features_code_version, lookback
    from mlops_assets.features.feature_set import online_retention
    from mlops_assets.features.stores import offline_store, online_store

    freq, ts_col = cfg.partitions.freq, cfg.dataset.timestamp_column
    progress.step("features", f"{len(keys)} partition(s)")
    stored = stores.validated
    missing = [k for k in keys if not stored.exists(k)]
    if missing:
        raise FeaturesError(f"validated_data has not been materialized for partition(s) {missing[:10]}")
    # Each stored partition's [start, end), parsed once for every group's history look-up.
    windows = {k: key_window(k, freq) for k in stored.keys()}
    offline = offline_store(cfg, storage)
    versions: dict[str, str] = {}
    rows, columns, newest = 0, [], None
    sizes = {k: stored.row_count(k) for k in keys}
    reach_back = lookback(cfg)
    for group in group_keys(keys, sizes, cfg.partitions.rows_per_batch):
        start = windows[group[0]][0]
        events = stored.read(group)
        # The stored partitions before the group that its windows reach: [start - lookback, start).
        since = start - reach_back
        reach = [k for k, (_, end) in windows.items() if since < end <= start]
        computed = compute_features(cfg, events, stored.read(reach) if reach else None)
        _write_group(offline, computed, group, ts_col, freq, versions)
        rows += len(computed)
        columns = list(computed.columns)
        if len(events):
            newest = events[ts_col].max()
    # The online store keeps only the newest events (its retention); older rows of a long backfill would be
    # inserted only to be dropped again.
    start, end = windows[keys[0]][0], windows[keys[-1]][1]
    if newest is not None:
        start = max(start, newest - online_retention(cfg))
    recent = stored.read([k for k in keys if windows[k][1] > start])
    if len(recent):
        recent = recent[recent[ts_col] >= start]
    counts = online_store(cfg, storage).materialize(cfg, recent, start=start, end=end)
    return FeaturesOutcome(
        partitions=list(keys),
        rows=rows,
        columns=columns,
        code_version=features_code_version(cfg),
        online=json.loads(json.dumps(counts, default=str)),
        partition_versions=versions,
    )


def _write_group(
    offline: OfflineStore,
    computed: pd.DataFrame,
    group: list[str],
    ts_col: str,
    freq: str,
    versions: dict[str, str],
) -> None:
    """Write each partition of ``group`` (its rows of ``computed``, none for a partition without rows) to the
    offline store and record its content version.

    Rows in time order (as features are computed) hold each partition as one run of rows: the frame is then
    written and hashed as consecutive slices, not split into a frame per partition.
    """
    keys = row_keys(computed[ts_col], freq) if len(computed) else pd.Series([], dtype=object)
    counts = keys.value_counts(sort=False)
    in_order = keys.is_monotonic_increasing and set(counts.index) <= set(group)
    if not in_order:
        parts = split_by_partition(computed, ts_col, freq)
        for key in group:
            part = parts.get(key, computed.iloc[:0])
            offline.write_partition(key, part)
            versions[key] = content_version(part)
        return
    sizes = [int(counts.get(key, 0)) for key in group]
    offline.write_partitions(computed, list(zip(group, sizes, strict=True)))
    versions.update(zip(group, content_versions(computed, sizes), strict=True))
