"""Replay of the bundled rainfall data through the product path (windows counted back from the newest labeled
partition, threshold on validation, release gates beside the live champion, refit, promotion rule): the retraining
policy against "retrain every January on the newest three years", measured in one run on the same features, gates
and model code.

    python benchmarks/bench_replay.py [--plot docs/replay.png] [--json out.json] [--report policy.json]

Reports each schedule's mean champion ROC AUC over the timeline (test-then-train), its number of retrains
(training runs, promoted or blocked by a gate) and promotions, the never-retrained model's AUC around the
early-1980s drift, and how many monthly partitions after the drift's start (December 1981, see
mlops_assets_tests/test_monitoring_rainfall.py) the policy first retrained and first promoted. Target: the policy
within 1% of the yearly schedule's AUC with at most a quarter of its retrains. Storage: MLOPS_HOME is a
temporary folder (the replay writes nothing, but the config loader and feature engine may look).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

DRIFT_START = "1981-12"  # dew point loses its seasonal cycle, sea-level pressure changes scale


def months_between(a: str, b: str) -> int:
    ya, ma = map(int, a.split("-"))
    yb, mb = map(int, b.split("-"))
    return (yb - ya) * 12 + (mb - ma)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plot", default="docs/replay.png", help="PNG of both replays (default docs/replay.png)"
    )
    parser.add_argument("--json", default=None, help="write the figures as JSON here")
    parser.add_argument("--report", default=None, help="write the policy replay's full report JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLOPS_HOME", tempfile.mkdtemp(prefix="bench_replay_"))

    from mlops_assets.config import load_config
    from mlops_assets.monitoring.replay import load_partitions, plot, replay

    cfg = load_config(None)
    t0 = time.perf_counter()
    frame, keys = load_partitions(cfg)
    t_features = time.perf_counter() - t0
    policy = replay(cfg, frame)
    yearly = replay(cfg, frame, schedule=lambda key: key.endswith("-12"), schedule_name="every January")

    def figures_of(r):
        rep = r.report()["summary"]
        return {
            "mean_roc_auc": r.mean_roc_auc,
            "retrains": r.retrain_count,
            "promotions": r.promotions,
            "blocked_challengers": rep["blocked_challengers"],
            "blocked_by_gate": rep["blocked_by_gate"],
            "retrains_by_reason": rep["retrains_by_reason"],
            "seconds": round(r.seconds, 1),
        }

    later = [x for x in policy.retrains if x["reason"] != "initial" and x["partition"] >= DRIFT_START]
    first_after = later[0]["partition"] if later else None
    promoted = [x for x in later if x["promoted"]]
    first_promoted = promoted[0]["partition"] if promoted else None
    around = [t for t in policy.timeline if "1982-01" <= t["partition"] <= "1983-12"]
    static_1982_83 = [t["static_roc_auc"] for t in around if t["static_roc_auc"] is not None]
    gap = (yearly.mean_roc_auc - policy.mean_roc_auc) / yearly.mean_roc_auc
    ratio = policy.retrain_count / yearly.retrain_count
    figures = {
        "partitions": len(policy.timeline),
        "train_window_partitions": policy.window,
        "policy": figures_of(policy),
        "every_january": figures_of(yearly),
        "never_retrained": {
            "mean_roc_auc": policy.mean_static_roc_auc,
            "mean_roc_auc_1982_1983": sum(static_1982_83) / len(static_1982_83) if static_1982_83 else None,
        },
        "auc_gap_vs_yearly": gap,
        "retrain_ratio_vs_yearly": ratio,
        "target_met": bool(gap <= 0.01 and ratio <= 0.25),
        "drift_start": DRIFT_START,
        "first_retrain_after_drift_start": first_after,
        "partitions_after_drift_start": months_between(DRIFT_START, first_after) if first_after else None,
        "first_promotion_after_drift_start": first_promoted,
        "feature_seconds": round(t_features, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(policy.report(), f, indent=2, allow_nan=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    if args.plot:
        plot(
            policy,
            args.plot,
            baseline=yearly,
            title="Bundled rainfall data, monthly partitions, product path (gates, refit): "
            "retraining policy vs every January (3-year window)",
        )
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
