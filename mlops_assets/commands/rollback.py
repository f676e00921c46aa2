"""``mlops-assets rollback [--to VERSION]``: the champion back to the previous (or given) version, recorded in
the deployment history.

Light on purpose: the config, the storage settings and the tracking database through
:mod:`mlops_assets.registry.sql_aliases` -- no MLflow, pandas, scikit-learn or Dagster import when the database is
one that module knows (else the MLflow client). A model is not loaded to move an alias; the target must carry the
sha256 tag of a registration through mlops_assets (see :meth:`ModelRegistry.rollback`).

Once the alias has moved, and only where a Dagster instance exists (``DAGSTER_HOME``), the move is recorded there
as a materialization of ``deployed_model`` (:mod:`mlops_assets.defs.champion`), so the Dagster UI shows the champion
that MLflow and the service have. That is the one step that imports Dagster, after the champion has changed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.commands.context import load_context, open_registry, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.history import Deployment


@dataclass(frozen=True)
class RollbackOutcome:
    """The champion move a rollback made."""

    model_name: str
    version: str
    previous_version: str | None
    deployed_at: str
    reason: str

    def summary(self) -> str:
        was = f"version {self.previous_version}" if self.previous_version else "no champion"
        return (
            f"{self.model_name}: champion is now version {self.version} (was {was}); "
            f"recorded at {self.deployed_at}"
        )


def rollback(
    cfg: MlopsConfig, storage: Storage, *, to: str | None = None, reason: str = "rollback"
) -> RollbackOutcome:
    """Move ``cfg``'s champion to its ``previous`` version, or to ``to``, under the promotion lock.

    Raises :class:`~mlops_assets.registry.errors.RegistryError` (a subclass naming the cause) when there is
    nothing to roll back to, ``to`` is unknown or already champion, or the target was not registered through
    mlops_assets."""
    d = open_registry(cfg, storage, light=True).rollback(to=to, reason=reason)
    if (storage.dagster_home / "dagster.yaml").exists():
        record_in_dagster(storage, d)
    return RollbackOutcome(
        model_name=cfg.model.name,
        version=d.version,
        previous_version=d.previous_version,
        deployed_at=d.deployed_at,
        reason=d.reason,
    )


def record_in_dagster(storage: Storage, deployment: Deployment) -> None:
    """Record ``deployment`` in the Dagster instance of ``storage`` as a materialization of ``deployed_model``."""
    from mlops_assets.defs.champion import record_champion
    from mlops_assets.runner import instance_for

    instance = instance_for(storage)
    try:
        record_champion(instance, deployment, recorded_by="mlops-assets rollback")
    finally:
        instance.dispose()


def main(args: argparse.Namespace) -> int:
    """Exit 0 with one line on stdout, or 1 with the reason on stderr."""
    ctx = load_context(args.config)
    require_state(ctx.storage)
    try:
        outcome = rollback(ctx.cfg, ctx.storage, to=args.to, reason=args.reason or "rollback")
    except RegistryError as err:
        print(f"mlops-assets rollback: {err}", file=sys.stderr)
        return 1
    print(outcome.summary())
    return 0
