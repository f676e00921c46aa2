"""What every command starts from, built once per process: the validated config, the storage decided from the
environment, and the model registry built from both (the one place a command builds a registry)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.config import MlopsConfig, config_path, load_config
from mlops_assets.storage import Storage, storage_from_env

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


def open_registry(cfg: MlopsConfig, storage: Storage, *, light: bool = False) -> ModelRegistry:
    """The registry of ``cfg``'s model on ``storage``; ``light``: aliases moved without importing MLflow where
    the tracking database allows it (see :class:`~mlops_assets.registry.model_registry.ModelRegistry`)."""
    from mlops_assets.registry.model_registry import ModelRegistry

    return ModelRegistry.from_config(cfg, storage, light=light)


@dataclass
class CommandContext:
    """The config (and the file it came from) and the storage; the registry is built on first use and kept."""

    cfg: MlopsConfig
    config_file: Path
    storage: Storage
    _registry: ModelRegistry | None = field(default=None, repr=False)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = open_registry(self.cfg, self.storage)
        return self._registry


def load_context(config: str | os.PathLike[str] | None) -> CommandContext:
    """Load ``--config`` (else ``$MLOPS_CONFIG``, else the bundled file) and the storage from the environment.

    Raises :class:`~mlops_assets.config.ConfigError` for a config that cannot be used (``cli.main`` turns it into
    exit code 2)."""
    path = config_path(config)
    return CommandContext(cfg=load_config(path), config_file=path, storage=storage_from_env())


class NoStateError(Exception):
    """A command that reads stored state found none: nothing has run with this storage yet."""


def require_state(storage: Storage, *, dagster: bool = False) -> None:
    """Refuse to go on where nothing has run yet, rather than create an empty store and report on it.

    ``dagster``: the command reads the Dagster instance (``DAGSTER_HOME``) rather than the MLflow store."""
    if dagster:
        missing = (
            None
            if (storage.dagster_home / "dagster.yaml").exists()
            else f"no state yet: no Dagster instance at {storage.dagster_home} (DAGSTER_HOME)"
        )
    else:
        missing = storage.missing_state()
    if missing:
        raise NoStateError(
            f"{missing}; run `mlops-assets run` first (with the same MLOPS_HOME), or set MLOPS_HOME to the folder "
            "your runs used"
        )
