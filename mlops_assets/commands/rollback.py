"""``mlops-assets rollback [--to VERSION]``: the champion back to the previous (or given) version, recorded in
the deployment history. Goes through the registry's guard: a target without a passing gate record for the
current feature version is refused (exit 1, naming the failed gates) unless ``--override-gates --reason TEXT``
forces it, recorded with who (``--by``, default the login name) and alerted.

Light on purpose: the config, the storage settings and the tracking database through
:mod:`mlops_assets.registry.sql_aliases` -- no MLflow, pandas, scikit-learn or Dagster import when the database is
one that module knows (else the MLflow client). A model is not loaded to move an alias, but the target's artifact
is read and its sha256 compared with the one recorded at registration before anything moves (see
:meth:`ModelRegistry.rollback`): a version that would not load where it is served never becomes champion.

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
from mlops_assets.registry.reachability import check_reachable
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
    moved_by: str | None = None
    override_reason: str | None = None

    def summary(self) -> str:
        was = f"version {self.previous_version}" if self.previous_version else "no champion"
        text = (
            f"{self.model_name}: champion is now version {self.version} (was {was}); "
            f"recorded at {self.deployed_at}"
        )
        if self.override_reason:
            text += f"; GATES OVERRIDDEN by {self.moved_by}: {self.override_reason}"
        return text


def current_user() -> str:
    """Who runs the command, for the history (``--by`` overrides it)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown user"


def rollback(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    to: str | None = None,
    reason: str = "rollback",
    by: str | None = None,
    override_gates: bool = False,
) -> RollbackOutcome:
    """Move ``cfg``'s champion to its ``previous`` version, or to ``to``, through the guard, under the promotion
    lock. ``override_gates``: force a target the gates do not clear, with ``reason`` as the override's reason.

    Raises :class:`~mlops_assets.registry.errors.RegistryError` (a subclass naming the cause) when there is
    nothing to roll back to, ``to`` is unknown or already champion, the target was not registered through
    mlops_assets, or the guard refuses it (:class:`~mlops_assets.registry.errors.GateRefusedError`).

    The champion seen before waiting for the promotion lock must still be champion once it is held: of two
    rollbacks at once, the second raises :class:`~mlops_assets.registry.errors.ChampionChangedError` (naming the
    change) instead of undoing the first."""
    from mlops_assets.registry.guard import Override
    from mlops_assets.registry.model_registry import CHAMPION

    who = by or f"cli:{current_user()}"
    override = Override(who, reason) if override_gates else None
    registry = open_registry(cfg, storage, light=True)
    seen = registry.aliases().get(CHAMPION)
    d = registry.rollback(to=to, reason=reason, by=who, override=override, expected_champion=seen)
    if (storage.dagster_home / "dagster.yaml").exists():
        record_in_dagster(storage, d)
    return RollbackOutcome(
        model_name=cfg.model.name,
        version=d.version,
        previous_version=d.previous_version,
        deployed_at=d.deployed_at,
        reason=d.reason,
        moved_by=d.moved_by,
        override_reason=d.override_reason,
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
    if args.override_gates and not args.reason:
        print(
            "mlops-assets rollback: --override-gates needs --reason TEXT (it is recorded and alerted)",
            file=sys.stderr,
        )
        return 2
    ctx = load_context(args.config)
    require_state(ctx.storage)
    try:
        check_reachable(ctx.storage)
        outcome = rollback(
            ctx.cfg,
            ctx.storage,
            to=args.to,
            reason=args.reason or "rollback",
            by=args.by,
            override_gates=args.override_gates,
        )
    except RegistryError as err:
        print(f"mlops-assets rollback: {err}", file=sys.stderr)
        return 1
    print(outcome.summary())
    return 0
