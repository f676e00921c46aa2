"""Backfill of the whole graph over a synthetic dataset with the default schema (date, 8 weather columns, rain),
partitioned monthly, with the Dagster instance on SQLite and on PostgreSQL: wall time and peak memory, overall and
per step, and how both grow with the row count.

    .venv/bin/python benchmarks/bench_backfill.py [--rows 1000000 3000000] [--pg postgresql://postgres@127.0.0.1:5432]

Each case runs in a fresh child process (``mlops_assets.runner.execute``, the code path of ``mlops-assets run``) that
samples its own resident memory every 50 ms and attributes it to the step running (the steps report themselves
through ``mlops_assets.progress``), so the peak of ingest (raw_data), validation, features and training is each
measured on its own. The data spans the bundled data's 597 monthly partitions; rows per partition grow with
``--rows``. PostgreSQL cases use a fresh database on the given server (dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from child_memory import RSS_MIB

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DAYS = 18_159  # the bundled data's span: 1949-01-01 .. 1998-09, 597 monthly partitions
FEATURES = [
    "temperature",
    "dew point",
    "sea-level pressure",
    "visibility",
    "average wind speed",
    "max sustained wind-speed",
    "minimum temperature",
    "maximum temperature",
]

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, threading, time
    from pathlib import Path

    {rss_mib}

    current = {"step": "startup"}
    peaks, first_seen = {}, {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            step = current["step"]
            peaks[step] = max(peaks.get(step, 0.0), rss_mib())
            stop.wait(0.05)

    t0 = time.perf_counter()
    threading.Thread(target=sample, daemon=True).start()
    from mlops_assets import progress
    from mlops_assets.config import load_config
    from mlops_assets.runner import execute
    from mlops_assets.storage import storage_from_env

    def on_step(name, detail):
        if name != current["step"]:
            first_seen[name] = round(time.perf_counter() - t0, 2)
        peaks[current["step"]] = max(peaks.get(current["step"], 0.0), rss_mib())
        current["step"] = name

    progress.install(on_step)
    cfg = load_config(sys.argv[1])
    storage = storage_from_env().ensure()
    current["step"] = "definitions"
    first_seen["definitions"] = round(time.perf_counter() - t0, 2)
    outcome = execute(cfg, config_file=sys.argv[1], storage=storage)
    stop.set()
    peaks[current["step"]] = max(peaks.get(current["step"], 0.0), rss_mib())
    print(json.dumps({
        "status": outcome.status, "error": outcome.error, "partitions": outcome.partitions,
        "seconds": round(time.perf_counter() - t0, 2), "run_seconds": round(outcome.seconds, 2),
        "step_started_at_s": first_seen, "step_peak_rss_mib": {k: round(v) for k, v in peaks.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))
    """
).replace("{rss_mib}", RSS_MIB)


def synthetic(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows over DAYS consecutive days, written as Parquet in chunks (10M rows never sit in memory twice):
    weather values standard normal with a day-of-year seasonality, rain from a logistic model of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = pd.Timestamp("1949-01-01", tz="UTC")
    chunk = 1_000_000
    writer = None
    # Sorted day offsets drawn per chunk in order, so the file is in time order like a real export.
    bounds = np.linspace(0, DAYS, -(-rows // chunk) + 1).astype(int)
    done = 0
    for i in range(len(bounds) - 1):
        n = min(chunk, rows - done)
        days = np.sort(rng.integers(bounds[i], max(bounds[i + 1], bounds[i] + 1), n))
        seconds = rng.integers(0, 86_400, n)
        season = np.sin(2 * np.pi * (days % 365.25) / 365.25)[:, None]
        values = rng.normal(0, 1, (n, len(FEATURES))) + 0.5 * season
        logit = 0.9 * values[:, 1] - 0.8 * values[:, 3] - 0.5
        frame = pd.DataFrame(values, columns=FEATURES)
        frame.insert(0, "date", start + pd.to_timedelta(days, "D") + pd.to_timedelta(seconds, "s"))
        frame["date"] = frame["date"].sort_values().to_numpy()
        frame["rain"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        done += n
    writer.close()


def run_case(work: Path, data: Path, rows: int, backend: str, pg: str) -> dict:
    name = f"{backend}_{rows}"
    home = work / f"home_{name}"
    (home / "dagster").mkdir(parents=True)
    cfg = work / f"{name}.yaml"
    # The default schema; a 36-partition training window (the bundled config's), no window features beyond the raw
    # columns (the feature engine's cost is its own benchmark, bench_point_in_time_join.py).
    cfg.write_text(
        f"dataset: {{source: {data}, timestamp_column: date, label_column: rain}}\n"
        f"model: {{name: bench, train_window_partitions: 36}}\n"
    )
    env = dict(os.environ, MLOPS_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), OMP_NUM_THREADS="1")
    db = None
    if backend == "sqlite":
        (home / "dagster" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    else:
        import sqlalchemy as sa

        db = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(f"{pg}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
        url = sa.engine.make_url(f"{pg}/{db}")
        (home / "dagster" / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
        env.update(
            DAGSTER_PG_HOST=url.host or "127.0.0.1",
            DAGSTER_PG_PORT=str(url.port or 5432),
            DAGSTER_PG_USER=url.username or "postgres",
            DAGSTER_PG_PASSWORD=url.password or "",
            DAGSTER_PG_DB=db,
        )
    script = work / "child.py"
    script.write_text(CHILD)
    t0 = time.perf_counter()
    proc = subprocess.run([PY, str(script), str(cfg)], env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if db is not None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["status"] != "ok":
        raise RuntimeError(f"{name}: run {result['status']}: {result['error']}")
    return {"case": name, "rows": rows, "backend": backend, "wall_s": round(wall, 2), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--pg", default=os.environ.get("MLOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_backfill_") as tmp:
        work = Path(tmp)
        for rows in args.rows:
            data = work / f"synthetic_{rows}.parquet"
            t0 = time.perf_counter()
            synthetic(data, rows)
            print(
                f"# {rows:,} rows generated in {time.perf_counter() - t0:.1f} s ({data.stat().st_size / 2**20:.0f} MiB)"
            )
            for backend in args.backends:
                r = run_case(work, data, rows, backend, args.pg)
                results.append(r)
                print(json.dumps(r), flush=True)
            data.unlink()
    print(
        "\ncase                 rows        wall s  peak MiB  "
        + "  ".join(f"{s:>14}" for s in ("raw_data", "validated_data", "features", "trained_model"))
    )
    for r in results:
        peaks = r["step_peak_rss_mib"]
        print(
            f"{r['case']:<20} {r['rows']:>10,} {r['wall_s']:>8} {r['peak_rss_mib']:>9}  "
            + "  ".join(
                f"{peaks.get(s, '-'):>14}"
                for s in ("raw_data", "validated_data", "features", "trained_model")
            )
        )
    by_backend: dict[str, list[dict]] = {}
    for r in results:
        by_backend.setdefault(r["backend"], []).append(r)
    for backend, rs in by_backend.items():
        if len(rs) > 1:
            a, b = rs[0], rs[-1]

            def data_steps(r):
                # Ingest, validation and features: bounded by partitions.rows_per_batch, whatever the row count.
                return max(
                    r["step_peak_rss_mib"].get(s, 0) for s in ("raw_data", "validated_data", "features")
                )

            print(
                f"{backend}: rows x{b['rows'] / a['rows']:.1f} -> wall x{b['wall_s'] / a['wall_s']:.2f}, "
                f"peak memory x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f} (ingest/validation/features "
                f"{data_steps(a)} -> {data_steps(b)} MiB, x{data_steps(b) / data_steps(a):.2f}; training follows "
                "its window)"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
