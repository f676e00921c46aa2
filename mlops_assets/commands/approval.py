"""``mlops-assets approve VERSION --by NAME [--reason TEXT]`` and ``reject``: a person decides on a challenger
that passed every gate and awaits approval (``approval: {required: true}``).

Approve moves the champion through the registry's guard (the gate record is read again; an expired request is
refused); reject leaves the champion as it is. Both are recorded with who and when, and alerted.
"""

from __future__ import annotations

import argparse
import sys

from mlops_assets.commands.context import load_context, open_registry
from mlops_assets.config import MlopsConfig
from mlops_assets.registry.errors import RegistryError
from mlops_assets.storage import Storage


def approve(cfg: MlopsConfig, storage: Storage, version: str, *, by: str, reason: str | None = None) -> str:
    """Approve ``version``; returns one line saying what changed."""
    d = open_registry(cfg, storage, light=True).approve(version, by=by, reason=reason)
    was = f"version {d.previous_version}" if d.previous_version else "no champion"
    return f"{cfg.model.name}: version {d.version} approved by {by}; champion is now version {d.version} (was {was})"


def reject(cfg: MlopsConfig, storage: Storage, version: str, *, by: str, reason: str | None = None) -> str:
    """Reject ``version``; returns one line saying so (the champion is untouched)."""
    registry = open_registry(cfg, storage, light=True)
    registry.reject(version, by=by, reason=reason)
    champion = registry.aliases().get("champion")
    return f"{cfg.model.name}: version {version} rejected by {by}; champion stays " + (
        f"version {champion}" if champion else "unset"
    )


def main(args: argparse.Namespace) -> int:
    """Exit 0 with one line on stdout, or 1 with the reason on stderr."""
    ctx = load_context(args.config)
    decide = approve if args.command == "approve" else reject
    try:
        line = decide(ctx.cfg, ctx.storage, args.version, by=args.by, reason=args.reason)
    except RegistryError as err:
        print(f"mlops-assets {args.command}: {err}", file=sys.stderr)
        return 1
    print(line)
    return 0
