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
IN_SHADOW = "shadow"


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
    deployed_at: str | None  # None while awaiting approval or in shadow
    status: str = PROMOTED  # promoted | awaiting_approval | shadow
    shadow_id: int | None = None


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


def promote_or_shadow(
    registry: ModelRegistry,
    version: str,
    *,
    reason: str | None,
    run_id: str | None,
    metrics: dict[str, float] | None = None,
    approval_required: bool = False,
    rollout_mode: str = "direct",
) -> PromoteOutcome:
    """:func:`promote`, or with ``rollout_mode`` ``shadow`` and a champion to compare with, ``version`` put in
    shadow beside it (the champion stays; the ``shadow_comparison`` check decides later)."""
    champion = registry.champion()
    if rollout_mode != "shadow" or champion is None:
        return promote(
            registry,
            version,
            reason=reason,
            run_id=run_id,
            metrics=metrics,
            approval_required=approval_required,
        )
    try:
        shadow = registry.start_shadow(version, reason=reason or "manual", run_id=run_id)
    except GateRefusedError as err:
        raise PromotionRefused(str(err)) from None
    return PromoteOutcome(
        version=str(version),
        previous_version=champion.version,
        reason=shadow.reason,
        deployed_at=None,
        status=IN_SHADOW,
        shadow_id=shadow.id,
    )


def promote_shadow(
    registry: ModelRegistry, shadow_id: int, *, run_id: str | None, approval_required: bool = False
) -> PromoteOutcome:
    """Promote the challenger of shadow ``shadow_id`` once its comparison passed (recorded by the
    ``shadow_comparison`` check), with the reason of the retrain that made it; the shadow ends as ``promoted``."""
    found = registry.history_store.shadows(registry.model_name, shadow_id)
    if not found:
        raise PromotionRefused(f"model '{registry.model_name}' has no shadow {shadow_id}")
    shadow = found[0]
    if shadow.state != "running":
        raise PromotionRefused(
            f"shadow {shadow_id} (version {shadow.version}) already ended: {shadow.state}; nothing promoted"
        )
    if not (shadow.verdict or {}).get("passed"):
        raise PromotionRefused(
            f"shadow {shadow_id} (version {shadow.version}) has no passing comparison; nothing promoted"
        )
    outcome = promote(
        registry,
        shadow.version,
        reason=shadow.reason,
        run_id=run_id,
        metrics=registry.version_metrics(shadow.version),
        approval_required=approval_required,
    )
    registry.end_shadow(shadow, "promoted")
    return outcome
