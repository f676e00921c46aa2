"""Drift detection: speed against Evidently's DataDriftPreset, and the statistical targets at full size.

Runs under its own venv (Evidently pins pandas < 3, which must never reach the project's venv):

    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install -U pip
    /work/bench-venv/bin/pip install "evidently>=0.7" "pandas<3" numpy scipy matplotlib pydantic pyyaml
    /work/bench-venv/bin/python benchmarks/bench_drift.py            # everything (~5 min on 2 cores)
    /work/bench-venv/bin/python benchmarks/bench_drift.py --quick    # smaller sizes, a smoke run

Prints:
1. speed: 1,000,000 rows x 20 numeric columns, our ``detect_drift`` against a stored (JSON round-tripped)
   profile versus Evidently's ``Report([DataDriftPreset()])`` on the same reference/current frames, and the ratio;
   the one-off profile build (done once at training time) is printed too, and a ratio that includes it;
2. false alarms: the per-partition alarm rate on no-drift streams (20 columns of mixed distributions: normal,
   log-normal, Student t3, Poisson, binary) at 100 ... 1,000,000 rows;
3. power / practical significance: a 0.2-standard-deviation mean shift in one of 20 columns at 10,000 rows, and a
   0.02-standard-deviation shift at 1,000,000 rows (must not be flagged).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import mlops_assets  # noqa: F401
except ImportError:  # run from a checkout without installing the package into this venv
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.monitoring.drift import detect_drift
from mlops_assets.monitoring.profile import Profile, build_profile
from mlops_assets.monitoring.settings import DriftConfig

N_COLS = 20


def mixed_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """20 numeric columns of assorted shapes; every column has unit standard deviation where that makes sense."""
    cols: dict[str, np.ndarray] = {}
    for i in range(8):
        cols[f"normal_{i}"] = rng.normal(size=n)
    for i in range(3):
        x = rng.lognormal(sigma=0.5, size=n)
        cols[f"lognormal_{i}"] = x / 0.6039  # std of lognormal(0, 0.5)
    for i in range(3):
        cols[f"student_t3_{i}"] = rng.standard_t(3, size=n) / np.sqrt(3.0)
    for i in range(3):
        cols[f"poisson_{i}"] = rng.poisson(4.0, size=n) / 2.0
    for i in range(3):
        cols[f"binary_{i}"] = (rng.random(n) < 0.3).astype(float) / np.sqrt(0.21)
    return pd.DataFrame(cols)


def normal_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(rng.standard_normal((n, N_COLS)), columns=[f"x{i}" for i in range(N_COLS)])


def stored_profile(frame: pd.DataFrame, cfg: DriftConfig) -> tuple[Profile, float]:
    t = time.perf_counter()
    prof = build_profile(frame, list(frame.columns), bins=cfg.bins)
    build_s = time.perf_counter() - t
    return Profile.from_dict(json.loads(json.dumps(prof.to_dict(), allow_nan=False))), build_s


def bench_speed(rows: int, skip_evidently: bool, cfg: DriftConfig) -> None:
    print(f"== speed: {rows:,} rows x {N_COLS} numeric columns")
    rng = np.random.default_rng(1)
    ref = normal_frame(rng, rows)
    cur = normal_frame(rng, rows)
    cur["x0"] += 0.02  # too small to matter
    cur["x1"] += 0.2  # worth a look
    cur["x2"] = cur["x2"] * 1.5  # a variance change
    prof, build_s = stored_profile(ref, cfg)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        report = detect_drift(prof, cur, cfg)
        times.append(time.perf_counter() - t)
    ours = min(times)
    print(
        f"profile build (once, at training): {build_s:.2f} s; profile JSON: {len(json.dumps(prof.to_dict()))} bytes"
    )
    print(f"mlops_assets detect_drift: {ours:.2f} s (best of 3: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"  drifted: {report.drifted_features}")
    if skip_evidently:
        return
    from evidently import Report
    from evidently.presets import DataDriftPreset

    t = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    evid = time.perf_counter() - t
    values = {
        m["config"]["column"]: m["value"]
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    evid_drifted = [c for c, v in values.items() if v >= 0.1]
    print(f"evidently DataDriftPreset: {evid:.2f} s; drifted (normed Wasserstein >= 0.1): {evid_drifted}")
    print(
        f"ratio evidently / ours: {evid / ours:.0f}x   (including our one-off profile build: "
        f"{evid / (ours + build_s):.0f}x)"
    )


def bench_false_alarms(sizes: list[int], trials: list[int], ref_rows: int, cfg: DriftConfig) -> None:
    print(
        f"== false alarms on no-drift streams (mixed distributions, reference {ref_rows:,} rows, alpha={cfg.alpha})"
    )
    rng = np.random.default_rng(2)
    prof, _ = stored_profile(mixed_frame(rng, ref_rows), cfg)
    for n, t in zip(sizes, trials, strict=True):
        start = time.perf_counter()
        alarms = sum(detect_drift(prof, mixed_frame(rng, n), cfg).drifted for _ in range(t))
        print(
            f"rows={n:>9,}  partitions={t:>4}  alarms={alarms:>3}  rate={alarms / t:.4f}  "
            f"({time.perf_counter() - start:.1f} s)"
        )


def bench_power(trials_10k: int, trials_1m: int, rows_large: int, cfg: DriftConfig) -> None:
    print("== practical significance (20 normal columns, reference 100,000 rows)")
    rng = np.random.default_rng(3)
    prof, _ = stored_profile(normal_frame(rng, 100_000), cfg)
    hits = exact = 0
    for _ in range(trials_10k):
        cur = normal_frame(rng, 10_000)
        cur["x7"] += 0.2
        r = detect_drift(prof, cur, cfg)
        hits += r.drifted
        exact += r.drifted_features == ["x7"]
    print(
        f"0.2-std shift in 1 of 20 columns at 10,000 rows: flagged {hits}/{trials_10k} "
        f"(only the shifted column: {exact}/{trials_10k})"
    )
    flagged = 0
    for _ in range(trials_1m):
        cur = normal_frame(rng, rows_large)
        cur["x7"] += 0.02
        r = detect_drift(prof, cur, cfg)
        flagged += r.drifted
        w = r.feature("x7").distance
    print(
        f"0.02-std shift at {rows_large:,} rows: flagged {flagged}/{trials_1m} "
        f"(last normalized Wasserstein {w:.4f} < floor {cfg.wasserstein_threshold})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, no Evidently)")
    ap.add_argument("--skip-evidently", action="store_true")
    args = ap.parse_args()
    cfg = DriftConfig()
    if args.quick:
        bench_speed(100_000, True, cfg)
        bench_false_alarms([100, 10_000], [50, 10], 20_000, cfg)
        bench_power(10, 2, 200_000, cfg)
        return
    bench_speed(1_000_000, args.skip_evidently, cfg)
    bench_false_alarms([100, 1_000, 10_000, 100_000, 1_000_000], [2000, 1000, 300, 60, 12], 200_000, cfg)
    bench_power(200, 10, 1_000_000, cfg)


if __name__ == "__main__":
    main()
