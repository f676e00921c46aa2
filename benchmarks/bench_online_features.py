"""Online lookup latency: ``get_online_features`` for 1 and for 100 entities under a sustained request rate.

Setup: 10,000 entities x 8 daily events materialized (4 window features each) into the online store, on SQLite
(a file under a temporary MLOPS_HOME) and on PostgreSQL (database ``mlops_features_bench`` on 127.0.0.1).
Load: ``--clients`` threads issue lookups on an open-loop schedule totalling ``--rate`` lookups/s for
``--seconds``; each call's latency is measured in-process (the public function: config cache, entity-key
spelling, the read, the frame). The read: on PostgreSQL one prepared ``SELECT ... WHERE entity_key = ANY(...)``
on the autocommit pool of lookups; on SQLite one ``PRAGMA data_version`` and the latest table's in-memory
snapshot (reloaded when the database changed). Printed: p50/p95/p99 in ms, the achieved rate, the load
average, and the same percentiles for the peer measured in the same run: a bare DBAPI ``SELECT ... WHERE
entity_key IN (...)`` on the same table through the store's reader pool (on PostgreSQL that pool pings at
checkout and runs the SELECT in a transaction; the lookups' pool does neither), with the ratio ours / peer.
On SQLite the peer is therefore no floor for the lookup: it is what reading the rows per lookup costs.

    .venv/bin/python benchmarks/bench_online_features.py [--rate 1000] [--seconds 5] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

from mlops_assets.storage import storage_from_env

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "mlops_features_bench"
N_ENTITIES = 10_000
DAYS = 8


def write_config(home: Path) -> Path:
    cfg = {
        "dataset": {
            "source": "unused.csv",
            "timestamp_column": "ts",
            "entity_columns": ["customer"],
            "label_column": "label",
        },
        "model": {"name": "bench"},
        "features": {
            "definitions": [
                {"source": "amount", "transformation": "last", "window": "2D"},
                {"source": "amount", "transformation": "mean", "window": "7D"},
                {"source": "amount", "transformation": "trend", "window": "7D"},
                {"source": "label", "transformation": "mean", "window": "7D"},
            ]
        },
    }
    path = home / "mlops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def events() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    days = pd.date_range("2024-01-01", periods=DAYS, freq="D", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": np.repeat(days, N_ENTITIES),
            "customer": np.tile(np.arange(N_ENTITIES), DAYS),
            "amount": rng.gamma(2.0, 30.0, N_ENTITIES * DAYS),
            "label": rng.integers(0, 2, N_ENTITIES * DAYS),
        }
    )
    return frame


def pg_url() -> str:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": PG_DB}).scalar():
            conn.execute(sa.text(f'CREATE DATABASE "{PG_DB}"'))
    admin.dispose()
    return f"postgresql://postgres@127.0.0.1:5432/{PG_DB}"


def load(fn, batches: list[list], rate: float, seconds: float, clients: int) -> tuple[np.ndarray, float]:
    """Open-loop schedule: lookup i starts at t0 + i / rate (or as soon as its client is free)."""
    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    t0 = time.perf_counter() + 0.05

    def client(k: int) -> None:
        for i in range(k, n, clients):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            s = time.perf_counter()
            fn(batches[i % len(batches)])
            lat[i] = time.perf_counter() - s

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return lat * 1e3, n / elapsed


def pct(lat: np.ndarray) -> str:
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return f"p50 {p50:6.3f}  p95 {p95:6.3f}  p99 {p99:6.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--backends", default="sqlite,postgresql")
    a = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench_online_"))
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_CONFIG"] = str(write_config(home))
    from mlops_assets.config import load_config
    from mlops_assets.feature_store import get_online_features
    from mlops_assets.features import online_store

    cfg = load_config()
    data = events()
    rng = np.random.default_rng(1)
    singles = [[{"customer": int(c)}] for c in rng.integers(0, N_ENTITIES, 5000)]
    hundreds = [
        [{"customer": int(c)} for c in rng.choice(N_ENTITIES, 100, replace=False)] for _ in range(500)
    ]

    print(f"{N_ENTITIES:,} entities x {DAYS} events, {len(cfg.features.definitions)} features; "
          f"target {a.rate:.0f} lookups/s for {a.seconds:.0f} s from {a.clients} client threads")  # fmt: skip
    for backend in a.backends.split(","):
        url = f"sqlite:///{home / 'online.db'}" if backend == "sqlite" else pg_url()
        os.environ["MLOPS_ONLINE_STORE_URL"] = url
        store = online_store(cfg, storage_from_env())
        t = time.perf_counter()
        store.materialize(cfg, data)
        load1, load5, _ = os.getloadavg()
        print(
            f"\n[{backend}] materialized {len(data):,} events in {time.perf_counter() - t:.1f} s "
            f"(load average {load1:.2f} / {load5:.2f} on {os.cpu_count()} CPUs)"
        )
        table = f"{store.name}_latest"
        engine = store._read  # the same pool the store reads through
        placeholder = "?" if backend == "sqlite" else "%s"

        def raw(batch: list[dict], table=table, engine=engine, placeholder=placeholder) -> list:
            keys = [str(r["customer"]) for r in batch]
            sql = f'SELECT * FROM "{table}" WHERE entity_key IN ({", ".join([placeholder] * len(keys))})'
            conn = engine.raw_connection()
            try:
                cur = conn.cursor()
                cur.execute(sql, keys)
                rows = cur.fetchall()
                cur.close()
                conn.rollback()
            finally:
                conn.close()
            return rows

        check = get_online_features(singles[0])
        assert len(check) == 1 and check["amount_mean_7D"].notna().all(), "benchmark store not materialized"
        for label, batches in (("1 entity", singles), ("100 entities", hundreds)):
            ours = np.array([np.nan])
            for name, fn in (("get_online_features", get_online_features), ("peer: bare SELECT", raw)):
                for b in batches[:200]:
                    fn(b)  # warm-up: pools, caches
                lat, achieved = load(fn, batches, a.rate, a.seconds, a.clients)
                print(f"  {label:<13}{name:<21}{pct(lat)}   achieved {achieved:7.0f}/s")
                if name.startswith("peer"):
                    print(
                        f"  {'':<13}{'ratio ours/peer':<21}p95 x{np.percentile(ours, 95) / np.percentile(lat, 95):.2f}"
                    )
                else:
                    ours = lat


if __name__ == "__main__":
    main()
