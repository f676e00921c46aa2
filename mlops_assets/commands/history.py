"""``mlops-assets history [--json] [--limit N]``: the audit trail of the champion alias.

Every move (promotion, rollback, approval, override), oldest first: the version moved to and from, when, who or
what moved it, why, the gate record it relied on (and, for an override, what the gates said and the override's
reason), and the alerts sent about it with each channel's delivery. Approval decisions are listed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from mlops_assets.commands.context import load_context, open_registry
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.registry.model_registry import ModelRegistry


def audit_trail(registry: ModelRegistry, limit: int | None = None) -> dict[str, Any]:
    """The moves of ``registry``'s champion with their alerts, and the approval requests (the ``--json`` form)."""
    moves = registry.history(limit=limit)
    alerts = registry.history_store.alerts(registry.model_name)
    by_move: dict[int, list[dict[str, Any]]] = {}
    for a in alerts:
        if a["deployment_id"] is not None:
            by_move.setdefault(a["deployment_id"], []).append(
                {k: a[k] for k in ("kind", "severity", "state", "at", "deliveries")}
            )
    return {
        "model_name": registry.model_name,
        "moves": [
            {
                "id": d.id,
                "alias": "champion",
                "version": d.version,
                "from": d.previous_version,
                "to": d.version,
                "at": d.deployed_at,
                "by": d.moved_by,
                "reason": d.reason,
                "override_reason": d.override_reason,
                "run_id": d.run_id,
                "gate_record": d.gate_record,
                "sha256": d.sha256,
                "alerts": by_move.get(d.id or -1, []),
            }
            for d in moves
        ],
        "approvals": [a.to_dict() for a in registry.approvals()],
        "alerts": [
            {k: a[k] for k in ("kind", "severity", "state", "summary", "at", "deliveries")}
            for a in alerts
            if a["deployment_id"] is None
        ][-(limit or 50) :],
    }


def history(cfg: MlopsConfig, storage: Storage, *, limit: int | None = None) -> dict[str, Any]:
    """The audit trail of ``cfg``'s model (see :func:`audit_trail`)."""
    return audit_trail(open_registry(cfg, storage, light=True), limit)


def _deliveries(alert: dict[str, Any]) -> str:
    parts = [
        f"{d['channel']} {'ok' if d['ok'] else 'FAILED'}" + ("" if d["ok"] else f" ({d['error']})")
        for d in alert["deliveries"]
    ]
    return ", ".join(parts) or "no channel"


def render_text(trail: dict[str, Any]) -> str:
    lines = [f"model: {trail['model_name']}", "champion moves (oldest first):"]
    if not trail["moves"]:
        lines.append("  (none)")
    for m in trail["moves"]:
        was = m["from"] or "none"
        lines.append(
            f"  {m['at']}  {was} -> {m['to']}  by {m['by'] or '(not recorded)'}  reason: {m['reason']}"
        )
        g = m["gate_record"]
        if g is not None:
            verdict = "cleared" if g.get("cleared") else "NOT cleared: " + "; ".join(g.get("problems", []))
            recorded = f" recorded {g['recorded_at']}" if g.get("recorded_at") else ""
            lines.append(f"    gate record:{recorded} ({g.get('gates', 0)} gates) {verdict}")
        if m["override_reason"]:
            lines.append(f"    GATES OVERRIDDEN: {m['override_reason']}")
        for a in m["alerts"]:
            lines.append(f"    alert {a['kind']} [{a['state']}]: {_deliveries(a)}")
    if trail["approvals"]:
        lines.append("approvals:")
        for a in trail["approvals"]:
            decided = f" by {a['decided_by']} at {a['decided_at']}" if a["decided_by"] else ""
            why = f": {a['reason']}" if a["reason"] else ""
            lines.append(
                f"  version {a['version']} {a['state']}{decided}{why} (requested {a['requested_at']})"
            )
    if trail["alerts"]:
        lines.append("other alerts (newest last):")
        for a in trail["alerts"]:
            lines.append(f"  {a['at']}  {a['kind']} [{a['state']}] {a['summary']}  -> {_deliveries(a)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Print the audit trail (``--json`` for machines); exit 1 with the reason on stderr if it cannot be read."""
    ctx = load_context(args.config)
    try:
        trail = history(ctx.cfg, ctx.storage, limit=args.limit)
    except RegistryError as err:
        print(f"mlops-assets history: {err}", file=sys.stderr)
        return 1
    print(json.dumps(trail, indent=2, default=str) if args.json else render_text(trail))
    return 0
