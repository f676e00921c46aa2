"""``mlops-assets check-report [--junit out.xml] [--markdown out.md]``: every asset check's latest result from the
Dagster instance; exit 1 when a blocking check failed.

The collection and the renderers are :mod:`mlops_assets.reports`; this module drives them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.commands.context import load_context, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.reports import CheckRow


def check_report(cfg: MlopsConfig, storage: Storage, *, config_file: str | Path) -> list[CheckRow]:
    """The latest result of every asset check of ``cfg``'s graph, as recorded in the instance of ``storage``."""
    from mlops_assets.defs.factory import build_model_defs
    from mlops_assets.reports import collect_check_rows
    from mlops_assets.runner import instance_for

    defs = build_model_defs(cfg, config_path=str(config_file))
    return collect_check_rows(defs, instance_for(storage))


def _write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def main(args: argparse.Namespace) -> int:
    """Print every check's latest result; write ``--junit`` / ``--markdown``; exit 1 if a blocking one failed."""
    from mlops_assets.reports import render_junit, render_markdown, render_text

    ctx = load_context(args.config)
    require_state(ctx.storage, dagster=True)
    rows = check_report(ctx.cfg, ctx.storage, config_file=ctx.config_file)
    if args.junit:
        _write(args.junit, render_junit(rows, suite=f"asset checks: {ctx.cfg.model.name}"))
    if args.markdown:
        _write(args.markdown, render_markdown(rows, title=ctx.cfg.model.name))
    print(render_text(rows))
    blocking = [r for r in rows if r.blocks]
    if blocking:
        names = ", ".join(f"{r.asset}.{r.check}" for r in blocking)
        print(f"blocking check(s) failed: {names}", file=sys.stderr)
        return 1
    return 0
