"""``mlops-assets reproduce VERSION [--check]``: rebuild a registered version from what it recorded and compare.

A version records its provenance (:mod:`mlops_assets.provenance`): the resolved config, the data version of every
partition of its windows, the hash of every training and feature source file, the packages and the seed. This
command refuses, naming what is missing or different, when the code or a partition's data is not what the version
was made from; otherwise it trains again through the product's own training step (the same windows read from the
offline store, the same fit, threshold, backtest and refit) and compares the rebuilt model with the registered one:
its predictions on the holdout, the holdout metrics and the decision threshold.

Exit codes: 0 rebuilt (with ``--check``: and identical), 1 with ``--check`` when anything differs, 2 when the version
cannot be rebuilt (the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_assets.commands.context import load_context, open_registry, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.provenance import Provenance


class CannotReproduceError(RuntimeError):
    """What a version was made from is not here any more (data rewritten, code changed, nothing recorded)."""


@dataclass
class Reproduction:
    """A rebuilt version beside the registered one."""

    model_name: str
    version: str
    rows: int  # holdout rows compared
    max_prediction_diff: float
    metrics: dict[str, tuple[float | None, float | None]]  # name -> (recorded, rebuilt)
    threshold: tuple[float | None, float | None]
    notes: list[str] = field(
        default_factory=list
    )  # differences that do not stop a rebuild (package versions)

    @property
    def metric_diffs(self) -> dict[str, tuple[float | None, float | None]]:
        return {k: v for k, v in self.metrics.items() if not _same(*v)}

    @property
    def identical(self) -> bool:
        return self.max_prediction_diff == 0.0 and not self.metric_diffs and _same(*self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "version": self.version,
            "identical": self.identical,
            "holdout_rows": self.rows,
            "max_prediction_diff": self.max_prediction_diff,
            "metrics": {k: {"recorded": a, "rebuilt": b} for k, (a, b) in self.metrics.items()},
            "threshold": {"recorded": self.threshold[0], "rebuilt": self.threshold[1]},
            "notes": self.notes,
        }

    def summary(self) -> list[str]:
        verdict = "IDENTICAL" if self.identical else "DIFFERENT"
        lines = [f"{self.model_name} version {self.version} rebuilt: {verdict}"]
        lines.append(
            f"  predictions on the {self.rows} holdout rows: "
            + (
                "identical"
                if self.max_prediction_diff == 0.0
                else f"differ by up to {self.max_prediction_diff:.3g}"
            )
        )
        diffs = self.metric_diffs
        same = len(self.metrics) - len(diffs)
        lines.append(f"  holdout metrics: {same} of {len(self.metrics)} identical")
        for name, (a, b) in diffs.items():
            lines.append(f"    {name}: recorded {a}, rebuilt {b}")
        a, b = self.threshold
        lines.append(f"  decision threshold: {b}" + ("" if _same(a, b) else f" (recorded {a})"))
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and abs(a - b) <= 1e-12 * max(1.0, abs(a)))


def has_provenance(registry: Any, version: str) -> bool:
    """Whether ``version``'s run holds a provenance artifact (listing the run's artifacts; an error propagates)."""
    from mlops_assets.provenance import ARTIFACT

    run_id = registry.get_version(version).run_id
    if run_id is None:
        return False
    return f"{ARTIFACT}.json" in {a.path for a in registry.client.list_artifacts(run_id)}


def recorded_provenance(registry: Any, version: str) -> Provenance:
    """``version``'s provenance; :class:`CannotReproduceError` when its run holds none (registered before versions
    recorded it, or not by mlops_assets). Any other error reading it propagates."""
    from mlops_assets.provenance import ARTIFACT, Provenance

    if not has_provenance(registry, version):
        raise CannotReproduceError(
            f"version {version} has no {ARTIFACT}.json: it was registered before versions recorded what they "
            "were made from, or not by mlops_assets"
        )
    return Provenance.from_dict(registry.load_json(version, ARTIFACT))


def recorded_config(prov: Provenance, current: MlopsConfig) -> MlopsConfig:
    """The config the version was trained with, its relative sources resolved against the current file's folder."""
    cfg = MlopsConfig.model_validate(prov.config)
    return cfg.model_copy(update={"source_dir": current.source_dir})


def code_differences(prov: Provenance) -> list[str]:
    """Source files whose content differs from the version's (changed, added or gone)."""
    from mlops_assets.provenance import code_files

    now = code_files()
    return sorted(p for p in {*now, *prov.code_files} if now.get(p) != prov.code_files.get(p))


def reproduce(cfg: MlopsConfig, storage: Storage, version: str) -> Reproduction:
    """Rebuild ``version`` of ``cfg``'s model and compare it with the registered one.

    Raises :class:`CannotReproduceError` naming what stops the rebuild: no provenance recorded, training or feature
    code that differs (the files), a partition whose rows differ from those it was trained on or that is gone (the
    partitions), windows that no longer come out the same."""
    import numpy as np

    from mlops_assets.features import features_code_version
    from mlops_assets.features.offline import OfflineStoreError
    from mlops_assets.features.stores import offline_store
    from mlops_assets.provenance import package_versions, partition_versions
    from mlops_assets.registry.tags import TAG_DECISION_THRESHOLD
    from mlops_assets.steps.train import PARTITION, TrainingDataError, load_training_data, train_challenger

    registry = open_registry(cfg, storage)
    mv = registry.get_version(version)
    version = str(mv.version)
    prov = recorded_provenance(registry, version)
    rcfg = recorded_config(prov, cfg)
    where = f"cannot rebuild {cfg.model.name} version {version}"

    changed = code_differences(prov)
    if changed:
        commit = prov.git.get("commit")
        hint = f"; check out commit {commit} (recorded with it)" if commit else ""
        raise CannotReproduceError(
            f"{where}: the training or feature code differs from the code that trained it: {', '.join(changed)}"
            + hint
        )
    if features_code_version(rcfg) != prov.feature_version:
        raise CannotReproduceError(
            f"{where}: the feature version is {features_code_version(rcfg)}, it was trained on "
            f"{prov.feature_version}"
        )

    store = offline_store(rcfg, storage).until(prov.data_through)
    if prov.data_files and store.url is None:
        # Each partition read from the bytes it was trained on: the current file, or the snapshot a rewrite kept.
        store = store.pinned(prov.data_files)
        lost = store.missing_snapshots()
        if lost:
            raise CannotReproduceError(
                f"{where}: the data it was trained on is not all here (rewritten or removed since, and no "
                f"snapshot kept: {_span(lost)}); `mlops-assets gc` keeps the snapshots of the champion, the "
                "previous version, versions awaiting approval and the newest retention.keep_versions"
            )
    try:
        data = load_training_data(rcfg, store)
    except (TrainingDataError, OfflineStoreError) as err:
        raise CannotReproduceError(
            f"{where}: the offline store cannot give its training data: {err}"
        ) from None
    now = partition_versions(data.frame, PARTITION)
    gone = sorted(set(prov.data_versions) - set(now))
    rewritten = sorted(k for k in prov.data_versions if k in now and now[k] != prov.data_versions[k])
    if gone or rewritten:
        parts = []
        if rewritten:
            parts.append(f"rewritten since it was trained: {_span(rewritten)}")
        if gone:
            parts.append(f"no longer in the offline store: {_span(gone)}")
        raise CannotReproduceError(
            f"{where}: the data it was trained on is not all here ({'; '.join(parts)})"
            + ("" if prov.data_files else "; it was stored without snapshots (a SQL offline store)")
        )
    windows = {
        "train": data.split.train,
        "validation": data.split.validation,
        "holdout": data.split.holdout,
        "refit": data.refit_window,
    }
    moved = [name for name, keys in windows.items() if list(keys) != list(prov.windows.get(name, []))]
    if moved:
        raise CannotReproduceError(
            f"{where}: the windows come out differently on today's offline store ({', '.join(moved)}): "
            f"recorded {', '.join(_window(prov.windows.get(n, [])) for n in moved)}, now "
            f"{', '.join(_window(windows[n]) for n in moved)}"
        )

    challenger = train_challenger(rcfg, data, feature_version=prov.feature_version, champion=None)
    registered = registry.load(version).model
    X = challenger.holdout
    ours = np.asarray(challenger.deployed.pipeline.predict_proba(X))[:, 1]
    theirs = np.asarray(registered.predict_proba(X))[:, 1]
    diff = float(np.max(np.abs(ours - theirs))) if len(X) else 0.0

    recorded = registry.version_metrics(version)
    metrics: dict[str, tuple[float | None, float | None]] = {
        f"holdout_{k}": (recorded.get(f"holdout_{k}"), float(v))
        for k, v in challenger.metrics.items()
        if isinstance(v, int | float)
    }
    tag = (mv.tags or {}).get(TAG_DECISION_THRESHOLD)
    threshold = (
        float(tag) if tag is not None else None,
        None if challenger.threshold is None else float(challenger.threshold.value),
    )
    here = package_versions()
    notes = [
        f"{name} {prov.packages.get(name)} when trained, {here.get(name)} here"
        for name in sorted({*here, *prov.packages})
        if here.get(name) != prov.packages.get(name)
    ]
    if prov.git.get("dirty"):
        notes.append(f"it was trained from commit {prov.git.get('commit')} with uncommitted changes")
    return Reproduction(cfg.model.name, version, len(X), diff, metrics, threshold, notes)


def _span(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]} ({len(keys)} partitions)"


def _window(keys: list[str]) -> str:
    return f"{keys[0]}..{keys[-1]}" if keys else "none"


def main(args: argparse.Namespace) -> int:
    import json

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per artifact read
    ctx = load_context(args.config)
    require_state(ctx.storage)
    try:
        outcome = reproduce(ctx.cfg, ctx.storage, args.version)
    except (CannotReproduceError, RegistryError) as err:
        print(f"mlops-assets reproduce: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        print("\n".join(outcome.summary()))
    return 1 if args.check and not outcome.identical else 0
