"""What made a model version, recorded with it so it can be made again (``mlops-assets reproduce``).

Each registered version carries a ``provenance.json`` artifact (and a few of its fields as MLflow tags, and as
metadata on the ``trained_model`` materialization): the resolved config, the data version of every partition it
was fitted and evaluated on, the hash of every source file the training and feature code is made of (the config file itself is recorded resolved), the git
commit of the project (and whether its tree had uncommitted changes), the versions of the packages that compute
the model, and the random seed.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlops_assets.config import MlopsConfig

ARTIFACT = "provenance"  # logged as provenance.json with each version's run
TAG_GIT_COMMIT = "mlops.git_commit"
TAG_GIT_DIRTY = "mlops.git_dirty"
TAG_CODE_VERSION = "mlops.training_code_version"
TAG_CONFIG_SHA = "mlops.config_sha256"
SCHEMA = 1

_PACKAGE = Path(__file__).resolve().parent
# The code a fitted model depends on: the offline store it reads and the feature engine, the split and the fit
# (training), the step that runs them and the partition keys. Alerts, serving, Dagster wiring and the registry do
# not change what is fitted; the config's defaults are in the resolved config recorded beside.
CODE_FOLDERS = ("features", "training")
CODE_FILES = ("steps/train.py", "data/partitions.py", "lineage.py")
# The packages whose versions can change the numbers a fit produces.
PACKAGES = ("mlops_assets", "numpy", "pandas", "scikit-learn", "scipy", "pyarrow")


def code_files() -> dict[str, str]:
    """sha256 of each source file the training depends on, by path relative to the package's parent folder."""
    paths = [p for folder in CODE_FOLDERS for p in sorted((_PACKAGE / folder).rglob("*.py"))]
    paths += [_PACKAGE / f for f in CODE_FILES]
    return {
        str(p.relative_to(_PACKAGE.parent)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in paths
    }


def code_version(files: dict[str, str]) -> str:
    """One hash over :func:`code_files`' hashes."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(folder: Path | None) -> dict[str, Any]:
    """The commit checked out where the project lives (``folder``: the config's folder) and whether its tree has
    uncommitted changes; ``commit`` None outside a git checkout or without git."""
    if folder is None:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def resolved_config(cfg: MlopsConfig) -> dict[str, Any]:
    """The config as validated (defaults filled in), as JSON; a URL's password (a database source, a store in
    ``storage:``) is replaced by ``***``."""
    from mlops_assets.registry.reachability import redact

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and "://" in value:
            return redact(value)
        return value

    return clean(cfg.model_dump(mode="json"))


def config_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def partition_versions(frame: pd.DataFrame, partition_column: str) -> dict[str, str]:
    """The content version of each partition's rows of ``frame`` (the ``partition_column`` left out), as read."""
    from mlops_assets.lineage import content_version

    columns = [c for c in frame.columns if c != partition_column]
    return {
        str(key): content_version(rows[columns].reset_index(drop=True))
        for key, rows in frame.groupby(partition_column, sort=True, observed=True)
    }


@dataclass
class Provenance:
    """What a version was made from. ``windows``: the partitions of each window (train, validation, holdout,
    refit) it was fitted and evaluated on; ``data_versions``: partition -> content version of its rows as read."""

    config: dict[str, Any]
    data_versions: dict[str, str]
    windows: dict[str, list[str]]
    feature_version: str
    code_files: dict[str, str]
    git: dict[str, Any]
    packages: dict[str, str]
    random_state: int
    data_through: str | None
    # partition -> digest of the offline-store file it was read from (Parquet stores; {} for a SQL store)
    data_files: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def code_version(self) -> str:
        return code_version(self.code_files)

    def to_dict(self) -> dict[str, Any]:
        """As recorded: the fields, and the code version (for a reader of the JSON)."""
        return asdict(self) | {"code_version": self.code_version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        data = dict(data)
        data.pop("code_version", None)
        return cls(**data)

    def tags(self) -> dict[str, str]:
        tags = {TAG_CODE_VERSION: self.code_version, TAG_CONFIG_SHA: config_sha256(self.config)}
        if self.git.get("commit"):
            tags[TAG_GIT_COMMIT] = self.git["commit"]
            tags[TAG_GIT_DIRTY] = str(bool(self.git.get("dirty"))).lower()
        return tags


def capture(
    cfg: MlopsConfig,
    frame: pd.DataFrame,
    partition_column: str,
    windows: dict[str, list[str]],
    *,
    feature_version: str,
    data_through: str | None,
    data_files: dict[str, str] | None = None,
) -> Provenance:
    """The provenance of a training over ``frame`` (the rows of its windows, as read from the offline store)."""
    return Provenance(
        config=resolved_config(cfg),
        data_versions=partition_versions(frame, partition_column),
        windows={k: list(v) for k, v in windows.items()},
        feature_version=feature_version,
        code_files=code_files(),
        git=git_state(cfg.source_dir),
        packages=package_versions(),
        random_state=cfg.model.random_state,
        data_through=data_through,
        data_files=dict(data_files or {}),
    )
