"""``mlops-assets rollback`` and ``mlops-assets status``.

Both must start fast: they import the config, the settings and the MLflow client only (no Dagster, no
scikit-learn), and do a handful of registry calls.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mlops_assets.config import load_config
from mlops_assets.registry.errors import RegistryError


def _registry(args: Any):
    from mlops_assets.registry.model_registry import ModelRegistry

    return ModelRegistry.from_config(load_config(getattr(args, "config", None)))


def rollback_command(args: Any) -> int:
    """Champion back to the previous (or ``--to``) version, recorded with reason ``rollback``. Exit 1 with a
    message on stderr when that is impossible (nothing to roll back to, unknown version)."""
    try:
        reg = _registry(args)
        d = reg.rollback(to=getattr(args, "to", None), reason=getattr(args, "reason", None) or "rollback")
    except RegistryError as err:
        print(f"mlops-assets rollback: {err}", file=sys.stderr)
        return 1
    was = f"version {d.previous_version}" if d.previous_version else "no champion"
    print(f"{reg.model_name}: champion is now version {d.version} (was {was}); recorded at {d.deployed_at}")
    return 0


def status_report(reg: Any, history_limit: int | None = 20) -> dict[str, Any]:
    """Champion, aliases, deployment history and the latest recorded gate results, as a JSON-able dict."""
    champ = reg.champion()
    gates = reg.latest_gate_results()
    return {
        "model_name": reg.model_name,
        "champion": champ.to_dict() if champ else None,
        "aliases": reg.aliases(),
        "deployments": [d.to_dict() for d in reg.history(limit=history_limit)],
        "latest_gate_results": gates.to_dict() if gates else None,
    }


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) or "no metrics"


def trigger_report(cfg: Any) -> dict[str, Any]:
    """What the retraining triggers would request if evaluated now: the same ``decide_retrain`` call the sensors
    make, with the wall clock."""
    from datetime import UTC, datetime

    from mlops_assets.monitoring.state import current_decision

    now = datetime.now(UTC)
    _, decision = current_decision(cfg, now)
    return {
        "evaluated_at": now.isoformat(timespec="seconds"),
        "would_retrain": decision.retrain,
        "reason": decision.reason,
        "trigger": decision.trigger,
        "held_by": decision.held_by,
        "detail": decision.detail,
    }


def status_command(args: Any) -> int:
    """Print champion, deployment history (with reasons), latest gate results and what the triggers would request
    now; ``--json`` for machines."""
    cfg = load_config(getattr(args, "config", None))
    try:
        from mlops_assets.registry.model_registry import ModelRegistry

        report = status_report(ModelRegistry.from_config(cfg))
    except RegistryError as err:
        print(f"mlops-assets status: {err}", file=sys.stderr)
        return 1
    report["triggers"] = trigger_report(cfg)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2, default=str))
        return 0
    name = report["model_name"]
    champ = report["champion"]
    lines = [f"model: {name}"]
    if champ is None:
        lines.append("champion: none (no model has been deployed)")
    else:
        lines.append(f"champion: version {champ['version']} ({_format_metrics(champ['metrics'])})")
    others = {a: v for a, v in report["aliases"].items() if a != "champion"}
    if others:
        lines.append("aliases: " + ", ".join(f"{a} -> {v}" for a, v in sorted(others.items())))
    lines.append("deployment history (newest last):")
    if not report["deployments"]:
        lines.append("  (empty)")
    for d in report["deployments"]:
        prev = f" (replaced {d['previous_version']})" if d["previous_version"] else ""
        run = f" run {d['run_id']}" if d["run_id"] else ""
        lines.append(f"  {d['deployed_at']}  version {d['version']}{prev}  reason: {d['reason']}{run}")
    g = report["latest_gate_results"]
    if g is None:
        lines.append("latest gate results: none recorded")
    else:
        lines.append(f"latest gate results (version {g['version']}, {g['recorded_at']}):")
        for r in g["results"]:
            mark = "PASS" if r.get("passed") else "FAIL"
            lines.append(f"  {mark}  {r.get('gate', '?')}: {r.get('message', '')}")
    t = report["triggers"]
    if t["would_retrain"]:
        lines.append(f"triggers now: would retrain ({t['reason']}): {t['detail']}")
    elif t["trigger"]:
        lines.append(f"triggers now: {t['trigger']} fired but held by {t['held_by']}: {t['detail']}")
    else:
        lines.append(f"triggers now: nothing to request ({t['detail']})")
    print("\n".join(lines))
    return 0
