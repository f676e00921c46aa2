"""Promote a gated challenger to champion: the last re-check before the alias moves, or, when the project requires
approval, the challenger put in front of a person instead."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.registry.errors import GateRefusedError

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry

PROMOTED = "promoted"
RETRAIN_TRIGGERS = ("drift", "performance", "freshness")
AWAITING_APPROVAL = "awaiting_approval"


# Held while the champion moves (aliases and history row, one unit): a process stopping on a signal takes it first,
# so it exits before a promotion starts or after it is recorded, never between the two.
PROMOTING = threading.Lock()


class PromotionRefused(RuntimeError):
    """The version has no passing gate record; the champion is left as it was."""


@dataclass(frozen=True)
class PromoteOutcome:
    version: str
    previous_version: str | None
    reason: str
    deployed_at: str | None  # None while awaiting approval
    status: str = PROMOTED  # promoted | awaiting_approval


def promote(
    registry: ModelRegistry,
    version: str,
    *,
    reason: str | None,
    run_id: str | None,
    metrics: dict[str, float] | None = None,
    approval_required: bool = False,
) -> PromoteOutcome:
    """Make ``version`` champion if the guard clears it (a passing gate record for the current feature version);
    ``reason`` defaults to ``initial`` for the first champion and ``manual`` otherwise. With
    ``approval_required`` the cleared version awaits a person's ``approve`` instead, and the champion stays.

    Defense in depth: a promotion launched on its own (a re-executed step, a hand-made run) must not bypass the
    release gates, so the record is read again here rather than trusted from the caller (and the registry's
    guard reads it once more under the promotion lock).
    """
    verdict = registry.clearance(version)
    if not verdict.ok:
        raise PromotionRefused(f"version {version} cannot be promoted: {'; '.join(verdict.problems)}")
    champion = registry.champion()
    reason = reason or ("initial" if champion is None else "manual")
    if approval_required:
        registry.request_approval(version, run_id=run_id)
        return PromoteOutcome(
            version=str(version),
            previous_version=champion.version if champion else None,
            reason=reason,
            deployed_at=None,
            status=AWAITING_APPROVAL,
        )
    try:
        with PROMOTING:
            deployment = registry.promote(
                version, reason=reason, run_id=run_id, metrics=metrics, by=f"pipeline (run {run_id})"
            )
    except GateRefusedError as err:
        raise PromotionRefused(str(err)) from None
    if reason in RETRAIN_TRIGGERS:
        registry.notify(
            "retrain_finished",
            f"{registry.model_name}: the {reason} retrain finished; version {version} is champion",
            version=str(version),
            run_id=run_id,
            details={"trigger": reason, "previous_version": deployment.previous_version},
        )
    return PromoteOutcome(
        version=str(version),
        previous_version=deployment.previous_version,
        reason=reason,
        deployed_at=deployment.deployed_at,
    )
