"""``mlops-assets replay [--report out.json] [--plot out.png]``: the backtest of the retraining policy over the
partitions in time order, through the product's own training, gates and promotion, with progress on stderr and a
one-paragraph summary.

The engine is :mod:`mlops_assets.monitoring.replay`; this module drives it and presents the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mlops_assets.commands.context import load_context
from mlops_assets.config import MlopsConfig

if TYPE_CHECKING:
    from mlops_assets.monitoring.replay import ReplayResult

# Plain-line progress (stderr not a terminal, e.g. CI logs): a line each time another 1/PLAIN_LINES of the
# partitions is done.
PLAIN_LINES = 10


def plain_progress(stream: TextIO, lines: int = PLAIN_LINES) -> Callable[[int, int], None]:
    """A progress callback that writes a line such as ``replay: 57/562 partitions (10%), 12 s`` each time another
    ``1/lines`` of the partitions is done, and at the end: a log keeps every line, unlike a redrawn bar."""
    t0 = time.perf_counter()
    shown = -1

    def tick(done: int, total: int) -> None:
        nonlocal shown
        bucket = done * lines // total if total else 0  # integers: 6/20 is 3 tenths, not 2.999...
        if bucket > shown or done == total:
            shown = bucket
            stream.write(
                f"replay: {done}/{total} partitions ({100 * done // max(total, 1)}%), "
                f"{time.perf_counter() - t0:.0f} s\n"
            )
            stream.flush()

    return tick


def replay(cfg: MlopsConfig, *, progress: bool | None = None) -> ReplayResult:
    """Replay ``cfg``'s partitions as if they arrived live (the replay keeps its models in memory: it writes
    nothing to the storage). Progress on stderr: a bar on a terminal, plain lines otherwise (``progress=None``);
    ``False`` for none."""
    from tqdm import tqdm

    from mlops_assets.monitoring.replay import replay as run_replay

    terminal = sys.stderr.isatty() and sys.stdout.isatty()
    if progress is False or not terminal:
        tick = plain_progress(sys.stderr) if progress is not False else None
        return run_replay(cfg, progress=tick)
    bar = tqdm(unit="partition", file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return run_replay(cfg, progress=update)
    finally:
        bar.close()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(args: argparse.Namespace) -> int:
    """Write ``--report`` / ``--plot`` and print the summary and every retrain (promoted, or the gate that blocked
    it)."""
    from mlops_assets.data.preflight import check_source
    from mlops_assets.monitoring.replay import plot

    ctx = load_context(args.config)
    check_source(ctx.cfg, None, ctx.config_file)  # the replay keeps no state
    result = replay(ctx.cfg)
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
        f"{s['retrains_by_reason']}, {s['promotions']} promoted, {s['blocked_challengers']} blocked "
        f"{s['blocked_by_gate']}, {s['drifted_partitions']} partitions with drift"
    )
    for r in report["retrains"]:
        if r["version"] is None:
            outcome = r.get("waiting", "no version")
        elif r["promoted"]:
            outcome = f"promoted, fitted on {r['trained_window']}"
        else:
            outcome = f"blocked by {', '.join(r['blocked_by'])}"
        print(f"  {r['partition']}  version {r['version']}  {r['reason']}: {r['detail']} -> {outcome}")
    return 0
