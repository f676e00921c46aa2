"""``mlops-assets replay [--report out.json] [--plot out.png]``: the backtest of the retraining policy over the
partitions in time order, with a progress bar and a one-paragraph summary.

The engine is :mod:`mlops_assets.monitoring.replay`; this module drives it and presents the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.commands.context import load_context
from mlops_assets.config import MlopsConfig

if TYPE_CHECKING:
    from mlops_assets.monitoring.replay import ReplayResult


def replay(cfg: MlopsConfig, *, progress: bool = False) -> ReplayResult:
    """Replay ``cfg``'s partitions as if they arrived live (the replay keeps its models in memory: it writes
    nothing to the storage)."""
    from tqdm import tqdm

    from mlops_assets.monitoring.replay import replay as run_replay

    bar = tqdm(unit="partition", file=sys.stderr, disable=not progress)

    def tick(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return run_replay(cfg, progress=tick)
    finally:
        bar.close()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(args: argparse.Namespace) -> int:
    """Write ``--report`` / ``--plot`` and print the summary and every retrain."""
    from mlops_assets.monitoring.replay import plot

    ctx = load_context(args.config)
    result = replay(ctx.cfg, progress=sys.stderr.isatty())
    report = result.report()
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, allow_nan=False))
    if args.plot:
        plot(result, args.plot)
    s = report["summary"]
    print(
        f"replayed {report['partitions']} partitions in {report['seconds']} s: mean ROC AUC "
        f"{_fmt(s['mean_roc_auc'])} (never retrained {_fmt(s['mean_static_roc_auc'])}), {s['retrains']} retrains "
        f"{s['retrains_by_reason']}, {s['drifted_partitions']} partitions with drift"
    )
    for r in report["retrains"]:
        print(f"  {r['partition']}  version {r['version']}  {r['reason']}: {r['detail']}")
    return 0
