"""``mlops-assets run [--report out.json] [--no-progress]``: one in-process pass over the whole graph, gate,
deploy; a progress bar while it runs and a summary after.

The work is :func:`mlops_assets.runner.execute` and :func:`mlops_assets.runner.build_report`; this module only
drives them and presents the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.commands.context import load_context, open_registry
from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.runner import RunOutcome


class Progress:
    """A progress bar over the graph's steps, fed by the steps themselves (see :mod:`mlops_assets.progress`)."""

    STEPS = ("raw_data", "validated_data", "features", "trained_model", "deployed_model")

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.STEPS), unit="step", disable=not enabled, file=sys.stderr)
        self.seen: list[str] = []

    def __call__(self, name: str, detail: str) -> None:
        if name not in self.seen:
            if self.seen:
                self.bar.update(1)
            self.seen.append(name)
        self.bar.set_description(f"{name}: {detail}" if detail else name)

    def close(self, outcome: RunOutcome) -> None:
        if outcome.status == "ok" and self.seen:
            self.bar.update(1)
        self.bar.close()


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did (``outcome``) and the report JSON built from it (INTERFACE.md, "Report JSON")."""

    outcome: RunOutcome
    report: dict[str, Any]


def run(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    config_file: str | Path,
    progress: bool = False,
    force: bool = False,
) -> RunResult:
    """Materialize the graph over all partitions in this process, then build the report from the registry.

    A blocking gate is a result (``status == "blocked"``), not an exception. On unchanged data and recipe nothing
    is trained or promoted unless ``force``."""
    from mlops_assets import progress as step_progress
    from mlops_assets.runner import build_report, execute

    bar = Progress(enabled=progress)
    step_progress.install(bar)
    try:
        outcome = execute(cfg, config_file=str(config_file), storage=storage.ensure(), force=force)
    finally:
        step_progress.install(None)
    bar.close(outcome)
    registry = open_registry(cfg, storage)
    alert_run(cfg, registry, outcome)
    return RunResult(outcome, build_report(cfg, outcome, registry=registry))


def alert_run(cfg: MlopsConfig, registry: ModelRegistry, outcome: RunOutcome) -> None:
    """The alerts of an in-process run (no sensor sees it unless a daemon runs): failed gates and drift, cleared
    checks, and a failed run. Promotions were alerted by the registry when the alias moved."""
    from mlops_assets.alerts.checks import RELEASE_PREFIX, alert_on_checks, run_failed_event
    from mlops_assets.defs.factory import run_job_name

    alerter = registry.alerter
    if alerter is None:
        return
    rows = [
        c | {"version": outcome.trained_version} if c["check"].startswith(RELEASE_PREFIX) else c
        for c in outcome.checks
    ]
    alert_on_checks(alerter, cfg.model.name, rows, outcome.run_id)  # a `run` is never a triggered retrain
    job = run_job_name(cfg)
    if outcome.status == "failed":
        alerter.notify(run_failed_event(cfg.model.name, job, outcome.run_id, outcome.error))
    else:
        alerter.resolve(
            cfg.model.name, f"run_failed:{job}", f"{cfg.model.name}: {job} ran again", run_id=outcome.run_id
        )


def print_summary(report: dict[str, Any]) -> None:
    """Status, failed checks and the champion, for a person at a terminal."""
    failed = [c for c in report["checks"] if not c["passed"]]
    print(f"status: {report['status']}  ({report['partitions']} partitions, {report['seconds']} s)")
    if report["error"]:
        print(f"error: {report['error']}")
    print(f"checks: {len(report['checks']) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        print(f"  FAILED {c['asset']}.{c['check']} {c['metadata']}")
    if report.get("unchanged_champion_version"):
        print(
            f"training: unchanged data and recipe since champion version {report['unchanged_champion_version']}"
            ": nothing retrained (--force retrains on purpose)"
        )
    champ = report["champion"]
    if champ:
        m = champ["metrics"]
        shown = ", ".join(
            f"{k}={m[k]:.3f}" for k in ("roc_auc", "accuracy", "f1") if isinstance(m.get(k), float)
        )
        print(f"champion: {champ['model_name']} version {champ['version']} ({shown})")
    else:
        print("champion: none")


def main(args: argparse.Namespace) -> int:
    """Exit 0 when the pipeline ran (``ok`` or ``blocked``), 1 when it failed."""
    ctx = load_context(args.config)
    result = run(
        ctx.cfg,
        ctx.storage,
        config_file=ctx.config_file,
        progress=not args.no_progress,
        force=getattr(args, "force", False),
    )
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(result.report, indent=2, default=str))
    print_summary(result.report)
    return 1 if result.outcome.status == "failed" else 0
