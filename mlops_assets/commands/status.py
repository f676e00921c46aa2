"""``mlops-assets status [--json]``: champion, aliases, deployment history (with reasons), the latest recorded gate
results, and what the retraining triggers would request if evaluated now.

The registry part needs only the MLflow client; the trigger part reads what the sensors read (the monitoring
log, the offline store's partitions, the live prediction log), so it imports the monitoring code, and only here:
the registry package itself never imports monitoring.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_assets.commands.context import load_context, open_registry, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.registry.reachability import check_reachable
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


@dataclass(frozen=True)
class TriggerReport:
    """What ``decide_retrain`` would say at ``evaluated_at`` (the call the sensors make)."""

    evaluated_at: str
    would_retrain: bool
    reason: str | None
    trigger: str | None
    held_by: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluated_at": self.evaluated_at,
            "would_retrain": self.would_retrain,
            "reason": self.reason,
            "trigger": self.trigger,
            "held_by": self.held_by,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class StatusReport:
    """One model's state. ``to_dict`` is the ``--json`` output."""

    model_name: str
    champion: dict[str, Any] | None
    aliases: dict[str, str]
    deployments: list[dict[str, Any]]
    latest_gate_results: dict[str, Any] | None
    triggers: TriggerReport | None
    # How the last run of the pipeline ended (mlops_assets.last_run), data gates included; None before any.
    last_run: dict[str, Any] | None = None
    # Challenger versions that passed every gate and wait for `mlops-assets approve` (approval.required).
    awaiting_approval: list[str] = field(default_factory=list)
    # The challenger running in shadow of the champion (rollout.mode: shadow), and the last shadow that ended.
    shadow: dict[str, Any] | None = None
    last_shadow: dict[str, Any] | None = None
    # Stored partition files moved aside as damaged and not written again since (mlops_assets.steps.repair).
    needing_repair: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "last_run": self.last_run,
            "champion": self.champion,
            "aliases": self.aliases,
            "deployments": self.deployments,
            "latest_gate_results": self.latest_gate_results,
            "awaiting_approval": self.awaiting_approval,
            "shadow": self.shadow,
            "last_shadow": self.last_shadow,
            "needing_repair": self.needing_repair,
            "triggers": self.triggers.to_dict() if self.triggers else None,
        }


def registry_status(registry: ModelRegistry, history_limit: int | None = 20) -> dict[str, Any]:
    """Champion, aliases, the newest ``history_limit`` deployments (oldest first) and the latest gate results."""
    from mlops_assets.registry.tags import champion_fit

    champ = registry.champion()
    gates = registry.latest_gate_results()
    return {
        "champion": champ.to_dict() | champion_fit(champ.tags) if champ else None,
        "aliases": registry.aliases(),
        "deployments": [d.to_dict() for d in registry.history(limit=history_limit)],
        "latest_gate_results": gates.to_dict() if gates else None,
        "awaiting_approval": [a.version for a in registry.awaiting_approval()],
        **_shadows(registry),
    }


def _shadows(registry: ModelRegistry) -> dict[str, Any]:
    shadows = registry.shadows()
    running = [s for s in shadows if s.state == "running"]
    ended = [s for s in shadows if s.state != "running"]
    return {
        "shadow": running[-1].to_dict() if running else None,
        "last_shadow": ended[-1].to_dict() if ended else None,
    }


def trigger_report(
    cfg: MlopsConfig, storage: Storage, registry: ModelRegistry, now: datetime | None = None
) -> TriggerReport:
    """What the retraining triggers would request at ``now`` (default: the wall clock)."""
    from mlops_assets.monitoring.state import current_decision

    now = now or datetime.now(UTC)
    _, decision = current_decision(cfg, now, storage=storage, registry=registry)
    return TriggerReport(
        evaluated_at=now.isoformat(timespec="seconds"),
        would_retrain=decision.retrain,
        reason=decision.reason,
        trigger=decision.trigger,
        held_by=decision.held_by,
        detail=decision.detail,
    )


def status(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    history_limit: int | None = 20,
    triggers: bool = True,
    now: datetime | None = None,
) -> StatusReport:
    """The status of ``cfg``'s model; ``triggers=False`` leaves out the trigger evaluation (registry calls only).

    Raises :class:`~mlops_assets.registry.errors.RegistryError` when the registry cannot be read."""
    from mlops_assets.last_run import read_last_run
    from mlops_assets.steps.repair import needing_repair

    registry = open_registry(cfg, storage)
    reg = registry_status(registry, history_limit)
    return StatusReport(
        model_name=cfg.model.name,
        **reg,
        triggers=trigger_report(cfg, storage, registry, now) if triggers else None,
        last_run=read_last_run(storage.home, cfg.model.name),
        needing_repair=[d.to_dict() for d in needing_repair(cfg, storage)],
    )


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) or "no metrics"


def render_text(report: StatusReport) -> str:
    """The human-readable status."""
    champ = report.champion
    lines = [f"model: {report.model_name}", *_last_run_lines(report.last_run)]
    for d in report.needing_repair:
        lines.append(
            f"NEEDS REPAIR {d['asset']} partition {d['partition']}: {d['path']} was damaged (moved to "
            f"{d['moved_to']}) and has not been rebuilt: mlops-assets repair --partition {d['partition']}"
        )
    if champ is None:
        lines.append("champion: none (no model has been deployed)")
    else:
        lines.append(f"champion: version {champ['version']} ({_format_metrics(champ['metrics'])})")
        window = champ.get("trained_window")
        if window:
            age = champ.get("data_age_days")
            lines.append(
                f"  fitted on {window['start']}..{window['end']}"
                + (f" (data {age:.0f} days old)" if age is not None else "")
                + (f", threshold {champ['threshold']:.3g}" if champ.get("threshold") is not None else "")
            )
    others = {a: v for a, v in report.aliases.items() if a != "champion"}
    if others:
        lines.append("aliases: " + ", ".join(f"{a} -> {v}" for a, v in sorted(others.items())))
    lines.append("deployment history (newest last):")
    if not report.deployments:
        lines.append("  (empty)")
    for d in report.deployments:
        prev = f" (replaced {d['previous_version']})" if d["previous_version"] else ""
        run = f" run {d['run_id']}" if d["run_id"] else ""
        by = f" by {d['moved_by']}" if d.get("moved_by") else ""
        lines.append(f"  {d['deployed_at']}  version {d['version']}{prev}  reason: {d['reason']}{by}{run}")
        if d.get("override_reason"):
            lines.append(f"    GATES OVERRIDDEN: {d['override_reason']}")
    if report.awaiting_approval:
        versions = ", ".join(report.awaiting_approval)
        lines.append(
            f"awaiting approval: version {versions} (mlops-assets approve VERSION --by NAME, or reject)"
        )
    if report.shadow:
        sh = report.shadow
        lines.append(
            f"in shadow: version {sh['version']} beside champion {sh['champion_version']} since "
            f"{sh['started_at']} (reason: {sh['reason']}); promoted when its shadow comparison passes"
        )
    if report.last_shadow:
        sh = report.last_shadow
        verdict = sh.get("verdict") or {}
        failed = [c["message"] for c in verdict.get("criteria", []) if c.get("passed") is False]
        why = (
            f": {'; '.join(failed)}"
            if failed
            else (f": {verdict['message']}" if verdict.get("message") else "")
        )
        lines.append(f"last shadow: version {sh['version']} {sh['state']} at {sh['ended_at']}{why}")
    g = report.latest_gate_results
    if g is None:
        lines.append("latest gate results: none recorded")
    else:
        lines.append(f"latest gate results (version {g['version']}, {g['recorded_at']}):")
        for r in g["results"]:
            mark = "PASS" if r.get("passed") else "FAIL"
            lines.append(f"  {mark}  {r.get('gate', '?')}: {r.get('message', '')}")
    if report.triggers is not None:
        lines.append(_trigger_line(report.triggers))
    return "\n".join(lines)


def _last_run_lines(last: dict[str, Any] | None) -> list[str]:
    """How the last run of the model's pipeline ended (``mlops-assets run``'s, or one the daemon or the UI launched):
    what it was, its status and every check that failed (data gates included)."""
    from mlops_assets.last_run import describe_check, describe_run, finished_at_of

    if last is None:
        return [
            "last run: none recorded (mlops-assets run, or a run of the model's jobs in Dagster, records one)"
        ]
    failed = last.get("failed_checks") or []
    what = describe_run(last)
    span = last.get("partition_range")
    if last.get("partitions") is not None:
        where = f"{last['partitions']} partitions" + (f" {span[0]}..{span[1]}" if span else "") + ", "
    else:
        where = f"partitions {span[0]}..{span[1]}, " if span else ""
    ended = finished_at_of(last)
    at = ended.isoformat(timespec="seconds") if ended else last.get("finished_at")
    lines = [
        f"last run{f' ({what})' if what else ''}: {str(last['status']).upper()} at {at} "
        f"({where}{last.get('checks_passed', 0)} checks passed, {len(failed)} failed)"
    ]
    if last.get("run_id"):
        lines.append(f"  run {last['run_id']}")
    if last.get("error"):
        lines.append(f"  error: {last['error']}")
    for c in failed:
        mark = "BLOCKED" if c.get("blocking") else f"{c.get('severity', 'WARN')} (not blocking)"
        lines.append(f"  {mark} {describe_check(c)}")
    if last.get("trained_version"):
        lines.append(f"  trained version {last['trained_version']}")
    return lines


def _trigger_line(t: TriggerReport) -> str:
    if t.would_retrain:
        return f"triggers now: would retrain ({t.reason}): {t.detail}"
    if t.trigger:
        return f"triggers now: {t.trigger} fired but held by {t.held_by}: {t.detail}"
    return f"triggers now: nothing to request ({t.detail})"


def main(args: argparse.Namespace) -> int:
    """Print the status (``--json`` for machines); exit 1 with the reason on stderr if the registry fails."""
    ctx = load_context(args.config)
    require_state(ctx.storage)
    try:
        check_reachable(ctx.storage)
        report = status(ctx.cfg, ctx.storage)
    except RegistryError as err:
        print(f"mlops-assets status: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(render_text(report))
    return 0
