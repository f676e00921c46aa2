"""Promote a gated challenger to champion: the last re-check before the alias moves."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


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
    deployed_at: str


def promote(
    registry: ModelRegistry,
    version: str,
    *,
    reason: str | None,
    run_id: str | None,
    metrics: dict[str, float] | None = None,
) -> PromoteOutcome:
    """Make ``version`` champion if its recorded gate results all passed; ``reason`` defaults to ``initial`` for
    the first champion and ``manual`` otherwise.

    Defense in depth: a promotion launched on its own (a re-executed step, a hand-made run) must not bypass the
    release gates, so the record is read again here rather than trusted from the caller.
    """
    record = registry.latest_gate_results(version)
    failed = [g["gate"] for g in (record.results if record else []) if not g["passed"]]
    if record is None or failed:
        raise PromotionRefused(
            f"version {version} cannot be promoted: "
            + (f"release gates failed: {failed}" if failed else "no gate results recorded for it")
        )
    reason = reason or ("initial" if registry.champion() is None else "manual")
    with PROMOTING:
        deployment = registry.promote(version, reason=reason, run_id=run_id, metrics=metrics)
    return PromoteOutcome(
        version=str(version),
        previous_version=deployment.previous_version,
        reason=reason,
        deployed_at=deployment.deployed_at,
    )
