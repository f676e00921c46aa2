#!/usr/bin/env python
"""Prediction service vs ``mlflow models serve`` on the same registered model, same client, same machine, one run.

Set-up (in a temporary MLOPS_HOME, removed afterwards): the default config's model (HistGradientBoosting with the
default parameters, the bundled rainfall data and its window features) is trained on all but the last 400 days,
registered through ``mlops_assets.registry`` and made champion; the online store holds the events the last 300 days
need. Then both servers run as their own processes on 127.0.0.1:

- ours: ``mlops-assets serve`` with authentication on (a token in ``MLOPS_SERVE_TOKENS``, checked on every
  request) — requests carry one *raw* event row; the service completes its 48 window features from the online
  store as of the row's timestamp, predicts, logs the prediction;
- the peer: ``mlflow models serve -m models:/mlops_model@champion --env-manager local`` — requests carry the
  already-computed model inputs (``dataframe_split``): the peer does strictly less work per request.

The client is one asyncio process with N keep-alive connections, each sending a request and waiting for its
response (closed loop), over pre-encoded HTTP/1.1 requests so the client's own cost is small and identical for
both servers. For each concurrency (1, 10, 50) and server: throughput, p50/p95/p99 latency, errors; then the ratio.

    .venv/bin/python benchmarks/bench_serving.py [--seconds 5] [--concurrency 1 10 50] [--workers 1] [--json out.json]

With ``--workers N`` ours runs as ``serve --workers N`` (N processes sharing the port; the batch-size figure then
describes the process that answered ``/metrics``).

With ``--shadow`` a second version (the same model with ``learning_rate`` 0.05, gated like the champion) is registered
too; after ours and before the peer are measured, it is put in shadow (``start_shadow``) and a second instance of ours
is started (loading the shadow at start-up) and measured the same way: its p95 over ours' is printed per concurrency
(the target: at most 1.30), and the rows its shadow scored, failed and skipped, from its ``/health``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

BIN = Path(sys.executable).parent
SCORED_DAYS = 300


# ---------------------------------------------------------------------------------------------- set-up
def set_up(home: Path, shadow: bool = False, shadow_sample: float | None = None) -> dict:
    """Train, register and promote the default model (and, with ``shadow``, register a gated second version);
    materialize the online store; return what the client sends."""
    from mlops_assets.config import BUNDLED_CONFIG, parse_config
    from mlops_assets.data.sources import read_source
    from mlops_assets.features import compute_features, features_code_version, model_feature_columns
    from mlops_assets.features.stores import online_store
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.storage import storage_from_env
    from mlops_assets.training.pipeline import binary_labels, build_pipeline

    data = yaml.safe_load(BUNDLED_CONFIG.read_text())
    data["features"]["online_retention"] = "400D"  # so that any of the last 300 days can be scored
    if shadow_sample is not None:
        data["rollout"] = {"mode": "shadow", "shadow": {"sample": shadow_sample}}
    config_path = home / "mlops.yaml"
    config_path.write_text(yaml.safe_dump(data))
    cfg = parse_config(data, origin=config_path, source_dir=BUNDLED_CONFIG.parent)
    storage = storage_from_env({"MLOPS_HOME": str(home)}).ensure()

    ts, label = cfg.dataset.timestamp_column, cfg.dataset.label_column
    raw = read_source(cfg)
    feats = compute_features(cfg, raw)
    columns = model_feature_columns(cfg, list(feats.columns))
    cutoff = raw[ts].max() - pd.Timedelta("400D")
    train = (feats[ts] < cutoff).to_numpy()
    pipeline = build_pipeline(cfg, columns, [])
    pipeline.fit(
        feats.loc[train, columns], binary_labels(feats.loc[train, label], cfg.dataset.positive_label)
    )

    registry = ModelRegistry(cfg.model.name, storage)
    rv = registry.register(
        pipeline, input_example=feats[columns].head(3), feature_version=features_code_version(cfg)
    )
    # Not trained by the pipeline, so not gated by it: a passing record stands in (the guard and the service
    # require one).
    registry.record_gate_results(rv.version, [{"gate": "benchmark_setup", "passed": True}])
    registry.promote(rv.version, reason="manual")
    shadow_version = None
    if shadow:
        from sklearn.base import clone

        challenger = clone(pipeline).set_params(model__learning_rate=0.05)
        challenger.fit(
            feats.loc[train, columns], binary_labels(feats.loc[train, label], cfg.dataset.positive_label)
        )
        shadow_version = registry.register(
            challenger, input_example=feats[columns].head(3), feature_version=features_code_version(cfg)
        ).version
        registry.record_gate_results(shadow_version, [{"gate": "benchmark_setup", "passed": True}])
    online_store(cfg, storage).materialize(cfg, raw[raw[ts] >= cutoff - pd.Timedelta("30D")])

    scored = raw.tail(SCORED_DAYS).reset_index(drop=True)
    ours = []
    for rec in scored.drop(columns=[label]).to_dict("records"):
        rec[ts] = pd.Timestamp(rec[ts]).isoformat()
        ours.append(json.dumps({"rows": [rec]}).encode())
    X = feats.set_index(ts).loc[scored[ts], columns]
    peer = [
        json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
        for row in X.to_numpy().tolist()
    ]
    return {
        "config": config_path,
        "storage": storage,
        "model": cfg.model.name,
        "version": rv.version,
        "registry": registry,
        "shadow_version": shadow_version,
        "ours": ours,
        "peer": peer,
        "expected": pipeline.predict(X).tolist(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-25:])
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during start-up:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def start_ours(setup: dict, env: dict, workers: int, name: str = "ours") -> tuple[int, subprocess.Popen]:
    port, log = free_port(), setup["storage"].home / f"{name}.log"
    proc = subprocess.Popen(
        [
            str(BIN / "mlops-assets"),
            "serve",
            "--config",
            str(setup["config"]),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return port, proc


def start_servers(setup: dict, env: dict, workers: int = 1) -> tuple[dict, list[subprocess.Popen]]:
    procs, ports = [], {"peer": free_port()}
    logs = setup["storage"].home
    ports["ours"], ours = start_ours(setup, env, workers)
    procs.append(ours)
    peer = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{setup['model']}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(ports["peer"]),
        ],
        env=env,
        stdout=open(logs / "peer.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(setup["storage"].home),
    )
    procs.append(peer)
    wait_http(f"http://127.0.0.1:{ports['ours']}/health", ours, logs / "ours.log")
    wait_http(f"http://127.0.0.1:{ports['peer']}/ping", peer, logs / "peer.log")
    return ports, procs


# ---------------------------------------------------------------------------------------------- the client
# Our service's token for this run (admin: /predict and /metrics). Sent to the peer too, which ignores it, so the
# client's bytes and cost are the same for both servers.
TOKEN = secrets.token_urlsafe(32)
AUTH_HEADER = {"Authorization": f"Bearer {TOKEN}"}


def http_request(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by the server")
    status = int(status_line.split()[1])
    length = None
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("response without content-length")
    return status, await reader.readexactly(length)


async def closed_loop(port: int, requests: list[bytes], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0

    async def worker(w: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = w * 37
        try:
            while time.perf_counter() < deadline:
                req = requests[i % len(requests)]
                i += 1
                t0 = time.perf_counter()
                writer.write(req)
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


# Each measured server: its endpoint and which of set_up's request bodies it takes.
SERVERS = {"ours": ("/predict", "ours"), "shadow": ("/predict", "ours"), "peer": ("/invocations", "peer")}


def check_same_model(ports: dict, setup: dict) -> None:
    """The servers answer the same rows with the champion's offline predictions."""
    for k in range(0, SCORED_DAYS, 30):
        for name in ports:
            path, bodies = SERVERS[name]
            req = urllib.request.Request(
                f"http://127.0.0.1:{ports[name]}{path}",
                data=setup[bodies][k],
                headers={"Content-Type": "application/json", **AUTH_HEADER},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.loads(r.read())
            got = body["predictions"][0]
            if got != setup["expected"][k]:
                raise AssertionError(f"{name} predicted {got} for row {k}, offline {setup['expected'][k]}")


def health(port: int) -> dict:
    """Our ``/health`` (no token needed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        return json.loads(r.read())


def shadow_counts(port: int, version: str, timeout: float = 30) -> dict:
    """The ``shadow`` block of ``/health`` once the scorer's queue has drained (its counts stop moving)."""
    last, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = health(port).get("shadow")
        if status and status.get("version") == version and status == last:
            return status
        if status and "error" in status:
            raise RuntimeError(f"the shadow was not loaded: {status['error']}")
        last = status
        time.sleep(1.0)
    raise TimeoutError(f"/health shows no settled shadow of version {version} after {timeout:.0f} s: {last}")


def mean_batch_rows(port: int) -> float | None:
    """Mean rows per model call, from our ``/metrics`` (admin token)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=AUTH_HEADER)
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    vals = {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith(("mlops_batch_rows_sum", "mlops_batch_rows_count"))
    }
    if not vals.get("mlops_batch_rows_count"):
        return None
    return vals["mlops_batch_rows_sum"] / vals["mlops_batch_rows_count"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measurement time per server and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--workers", type=int, default=1, help="our service's processes (serve --workers)")
    ap.add_argument(
        "--shadow", action="store_true", help="also measure ours with a second version in shadow (p95 ratio)"
    )
    ap.add_argument(
        "--shadow-sample",
        type=float,
        default=None,
        help="rollout.shadow.sample for the shadow instance (default: the config's default)",
    )
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    procs: list[subprocess.Popen] = []
    try:
        print("set-up: training, registering and promoting the default model; online store ...", flush=True)
        setup = set_up(home, shadow=args.shadow, shadow_sample=args.shadow_sample)
        env = dict(os.environ)
        env.update(
            MLOPS_HOME=str(home),
            MLFLOW_TRACKING_URI=setup["storage"].mlflow_tracking_uri,
            MLOPS_CONFIG=str(setup["config"]),
            MLOPS_SERVE_TOKENS=f"admin:{TOKEN}",
            # The peer runs `uvicorn` from PATH: the one in this environment.
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        ports, procs = start_servers(setup, env, args.workers)
        check_same_model(ports, setup)
        print(
            f"model {setup['model']} version {setup['version']}; both servers agree with the offline predictions; "
            f"ours with {args.workers} worker process(es)"
        )

        results: dict[str, Any] = {"ours": [], "peer": []}
        for name in ("ours", "shadow", "peer") if args.shadow else ("ours", "peer"):
            if name == "shadow":
                # Put the second version in shadow, then start a second instance of ours: it loads the shadow at
                # start-up (so do all of its worker processes) and scores every answered batch with it.
                setup["registry"].start_shadow(setup["shadow_version"], reason="manual")
                ports["shadow"], proc = start_ours(setup, env, args.workers, "shadow")
                procs.append(proc)
                wait_http(f"http://127.0.0.1:{ports['shadow']}/health", proc, home / "shadow.log")
                shadow_counts(ports["shadow"], setup["shadow_version"])  # loaded, or why not
                check_same_model({"shadow": ports["shadow"]}, setup)  # answers with the champion, unchanged
                print(f"version {setup['shadow_version']} in shadow of {setup['version']}; answers unchanged")
                results["shadow"] = []
            path, bodies = SERVERS[name]
            reqs = [http_request(ports[name], path, b) for b in setup[bodies]]
            asyncio.run(closed_loop(ports[name], reqs, 10, min(2.0, args.seconds)))  # warm-up
            for c in args.concurrency:
                r = asyncio.run(closed_loop(ports[name], reqs, c, args.seconds))
                results[name].append(r)
                print(
                    f"  {name:6s} clients={c:3d}: {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                    f"p95 {r['p95_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}",
                    flush=True,
                )

        print("\nsingle-row requests, closed loop, same client and machine, one run")
        print(
            f"{'clients':>7} | {'ours req/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} | "
            f"{'peer req/s':>10} {'p50':>7} {'p95':>7} {'p99':>7} | {'ratio':>6}"
        )
        for o, p in zip(results["ours"], results["peer"], strict=True):
            ratio = o["throughput"] / p["throughput"]
            o["ratio_vs_peer"] = ratio
            print(
                f"{o['clients']:>7} | {o['throughput']:10.1f} {o['p50_ms']:7.2f} {o['p95_ms']:7.2f} "
                f"{o['p99_ms']:7.2f} | {p['throughput']:10.1f} {p['p50_ms']:7.2f} {p['p95_ms']:7.2f} "
                f"{p['p99_ms']:7.2f} | {ratio:5.1f}x"
            )
        if args.shadow:
            print(
                f"\nours without vs with version {setup['shadow_version']} in shadow (target: p95 ratio <= 1.30)"
            )
            print(
                f"{'clients':>7} | {'ours req/s':>10} {'p95':>7} | {'shadow req/s':>12} {'p50':>7} {'p95':>7} "
                f"{'p99':>7} | {'p95 ratio':>9}"
            )
            for o, s in zip(results["ours"], results["shadow"], strict=True):
                s["p95_ratio_vs_ours"] = s["p95_ms"] / o["p95_ms"]
                print(
                    f"{o['clients']:>7} | {o['throughput']:10.1f} {o['p95_ms']:7.2f} | {s['throughput']:12.1f} "
                    f"{s['p50_ms']:7.2f} {s['p95_ms']:7.2f} {s['p99_ms']:7.2f} | {s['p95_ratio_vs_ours']:8.2f}x"
                )
            counts = results["shadow_rows"] = shadow_counts(ports["shadow"], setup["shadow_version"])
            print(
                f"shadow rows (warm-up included): scored {counts['scored']}, errors {counts['errors']}, "
                f"skipped {counts['skipped']} (queue full)"
            )
        print()
        for name in ("ours", "shadow") if args.shadow else ("ours",):
            rows = mean_batch_rows(ports[name])
            if rows is not None:
                print(f"{name}: mean rows per model call {rows:.1f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
