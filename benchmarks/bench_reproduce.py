"""``mlops-assets reproduce`` against the original training, and the offline store's snapshot overhead, on the
bundled data (50 years of daily weather, 597 monthly partitions), all through the product's commands.

1. ``mlops-assets run`` in a throwaway MLOPS_HOME (SQLite, local files): version 1. Its ``trained_model`` step's
   duration, from the Dagster run, is the original training time.
2. ``mlops-assets reproduce 1 --check`` as a subprocess: wall time, and the verdict.
3. One month of the offline store written again 10 times through the store (one value changed each time, as a
   late row would): the snapshots' bytes beside the store's; then ``reproduce 1 --check`` again (it reads the month
   from its snapshot) and ``gc --dry-run``.

    .venv/bin/python benchmarks/bench_reproduce.py [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", *args], env=env, capture_output=True, text=True
    )
    return time.perf_counter() - start, proc


def _training_seconds(home: Path) -> float:
    """The trained_model step's duration in the run that trained version 1."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.step_key.endswith("trained_model") and stats.end_time and stats.start_time:
                    return stats.end_time - stats.start_time
    raise SystemExit("no trained_model step found in the run")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet")) if folder.is_dir() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="MLOPS_HOME (default: a temporary folder, removed)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="bench_reproduce_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), OMP_NUM_THREADS="1")
    os.environ.update(MLOPS_HOME=str(home), OMP_NUM_THREADS="1")
    try:
        run_s, proc = _cli(env, "run", "--no-progress")
        if proc.returncode != 0:
            raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
        train_s = _training_seconds(home)
        rep_s, proc = _cli(env, "reproduce", "1", "--check")
        print(f"run (whole graph, 597 partitions):  {run_s:7.1f} s")
        print(f"  of which trained_model step:      {train_s:7.1f} s   (the original training)")
        print(
            f"reproduce 1 --check:                {rep_s:7.1f} s   ({rep_s / train_s:.2f}x the training step); "
            f"exit {proc.returncode}: {proc.stdout.splitlines()[0] if proc.stdout else proc.stderr[-500:]}"
        )

        from mlops_assets.config import load_config
        from mlops_assets.features.stores import offline_store
        from mlops_assets.storage import storage_from_env

        store = offline_store(load_config(), storage_from_env())
        before = _folder_bytes(store.root) - _folder_bytes(store.root / ".snapshots")
        month = store.partitions()[-5]
        for i in range(10):
            frame = store.read([month])
            col = next(c for c in frame.columns if frame[c].dtype.kind == "f")
            frame.loc[frame.index[0], col] = frame[col].iloc[0] + i + 1
            store.write_partition(month, frame)
        snap = _folder_bytes(store.root / ".snapshots")
        print(
            f"one month ({month}) rewritten 10 times: {len(store.snapshots())} snapshots, {snap / 1e3:.1f} kB "
            f"beside a store of {before / 1e6:.2f} MB ({100 * snap / before:.2f} %)"
        )
        rep2_s, proc = _cli(env, "reproduce", "1", "--check")
        print(
            f"reproduce 1 --check after the rewrites: {rep2_s:.1f} s; exit {proc.returncode}: "
            f"{proc.stdout.splitlines()[0] if proc.stdout else proc.stderr[-500:]}"
        )
        gc_s, proc = _cli(env, "gc", "--dry-run")
        print(
            f"gc --dry-run: {gc_s:.1f} s: {proc.stdout.splitlines()[0] if proc.stdout else proc.stderr[-500:]}"
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak memory of the largest command: {peak:.0f} MB")
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
