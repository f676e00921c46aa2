"""Hot swap over real HTTP: the champion moves (promotion, rollback) under concurrent load with zero failed
requests, every response is exactly what the version it names predicts, and a model whose feature code version
differs from the online store's is refused with a clear log line while the service keeps its model."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from mlops_assets.alerts.settings import AlertsConfig
from mlops_assets.config import ProbationConfig
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.serving.app import create_app
from mlops_assets.serving.auth import Auth
from mlops_assets.serving.service import PredictionService, ServiceOptions
from mlops_assets_tests.support import HttpReceiver, self_signed_cert
from mlops_assets_tests.test_serving_support import (
    FailingClassifier,
    InvertedClassifier,
    LiveServer,
    SlowClassifier,
    materialize_online,
    offline_predictions,
    register,
    row_json,
    scored_rows,
    storage_for,
    trained,
    wait_until,
)


def test_swap_and_rollback_under_load_without_a_failed_request(tmp_path, caplog):
    storage = storage_for(tmp_path / "home")
    materialize_online(storage)
    v1 = register(storage, 25)
    cfg = trained().cfg
    # The moves here are a person's: no probation judging v2 on a busy machine alongside them.
    cfg = cfg.model_copy(update={"probation": ProbationConfig(enabled=False)})
    service = PredictionService(cfg, storage, ServiceOptions(poll_interval=0.1))
    rows = scored_rows().tail(60).reset_index(drop=True)
    payloads = row_json(rows, cfg.dataset.timestamp_column)
    expected = {25: offline_predictions(25, rows)[1], 40: offline_predictions(40, rows)[1]}

    results: list[tuple[int, int, str | None, float | None]] = []  # (row, status, version, probability)
    stop = threading.Event()

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = worker
            while not stop.is_set():
                k = i % len(payloads)
                r = client.post("/predict", json={"rows": [payloads[k]]})
                if r.status_code == 200:
                    b = r.json()
                    results.append((k, 200, b["model_version"], b["probabilities"][0]))
                else:
                    results.append((k, r.status_code, None, None))
                i += 7

    caplog.set_level(logging.INFO, logger="mlops_assets.serving")
    with LiveServer(create_app(service, auth=Auth.insecure())) as server:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client_loop, w) for w in range(8)]
            wait_until(lambda: len(results) > 100)
            v2 = register(storage, 40)  # registered and promoted while requests flow
            wait_until(lambda: any(v == v2 for _, _, v, _ in results[-50:]))
            n_at_swap = len(results)
            wait_until(lambda: len(results) > n_at_swap + 100)
            ModelRegistry(cfg.model.name, storage).rollback(reason="rollback")
            wait_until(lambda: results[-1][2] == v1 and len(results) > n_at_swap + 300)
            stop.set()
            for f in futures:
                f.result()

        statuses = [s for _, s, _, _ in results]
        assert statuses.count(200) == len(results), f"failed requests: {len(results) - statuses.count(200)}"
        by_version = {v1: expected[25], v2: expected[40]}
        seen = {v for _, _, v, _ in results}
        assert seen == {v1, v2}
        for k, _, v, p in results:
            assert p == by_version[v][k], f"row {k}: version {v} answered {p}, offline {by_version[v][k]}"
        # Order: v1, then v2 once it appeared, then v1 again after the rollback.
        versions = [v for _, _, v, _ in results]
        first_v2, last_v2 = versions.index(v2), len(versions) - 1 - versions[::-1].index(v2)
        assert set(versions[:first_v2]) == {v1}
        assert versions[last_v2 + 1 :] and set(versions[last_v2 + 1 :]) == {v1}
        assert service.metrics.swaps == 2

        # A champion trained on other feature definitions is refused; the service keeps serving v1.
        v3 = register(storage, 40, feature_version="0000000000000000")
        wait_until(lambda: service.slot.refusal is not None)
        msg = service.slot.refusal
        assert f"refusing champion version {v3}" in msg and "feature code version '0000000000000000'" in msg
        assert any(
            r.levelno == logging.ERROR and f"refusing champion version {v3}" in r.getMessage()
            for r in caplog.records
        )
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/predict", json={"rows": [payloads[0]]})
            assert r.status_code == 200 and r.json()["model_version"] == v1
            h = client.get("/health").json()
            assert h["model_version"] == v1 and v3 in h["warning"]
            assert (
                f'mlops_model_refused_total{{model="mlops_model",version="{v3}"}} 1'
                in client.get("/metrics").text
            )


class _Load:
    """``clients`` threads posting one row each to ``url`` in a loop until stopped; every answer kept as
    (time, status, version)."""

    def __init__(self, url: str, payloads: list[dict], clients: int = 6):
        self.url, self.payloads = url, payloads
        self.results: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(clients)
        self.futures = [self.pool.submit(self._loop, w) for w in range(clients)]

    def _loop(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = worker
            while not self.stop.is_set():
                r = client.post("/predict", json={"rows": [self.payloads[i % len(self.payloads)]]})
                version = r.json()["model_version"] if r.status_code == 200 else None
                self.results.append((time.monotonic(), r.status_code, version))
                i += 7

    def close(self) -> None:
        self.stop.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()

    def failed(self) -> list[int]:
        return [s for _, s, _ in self.results if s != 200]


def _probation_service(
    tmp_path,
    duration: float,
    alerts_url: str | None = None,
    storage=None,
    live_auc_drop: float | None = None,
    min_labels: int = 200,
    label_check_interval: float = 10.0,
) -> tuple[PredictionService, object, list[dict]]:
    if storage is None:
        storage = storage_for(tmp_path / "home")
        materialize_online(storage)
    cfg = trained().cfg
    if alerts_url is not None:
        cfg = cfg.model_copy(
            update={
                "alerts": AlertsConfig.model_validate({"channels": [{"type": "webhook", "url": alerts_url}]})
            }
        )
    settings = ProbationConfig(
        duration_seconds=duration,
        window_seconds=3,
        min_requests=20,
        latency_floor_ms=100,  # the defaults otherwise: ratio 3, absolute 1000 ms, error rate 5%
        check_interval_seconds=0.25,
        max_live_auc_drop=live_auc_drop,  # off unless a test judges it
        min_labels=min_labels,
        label_check_interval_seconds=label_check_interval,
    )
    cfg = cfg.model_copy(update={"probation": settings})
    service = PredictionService(cfg, storage, ServiceOptions(poll_interval=0.1))
    payloads = row_json(scored_rows().tail(60).reset_index(drop=True), cfg.dataset.timestamp_column)
    return service, storage, payloads


def test_a_slow_champion_is_rolled_back_automatically_without_a_failed_request(tmp_path):
    """A champion answering in 200 ms instead of a few is promoted under load: the service rolls it back to the
    champion it replaced through the guard within seconds, no request fails, and the history and the alert say
    why."""
    with HttpReceiver() as receiver:
        service, storage, payloads = _probation_service(
            tmp_path, duration=60, alerts_url=f"{receiver.url}/hook"
        )
        v1 = register(storage, 25)
        registry = ModelRegistry(trained().cfg.model.name, storage)
        with LiveServer(create_app(service, auth=Auth.insecure())) as server:
            load = _Load(server.url, payloads)
            try:
                # The previous champion's p95 is measured meanwhile.
                wait_until(lambda: len(load.results) > 120)
                slow = register(storage, 25, pipeline=SlowClassifier(trained().pipelines[25], delay=0.2))
                promoted = time.monotonic()
                wait_until(lambda: any(v == slow for _, _, v in load.results[-30:]))
                wait_until(lambda: registry.aliases().get("champion") == v1, timeout=60)
                rolled_back = time.monotonic()
                wait_until(lambda: load.results[-1][2] == v1)
                n = len(load.results)
                wait_until(lambda: len(load.results) > n + 100)
            finally:
                load.close()
            assert rolled_back - promoted < 60
            assert load.failed() == [], f"{len(load.failed())} failed requests"
            versions = [v for _, _, v in load.results]
            last_slow = len(versions) - 1 - versions[::-1].index(slow)
            assert set(versions[last_slow + 1 :]) == {v1} and len(versions) - last_slow > 100

            last = registry.history()[-1]
            assert (last.version, last.previous_version) == (v1, slow)
            assert last.moved_by.startswith("prediction-service probation")
            assert f"automatic rollback: version {slow} breached its probation" in last.reason
            measured = float(last.reason.split("p95 latency ")[1].split(" ms")[0])
            limit = float(last.reason.split("above the limit ")[1].split(" ms")[0])
            # Every slow answer waited for one 200 ms model call at least; the limit is the floor, or 3 x the
            # previous champion's p95.
            assert measured >= 200, last.reason
            assert limit >= 100 and measured > limit, last.reason
            assert "previous champion's p95" in last.reason and "requests, p95" in last.reason

            with httpx.Client(base_url=server.url, timeout=30) as client:
                h = client.get("/health").json()
                assert h["model_version"] == v1
                assert h["probation"]["state"] == "rolled_back" and h["probation"]["version"] == slow
                assert h["probation"]["reason"] == last.reason
                evidence = h["probation"]["evidence"]
                assert evidence["p95_ms"] == measured and evidence["p95_limit_ms"] == limit
                assert evidence["requests"] >= 20 and evidence["error_rate"] == 0
                metrics = client.get("/metrics").text
                assert 'mlops_probations_total{outcome="rolled_back"} 1' in metrics
                assert 'mlops_probations_total{outcome="started"} 1' in metrics  # the swap back started none
                assert "mlops_probation_active 0" in metrics
            wait_until(lambda: any(e["event"] == "rolled_back" for e in receiver.events()))
            alert = next(e for e in receiver.events() if e["event"] == "rolled_back")
            assert alert["version"] == v1 and last.reason in alert["summary"]


def test_only_one_of_two_services_rolls_back(tmp_path):
    """Two service processes behind one registry both see the slow champion breach: one moves the alias back, the
    other's move is refused by the guard (the champion changed) or finds it already moved; one history row."""
    first, storage, payloads = _probation_service(tmp_path, duration=60)
    second, _, _ = _probation_service(tmp_path, duration=60, storage=storage)
    v1 = register(storage, 25)
    registry = ModelRegistry(trained().cfg.model.name, storage)
    with (
        LiveServer(create_app(first, auth=Auth.insecure())) as one,
        LiveServer(create_app(second, auth=Auth.insecure())) as two,
    ):
        loads = [_Load(one.url, payloads, clients=3), _Load(two.url, payloads, clients=3)]
        try:
            wait_until(lambda: all(len(load.results) > 100 for load in loads))
            slow = register(storage, 25, pipeline=SlowClassifier(trained().pipelines[25], delay=0.2))
            wait_until(lambda: all(any(v == slow for _, _, v in load.results[-20:]) for load in loads))
            wait_until(
                lambda: all(s.probation.status()["state"] != "watching" for s in (first, second)), timeout=60
            )
            wait_until(lambda: all(load.results[-1][2] == v1 for load in loads))
        finally:
            for load in loads:
                load.close()
        assert [load.failed() for load in loads] == [[], []]
        states = sorted(s.probation.status()["state"] for s in (first, second))
        assert states == ["rolled_back", "superseded"], states
        moves = [d for d in registry.history() if d.previous_version == slow]
        assert len(moves) == 1 and moves[0].version == v1 and "automatic rollback" in moves[0].reason
        assert registry.aliases()["champion"] == v1


def test_a_champion_answering_5xx_is_rolled_back(tmp_path):
    """A champion that starts failing once it serves: its 5xx share breaches the limit and the service rolls it back;
    the failures are its own, and none follows the rollback."""
    service, storage, payloads = _probation_service(tmp_path, duration=60)
    v1 = register(storage, 25)
    registry = ModelRegistry(trained().cfg.model.name, storage)
    switch = tmp_path / "fail"
    with LiveServer(create_app(service, auth=Auth.insecure())) as server:
        load = _Load(server.url, payloads)
        try:
            wait_until(lambda: len(load.results) > 120)
            bad = register(storage, 25, pipeline=FailingClassifier(trained().pipelines[25], str(switch)))
            wait_until(lambda: any(v == bad for _, _, v in load.results[-30:]))
            switch.touch()
            broke = len(load.results)
            wait_until(lambda: registry.aliases().get("champion") == v1, timeout=60)
            wait_until(lambda: load.results[-1][2] == v1)
            n = len(load.results)
            wait_until(lambda: len(load.results) > n + 100)
        finally:
            load.close()
        statuses = [s for _, s, _ in load.results]
        assert set(statuses[:broke]) == {200} and 500 in statuses[broke:]
        last_failure = len(statuses) - 1 - statuses[::-1].index(500)
        assert {v for _, _, v in load.results[last_failure + 1 :]} == {v1}
        assert set(statuses[last_failure + 1 :]) == {200}
        last = registry.history()[-1]
        assert (last.version, last.previous_version) == (v1, bad)
        assert "5xx) above the limit 5%" in last.reason, last.reason
        assert service.health()["probation"]["state"] == "rolled_back"


def test_a_healthy_champion_completes_its_probation_and_stays(tmp_path):
    service, storage, payloads = _probation_service(tmp_path, duration=4)
    register(storage, 25)
    registry = ModelRegistry(trained().cfg.model.name, storage)
    with LiveServer(create_app(service, auth=Auth.insecure())) as server:
        load = _Load(server.url, payloads)
        try:
            wait_until(lambda: len(load.results) > 120)
            v2 = register(storage, 40)
            wait_until(lambda: any(v == v2 for _, _, v in load.results[-30:]))
            with httpx.Client(base_url=server.url, timeout=30) as client:
                h = client.get("/health").json()["probation"]
                assert h["state"] == "watching" and h["version"] == v2 and h["previous_p95_ms"] is not None
                assert "mlops_probation_active 1" in client.get("/metrics").text
            wait_until(lambda: (service.probation.status() or {}).get("state") != "watching")
        finally:
            load.close()
        assert load.failed() == []
        assert service.probation.status()["state"] == "passed", service.probation.status()
        assert registry.aliases()["champion"] == v2 and registry.history()[-1].version == v2
        assert service.slot.current.version == v2
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health").json()["probation"]["state"] == "passed"
            assert 'mlops_probations_total{outcome="passed"} 1' in client.get("/metrics").text


def test_no_champion_is_503_until_one_is_promoted(tmp_path):
    storage = storage_for(tmp_path / "home")
    materialize_online(storage)
    cfg = trained().cfg
    service = PredictionService(cfg, storage, ServiceOptions(poll_interval=0.1))
    payload = row_json(scored_rows().tail(1), cfg.dataset.timestamp_column)
    with (
        LiveServer(create_app(service, auth=Auth.insecure())) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get("/health").status_code == 503
        r = client.post("/predict", json={"rows": payload})
        assert r.status_code == 503 and "champion" in r.json()["error"]
        service.prediction_log.flush()
        assert service.prediction_log.count() == 0
        v = register(storage, 25)
        wait_until(lambda: client.get("/health").status_code == 200)
        r = client.post("/predict", json={"rows": payload})
        assert r.status_code == 200 and r.json()["model_version"] == v
        np.testing.assert_array_equal(
            r.json()["probabilities"], offline_predictions(25, scored_rows().tail(1))[1]
        )


@pytest.mark.parametrize("module", ["mlops_assets.serving.server", "mlops_assets.serving.service"])
def test_serving_never_imports_dagster(module):
    import subprocess
    import sys

    code = f"import sys, {module}, mlops_assets.serving.app; assert 'dagster' not in sys.modules, 'dagster imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _cli_service_home(tmp_path) -> tuple[str, int, dict[str, str], object]:
    """A home with a champion and its online store, a free port, the environment of a `mlops-assets serve` that
    generates its tokens, and the CLI's path: (champion version, port, env, cli)."""
    import os
    import socket
    import sys
    from pathlib import Path

    storage = storage_for(tmp_path / "home")
    materialize_online(storage)
    v = register(storage, 25)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MLOPS_HOME=str(storage.home))
    env.pop("MLOPS_SERVE_TOKENS", None)
    return v, port, env, Path(sys.executable).parent / "mlops-assets"


def _printed_tokens(proc) -> dict[str, str]:
    """The tokens a `mlops-assets serve` without MLOPS_SERVE_TOKENS printed once at start, by scope."""
    tokens: dict[str, str] = {}
    while len(tokens) < 3:
        line = proc.stdout.readline().decode()
        assert line, "the generated tokens were not printed"
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("predict", "feedback", "admin"):
            tokens[parts[0]] = parts[1]
    return tokens


def test_cli_serve_starts_on_loopback(tmp_path):
    """`mlops-assets serve` (the CLI route) in its own process: binds 127.0.0.1, serves HTTPS with --tls-cert and
    --tls-key, generates and requires tokens when none are configured, stops on SIGTERM."""
    import signal
    import ssl
    import subprocess

    from mlops_assets_tests.test_serving_support import write_config

    v, port, env, cli = _cli_service_home(tmp_path)
    cert, key = self_signed_cert(tmp_path)
    tls = ssl.create_default_context(cafile=str(cert))
    args = ["serve", "--config", str(write_config(tmp_path)), "--port", str(port)]
    proc = subprocess.Popen(
        [str(cli), *args, "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/health", timeout=2, verify=tls)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200 and r.json() == {
            "status": "ok",
            "model_version": v,
            "model_name": "mlops_model",
        }
        # No MLOPS_SERVE_TOKENS: tokens were generated, printed once at start, and are required.
        tokens = _printed_tokens(proc)
        body = {"rows": row_json(scored_rows().tail(1), "date")}
        url = f"https://127.0.0.1:{port}/predict"
        with httpx.Client(verify=tls, timeout=10) as client:
            assert client.post(url, json=body).status_code == 401
            wrong = {"authorization": f"Bearer {tokens['feedback']}"}
            assert client.post(url, json=body, headers=wrong).status_code == 403
            right = {"authorization": f"Bearer {tokens['predict']}"}
            assert client.post(url, json=body, headers=right).status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP is not spoken on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is a clean exit here.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert b"Traceback" not in proc.stdout.read()


def test_cli_serve_with_two_workers_shares_one_port_and_replaces_a_killed_worker(tmp_path):
    """`mlops-assets serve --workers 2`: two processes on one port, each with its own service on the champion and
    the same generated tokens; a worker killed with SIGKILL is replaced while the other keeps answering; SIGTERM
    stops them all."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    from mlops_assets_tests.test_serving_support import write_config

    v, port, env, cli = _cli_service_home(tmp_path)
    args = ["serve", "--config", str(write_config(tmp_path)), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen([str(cli), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def workers() -> set[int]:
        """The worker processes: the server's children that multiprocessing spawned (not its resource tracker)."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if ppid == proc.pid and b"spawn_main" in cmdline:
                found.add(int(stat.parent.name))
        return found

    body = {"rows": row_json(scored_rows().tail(1), "date")}
    url = f"http://127.0.0.1:{port}/predict"

    def predictions(headers: dict[str, str], n: int = 40) -> list[int]:
        def one(_):
            # A connection each: the kernel hands each to whichever worker accepts it first.
            return httpx.post(url, json=body, headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))

    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["model_version"] == v:
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.3)
        tokens = _printed_tokens(proc)
        first = workers()
        assert len(first) == 2, first
        wait_for = time.monotonic() + 60
        right = {"authorization": f"Bearer {tokens['predict']}"}
        # Every worker requires the parent's tokens: none answers without one, all answer with it.
        assert set(predictions({})) == {401}
        assert set(predictions(right)) == {200}

        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        while True:
            now = workers()
            if len(now) == 2 and killed not in now:
                break
            assert time.monotonic() < wait_for, f"the killed worker was not replaced: {now}"
            time.sleep(0.5)
        # The replacement loads the champion and requires the same tokens.
        deadline = time.monotonic() + 60
        while set(codes := predictions(right, 16)) != {200}:
            assert time.monotonic() < deadline, codes
            time.sleep(1)
        assert set(predictions({})) == {401}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert workers() == set()
    assert b"Traceback" not in proc.stdout.read()


def test_a_champion_whose_live_metric_collapses_on_feedback_is_rolled_back(tmp_path):
    """A champion as fast as the last but whose predictions turn out wrong: once enough of its predictions have
    labels back through /feedback, its live ROC AUC is far below the previous champion's on its own labels, and the
    service rolls it back, saying so in the history and /health."""
    service, storage, payloads = _probation_service(
        tmp_path, duration=120, live_auc_drop=0.1, min_labels=40, label_check_interval=0.5
    )
    labels = [int(v) for v in trained().raw.tail(len(payloads))[trained().cfg.dataset.label_column]]
    v1 = register(storage, 25)
    registry = ModelRegistry(trained().cfg.model.name, storage)

    def labeled_traffic(client: httpx.Client, rounds: int) -> set[str]:
        """Every payload predicted, then its true label sent back; the versions that answered."""
        versions = set()
        for _ in range(rounds):
            r = client.post("/predict", json={"rows": payloads})
            assert r.status_code == 200, r.text
            versions.add(r.json()["model_version"])
            fb = client.post("/feedback", json={"ids": r.json()["ids"], "labels": labels})
            assert fb.status_code == 200, fb.text
        return versions

    with (
        LiveServer(create_app(service, auth=Auth.insecure())) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert labeled_traffic(client, 2) == {v1}  # the previous champion's live metric: 120 labels
        inverted = register(storage, 25, pipeline=InvertedClassifier(trained().pipelines[25]))
        wait_until(lambda: client.get("/health").json()["model_version"] == inverted)
        labeled_traffic(client, 1)  # 60 labeled predictions of the new champion: enough to judge
        wait_until(lambda: registry.aliases().get("champion") == v1, timeout=60)
        wait_until(lambda: client.get("/health").json()["model_version"] == v1)
        h = client.get("/health").json()["probation"]

    last = registry.history()[-1]
    assert (last.version, last.previous_version) == (v1, inverted)
    assert f"automatic rollback: version {inverted} breached its probation" in last.reason
    assert "live ROC AUC" in last.reason and "below the previous champion's" in last.reason
    assert h["state"] == "rolled_back" and h["reason"] == last.reason
    live = h["evidence"]
    assert live["labels"] >= 40 and live["previous_labels"] >= 40
    # Turned around, the same model's ROC AUC is one minus the original's.
    assert live["live_roc_auc"] == pytest.approx(1 - live["previous_live_roc_auc"], abs=0.05)
    assert live["previous_live_roc_auc"] - live["live_roc_auc"] > 0.1
