"""Shadow scoring over real HTTP: a challenger in shadow scores every request the champion answers, only the
champion's answers are returned, both are logged side by side, and the shadow comparison passes for an equivalent
challenger and fails for one that disagrees."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from mlops_assets.config import RolloutConfig, ShadowConfig
from mlops_assets.monitoring.shadow import compare
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.serving.app import create_app
from mlops_assets.serving.auth import Auth
from mlops_assets.serving.service import PredictionService, ServiceOptions
from mlops_assets_tests.test_serving_support import (
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

# Small enough for a test's traffic; the other limits are the defaults.
SETTINGS = ShadowConfig(requests=240, min_requests=240, min_labels=120)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """One home for the module: version 25 is champion, 40 registered beside it."""
    storage = storage_for(tmp_path_factory.mktemp("shadow") / "home")
    materialize_online(storage)
    _VERSIONS[25] = register(storage, 25)
    _VERSIONS[40] = register(storage, 40, promote=False)
    return storage


def _traffic(service, rounds: int, labels: bool = True) -> list[str]:
    """``rounds`` requests of the last 60 scored days, each answered by the champion (checked against its offline
    predictions) and, with ``labels``, labeled through /feedback; the ids answered."""
    cfg = trained().cfg
    rows = scored_rows().tail(60).reset_index(drop=True)
    payloads = row_json(rows, cfg.dataset.timestamp_column)
    truth = [int(v) for v in trained().raw.tail(60)[cfg.dataset.label_column]]
    champion = service.slot.current.version
    max_iter = {v: k for k, v in _VERSIONS.items()}[champion]
    _, expected = offline_predictions(max_iter, rows)
    ids: list[str] = []
    with (
        LiveServer(create_app(service, auth=Auth.insecure())) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for _ in range(rounds):
            r = client.post("/predict", json={"rows": payloads})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_version"] == champion  # the champion answers, never the shadow
            np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-6, atol=1e-9)
            ids += body["ids"]
            if labels:
                assert client.post("/feedback", json={"ids": body["ids"], "labels": truth}).status_code == 200
        # The server's shutdown closes the service: wait for the shadow first (its process starts at its load).
        wait_until(lambda: service.shadow.scored + service.shadow.errors >= len(ids), timeout=90)
        health = client.get("/health").json()
    service.shadow_health = health  # type: ignore[attr-defined]
    return ids


_VERSIONS: dict[int, str] = {}


def _service(storage, shadow_version: str) -> PredictionService:
    """A service scoring every batch with the shadow (the default samples a quarter)."""
    registry = ModelRegistry(trained().cfg.model.name, storage)
    registry.start_shadow(shadow_version, reason="drift")
    cfg = trained().cfg.model_copy(
        update={"rollout": RolloutConfig(mode="shadow", shadow=ShadowConfig(sample=1.0))}
    )
    service = PredictionService(cfg, storage, ServiceOptions(poll_interval=0.1))
    service.start()
    return service


def _pairs(service, version: str, n: int) -> dict:
    wait_until(
        lambda: len(service.prediction_log.shadow_pairs(trained().cfg.model.name, version)["error"]) >= n,
        timeout=90,
    )
    return service.prediction_log.shadow_pairs(trained().cfg.model.name, version)


def test_an_equivalent_shadow_scores_every_request_beside_the_champion_and_passes(storage):
    service = _service(storage, _VERSIONS[40])
    try:
        assert service.shadow.model is not None and service.shadow.model.version == _VERSIONS[40]
        ids = _traffic(service, rounds=4)
        pairs = _pairs(service, _VERSIONS[40], len(ids))
        assert service.shadow_health["shadow"]["version"] == _VERSIONS[40]
    finally:
        service.close()
    assert len(pairs["error"]) == len(ids) == 240 and not any(pairs["error"])
    # What the shadow logged is what version 40 predicts for those rows offline.
    rows = scored_rows().tail(60).reset_index(drop=True)
    _, expected = offline_predictions(40, rows)
    np.testing.assert_allclose(sorted(pairs["probability"]), sorted(np.tile(expected, 4)), rtol=1e-6)
    assert all(v is not None for v in pairs["label"])  # the champion's labels join the pairs
    verdict = compare(pairs, SETTINGS, _VERSIONS[40], _VERSIONS[25])
    assert verdict.passed, verdict.summary()
    judged = {c.name: c.passed for c in verdict.criteria}
    assert judged == {
        "error_rate": True,
        "agreement": True,
        "score_shift": True,
        "latency": True,
        "live_roc_auc": True,
    }


def test_a_shadow_that_disagrees_fails_the_comparison_and_never_answers(storage):
    inverted = register(storage, 25, promote=False, pipeline=InvertedClassifier(trained().pipelines[25]))
    service = _service(storage, inverted)
    try:
        ids = _traffic(service, rounds=4)
        pairs = _pairs(service, inverted, len(ids))
    finally:
        service.close()
    verdict = compare(pairs, SETTINGS, inverted, _VERSIONS[25])
    assert not verdict.passed
    failed = {c.name for c in verdict.failed}
    assert {"agreement", "live_roc_auc"} <= failed, verdict.summary()
    assert "decided as the champion on" in verdict.summary()


def test_a_slow_shadow_fails_on_its_latency_and_unlabeled_rows_are_not_judged(storage):
    slow = register(storage, 25, promote=False, pipeline=SlowClassifier(trained().pipelines[25], delay=0.2))
    service = _service(storage, slow)
    try:
        ids = _traffic(service, rounds=4, labels=False)
        pairs = _pairs(service, slow, len(ids))
    finally:
        service.close()
    verdict = compare(pairs, SETTINGS, slow, _VERSIONS[25])
    assert {c.name for c in verdict.failed} == {"latency"}, verdict.summary()
    live = {c.name: c for c in verdict.criteria}["live_roc_auc"]
    assert live.passed is None and "not judged" in live.message  # no labels: not a pass


def test_the_shadow_scores_its_sample_of_batches():
    """rollout.shadow.sample: the share of answered batches handed to the shadow, at random."""
    from types import SimpleNamespace

    from mlops_assets.serving.shadow import ShadowScorer

    scorer = ShadowScorer(lambda: None, None, None, max_queued_batches=10_000, sample=0.25)  # type: ignore[arg-type]
    model = SimpleNamespace(version="2", columns=("a",), numeric_only=True)
    scorer.model = model  # type: ignore[assignment]
    for _ in range(4000):
        scorer.offer(model, None, None, ["id"], 1.0, None)  # type: ignore[arg-type]
    assert 850 <= scorer._queue.qsize() <= 1150  # 1,000 expected; 5 standard deviations either side
    everything = ShadowScorer(lambda: None, None, None, max_queued_batches=10_000, sample=1.0)  # type: ignore[arg-type]
    everything.model = model  # type: ignore[assignment]
    for _ in range(100):
        everything.offer(model, None, None, ["id"], 1.0, None)  # type: ignore[arg-type]
    assert everything._queue.qsize() == 100


def test_the_shadow_process_goes_when_the_shadow_ends(storage):
    """A shadow that ends (promoted, refused, superseded) leaves no process holding its model in the service."""
    registry = ModelRegistry(trained().cfg.model.name, storage)
    service = _service(storage, _VERSIONS[40])
    try:
        wait_until(lambda: service.shadow._pool is not None, timeout=90)
        [process] = service.shadow._pool._processes.values()
        registry.end_shadow(registry.active_shadow(), "refused", {"passed": False})
        wait_until(lambda: service.shadow.model is None and service.shadow._pool is None, timeout=90)
        process.join(timeout=30)
        assert not process.is_alive()
        assert "shadow" not in service.health()
    finally:
        service.close()
