"""Data gates on a big event partition: 1M event rows, 30% of them duplicated, through the product's own
``validate_partitions`` and the ingest step, beside plain pandas ``duplicated()`` (the idealized baseline).

    .venv/bin/python benchmarks/bench_validation.py [--rows 1000000] [--dup 0.3]

The data is an event stream: purchases of 500 stores over one month at hourly timestamps, so every store has many
events per hour (normal for event data, and passing). Three cases, each in a fresh child process that samples its
own resident memory every 20 ms (peak minus the memory held before the step, i.e. what the step itself needs):

* ``clean``: the stream as it is; every gate passes.
* ``copies``: ``--dup`` of the rows are exact copies of other rows (a file ingested twice); ``no_duplicate_rows``
  fails.
* ``unique_key``: ``dataset.unique_key: [order_id]`` with ``--dup`` of the rows repeating another row's order id
  (the rest of the row differs); ``no_duplicate_rows`` fails.

The whole month is one monthly partition, the worst case for a per-partition gate. ``validate_partitions`` is timed
on the frame in memory; ``ingest`` reads the same rows from a Parquet file and stores the annotated partition, as
``raw_data`` does. The baseline is ``frame.duplicated(keep=False)`` alone: no schema, no other gate, no report.

Measured on a shared 2-core machine (1,000,000 rows, 30% duplicated): ``validate_partitions`` 1.9 s clean, 2.1 s
with a failing ``no_duplicate_rows`` (copies or a repeated unique key), 200-270 MiB above the batch itself; the
ingest step 3.7-4.8 s, about 640 MiB at peak (reading, staging and storing the partition included); the idealized
``duplicated()`` 0.05-0.2 s, 30-95 MiB. Before (Pandera ``unique=[timestamp, entity]`` with
``report_duplicates="all"`` and one failure case per failing row), the same clean stream of events failed the key
gate and took 5.4 s at 100,000 rows and 46 s at 300,000.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from child_memory import RSS_MIB

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path

    import pandas as pd

    {rss_mib}

    what, config, data, scratch = sys.argv[1:5]
    from mlops_assets.catalogue import DatasetShape, data_gates
    from mlops_assets.config import load_config
    from mlops_assets.data.batches import Stores, validate_partitions
    from mlops_assets.data.partitions import split_by_partition
    from mlops_assets.data.schema import infer_spec
    from mlops_assets.steps.ingest import ingest

    cfg = load_config(config)
    frame = pd.read_parquet(data).drop(columns=cfg.dataset.drop_columns) if what != "ingest" else None
    if what == "validate":
        batch = split_by_partition(frame, "ts", cfg.partitions.freq)
        spec = infer_spec(frame, cfg, labels_seen=frame["returned"].unique())
        del frame
    elif what == "ingest":
        stores = Stores.at(Path(scratch) / "home", cfg.model.name)
        names = [g.name for g in data_gates(DatasetShape.of(cfg, {}))]
    base = rss_mib()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            stop.wait(0.02)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    if what == "validate":
        result, _ = validate_partitions(cfg, batch, spec)
        gates = result.gates.values()
    elif what == "ingest":
        keys = ["2024-01"]
        outcome = ingest(
        cfg, stores, keys, gate_names=names, scratch=Path(scratch) / "spill", home=Path(scratch) / "home"
    )
        gates = outcome.gates
    else:
        key = cfg.dataset.unique_key
        dup = frame.duplicated(subset=key, keep=False)
        gates = []
    seconds = time.perf_counter() - t0
    stop.set()
    peak[0] = max(peak[0], rss_mib())
    failed = {g.gate: {"value": g.value, "sample_rows": len(g.sample), "details": g.details}
              for g in gates if not g.passed}
    if what == "baseline":
        failed = {f"rows involved{' (key)' if key else ''}": int(dup.sum())}
    print(json.dumps({"seconds": round(seconds, 2), "peak_mib": round(peak[0] - base, 1), "failed": failed},
                     default=str))
    """
).replace("{rss_mib}", RSS_MIB)


def events(rows: int, dup: float, case: str, seed: int = 0) -> pd.DataFrame:
    """An event stream of ``rows`` purchases in January 2024; ``dup`` of them duplicate others as ``case`` says."""
    rng = np.random.default_rng(seed)
    fresh = rows if case == "clean" else rows - int(rows * dup)
    hours = pd.date_range("2024-01-01", "2024-01-31 23:00", freq="h", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": hours[rng.integers(0, len(hours), fresh)],
            "store_id": rng.integers(0, 500, fresh),
            "order_id": np.arange(fresh),
            "category": rng.choice([f"cat{i:02d}" for i in range(20)], fresh),
            "amount": rng.gamma(2.0, 20.0, fresh).round(2),
            "quantity": rng.integers(1, 6, fresh),
            "returned": np.where(rng.random(fresh) < 0.1, "yes", "no"),
        }
    )
    if case != "clean":
        extra = frame.iloc[rng.integers(0, fresh, rows - fresh)].copy()
        if case == "unique_key":
            # The same order id again with other values: a key that should identify the row is repeated.
            extra["amount"] = rng.gamma(2.0, 20.0, len(extra)).round(2)
        frame = pd.concat([frame, extra], ignore_index=True)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def config(folder: Path, data: Path, case: str) -> Path:
    cfg = {
        "dataset": {
            "source": str(data),
            "timestamp_column": "ts",
            "entity_columns": ["store_id"],
            "label_column": "returned",
            "positive_label": "yes",
            "categorical_columns": ["category"],
            "numeric_columns": ["amount", "quantity"],
        },
        "partitions": {"freq": "month", "rows_per_batch": 2_000_000},
        "model": {"name": f"bench_{case}"},
    }
    if case == "unique_key":
        cfg["dataset"]["unique_key"] = ["order_id"]
    else:
        cfg["dataset"]["drop_columns"] = ["order_id"]  # no key column: only exact copies are duplicates
    path = folder / f"{case}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(what: str, cfg: Path, data: Path, scratch: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(cfg), str(data), str(scratch)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _describe(name: str, info: dict | int) -> str:
    if not isinstance(info, dict):
        return f"{name}={info}"
    if name != "no_duplicate_rows":
        return f"{name}: value {info['value']}"
    d = info["details"]
    surplus = d.get("repeated_key_rows", d["duplicate_rows"])
    return (
        f"{name}: {surplus} surplus rows ({info['value']:.0%} of the partition), {d['rows_involved']} rows "
        f"involved, {info['sample_rows']} sample rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dup", type=float, default=0.3)
    args = parser.parse_args()
    print(
        f"{args.rows:,} event rows in one monthly partition, {args.dup:.0%} duplicated in the failing cases\n"
    )
    print(f"{'case':<11} {'path':<48} {'seconds':>8} {'peak MiB':>9}  failing gates")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in ("clean", "copies", "unique_key"):
            frame = events(args.rows, args.dup, case)
            data = folder / f"{case}.parquet"
            frame.to_parquet(data, index=False)
            del frame
            cfg = config(folder, data, case)
            for what, label in (
                ("validate", "validate_partitions (product)"),
                ("ingest", "steps.ingest.ingest (product, incl. read+store)"),
                ("baseline", "pandas duplicated() (idealized baseline)"),
            ):
                r = run(what, cfg, data, folder / f"scratch_{case}_{what}")
                failing = ", ".join(_describe(name, info) for name, info in r["failed"].items())
                print(f"{case:<11} {label:<48} {r['seconds']:>8.2f} {r['peak_mib']:>9.1f}  {failing or '-'}")


if __name__ == "__main__":
    main()
