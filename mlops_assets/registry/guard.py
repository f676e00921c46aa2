"""The champion guard's judgement: may this version become (or stay) champion?

A version is *cleared* when its latest gate record exists, every gate in it passed, and it was trained on the
current feature version (when the caller knows it). :func:`judge` is a pure function of those facts; the one
writer of the ``champion`` alias, :meth:`ModelRegistry.move_champion
<mlops_assets.registry.model_registry.ModelRegistry.move_champion>`, calls it under the promotion lock and refuses
an uncleared version unless it is given an :class:`Override` (a named person and a reason, both recorded). The
prediction service asks the same question before it serves a version the alias points to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlops_assets.registry.history import GateRecord


@dataclass(frozen=True)
class Override:
    """A person forcing a champion move the gates do not clear: who, and why (both required, both recorded)."""

    by: str
    reason: str

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ValueError("an override needs the name of the person who gives it")
        if not self.reason.strip():
            raise ValueError("an override needs a reason (it is recorded in the history and alerted)")


@dataclass(frozen=True)
class Clearance:
    """The guard's verdict on one version, with the evidence it relied on."""

    model_name: str
    version: str
    problems: list[str] = field(default_factory=list)
    gate_record: dict[str, Any] | None = None  # a summary of the record relied on (None: there is none)

    @property
    def ok(self) -> bool:
        return not self.problems

    def explain(self) -> str:
        return f"model '{self.model_name}' version {self.version}: " + "; ".join(self.problems)


def summarize(record: GateRecord | None, feature_version: str | None) -> dict[str, Any] | None:
    """What the history keeps of the gate record a move relied on."""
    if record is None:
        return None
    return {
        "recorded_at": record.recorded_at,
        "run_id": record.run_id,
        "gates": len(record.results),
        "failed": [str(g.get("gate")) for g in record.results if g.get("passed") is not True],
        "feature_version": feature_version,
    }


def judge(
    model_name: str,
    version: str,
    record: GateRecord | None,
    version_feature_version: str | None,
    current_feature_version: str | None,
) -> Clearance:
    """Clear ``version`` if ``record`` (its latest gate record) passed every gate and, when
    ``current_feature_version`` is known, the version was trained on it."""
    problems = []
    if record is None:
        problems.append("no gate record: it was never judged by the release gates")
    elif not record.results:
        problems.append("its gate record is empty: no gate was evaluated")
    else:
        failed = [str(g.get("gate")) for g in record.results if g.get("passed") is not True]
        if failed:
            problems.append(f"release gates failed: {', '.join(failed)} (recorded {record.recorded_at})")
    if current_feature_version is not None and version_feature_version != current_feature_version:
        problems.append(
            f"trained on feature version {version_feature_version or '(none recorded)'}, the current one is "
            f"{current_feature_version}"
        )
    return Clearance(model_name, str(version), problems, summarize(record, version_feature_version))
