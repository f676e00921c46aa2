"""Shadow rollout through the graph (``rollout.mode: shadow``): a retrain's gated challenger runs in shadow instead
of becoming champion; the prediction service scores live traffic with both; the shadow sensor launches the shadow
job once enough rows are scored; its ``shadow_comparison`` check promotes an equivalent challenger (with the
retrain's reason) and refuses one that disagrees, leaving the champion as it was."""

from __future__ import annotations

import dagster as dg
import httpx
import pandas as pd
import pytest

from mlops_assets.commands.run import print_summary
from mlops_assets.commands.status import render_text, status
from mlops_assets.config import load_config
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.defs.model_assets import SHADOW_TAG
from mlops_assets.defs.shadow import SHADOW_CHECK, shadow_job_name, shadow_sensor_name
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import build_report, execute
from mlops_assets.serving.app import create_app
from mlops_assets.serving.auth import Auth
from mlops_assets.serving.service import PredictionService, ServiceOptions
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.support import gate_passed
from mlops_assets_tests.test_serving_support import InvertedClassifier, LiveServer, row_json, wait_until

ROWS = 60  # per request: the last 60 days of the slice


def _traffic(cfg, storage, frame: pd.DataFrame, rounds: int) -> str:
    """``rounds`` labeled requests through the real service; returns the version that answered all of them."""
    rows = frame.tail(ROWS).reset_index(drop=True)
    payloads = row_json(rows.drop(columns=["rain"]), "date")
    labels = [int(v) for v in rows["rain"]]
    service = PredictionService(cfg, storage, ServiceOptions(poll_interval=0.1))
    service.start()
    answered = set()
    try:
        with (
            LiveServer(create_app(service, auth=Auth.insecure())) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            for _ in range(rounds):
                r = client.post("/predict", json={"rows": payloads})
                assert r.status_code == 200, r.text
                answered.add(r.json()["model_version"])
                fb = client.post("/feedback", json={"ids": r.json()["ids"], "labels": labels})
                assert fb.status_code == 200, fb.text
            shadow = service.shadow.model
            assert shadow is not None
            wait_until(lambda: service.shadow.scored >= rounds * ROWS, timeout=60)
    finally:
        service.close()  # flushes both logs
    assert len(answered) == 1
    return answered.pop()


def _sensor(defs, instance):
    sensor = defs.get_sensor_def(shadow_sensor_name(CFG[0]))
    with dg.build_sensor_context(
        instance=instance, resources={"project": defs.resources["project"]}
    ) as context:
        data = sensor.evaluate_tick(context)
    return data.run_requests[0] if data.run_requests else dg.SkipReason(data.skip_message)


CFG: list = []


@pytest.mark.slow
def test_a_retrain_runs_in_shadow_and_the_graph_promotes_it_only_when_its_comparison_passes(
    rainfall_slice, capsys
):
    path, frame = rainfall_slice(
        years=4,
        name="shadowed",
        rollout={
            "mode": "shadow",
            "shadow": {"requests": 120, "min_requests": 120, "min_labels": 60, "sample": 1.0},
        },
    )
    cfg = load_config(path)
    CFG[:] = [cfg]
    storage = storage_from_env().ensure()
    registry = ModelRegistry.from_config(cfg, storage)
    instance = dg.DagsterInstance.ephemeral()
    defs = build_model_defs(cfg, str(path))

    # The first model has nothing to be compared with: champion at once.
    first = execute(cfg, config_file=str(path), storage=storage, instance=instance)
    assert first.status == "ok", first.error
    assert registry.aliases()["champion"] == "1" and registry.active_shadow() is None

    # A drift retrain: its gated challenger runs in shadow; the champion stays.
    retrain = execute(
        cfg, config_file=str(path), storage=storage, instance=instance, force=True, reason="drift"
    )
    assert retrain.status == "ok", retrain.error
    assert (retrain.shadow_version, retrain.promoted_version) == ("2", None)
    shadow = registry.active_shadow()
    assert (shadow.version, shadow.champion_version, shadow.reason) == ("2", "1", "drift")
    assert registry.aliases()["champion"] == "1"
    report = build_report(cfg, retrain, registry)
    assert report["shadow"]["version"] == "2"
    print_summary(report)
    assert "in shadow: version 2 beside champion 1" in capsys.readouterr().out
    assert "in shadow: version 2 beside champion 1" in render_text(status(cfg, storage, triggers=False))
    # The retrain's run did not judge the shadow (that is the shadow job's).
    assert SHADOW_CHECK not in {c["check"] for c in retrain.checks}

    # Too few rows yet: the sensor waits. Then the service answers with version 1 and scores version 2 beside it.
    assert isinstance(_sensor(defs, instance), dg.SkipReason)
    assert _traffic(cfg, storage, frame, rounds=3) == "1"
    request = _sensor(defs, instance)
    assert isinstance(request, dg.RunRequest) and request.tags[SHADOW_TAG] == str(shadow.id)

    result = defs.resolve_job_def(shadow_job_name(cfg)).execute_in_process(
        instance=instance, tags=request.tags, raise_on_error=False
    )
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == SHADOW_CHECK and evaluation.passed, evaluation.metadata["message"]
    assert registry.aliases()["champion"] == "2"
    last = registry.history()[-1]
    assert (last.version, last.previous_version, last.reason) == ("2", "1", "drift")
    [ended] = registry.shadows()
    assert ended.state == "promoted" and ended.verdict["passed"] and ended.verdict["pairs"] == 180
    deployed = instance.get_latest_materialization_event(dg.AssetKey([cfg.model.name, "deployed_model"]))
    assert deployed.asset_materialization.metadata["champion_version"].value == "2"

    # A challenger that passed its gates but decides the other way round: refused by the comparison.
    inverted = registry.register(
        InvertedClassifier(registry.load("2").model),
        input_example=frame.drop(columns=["rain"]).head(3),
        metrics={"holdout_roc_auc": 0.8},
        feature_version=registry.get_version("2").tags["mlops.feature_version"],
    ).version
    gate_passed(registry, inverted)
    bad = registry.start_shadow(inverted, reason="manual")
    assert _traffic(cfg, storage, frame, rounds=3) == "2"
    result = defs.resolve_job_def(shadow_job_name(cfg)).execute_in_process(
        instance=instance, tags={SHADOW_TAG: str(bad.id), "mlops/reason": "manual"}, raise_on_error=False
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "decided as the champion on" in evaluation.metadata["message"].value
    # deployed_model did not run (the blocking check stopped it before its step, which would otherwise have
    # started and failed on the refused shadow): the champion is version 2, its history unchanged.
    deployed_step = f"{cfg.model.name}__deployed_model"
    assert not result.asset_materializations_for_node(deployed_step)
    assert not [e for e in result.all_events if e.is_step_start and e.step_key == deployed_step]
    assert registry.aliases()["champion"] == "2" and registry.history()[-1].version == "2"
    refused = registry.shadows()[-1]
    assert refused.state == "refused" and not refused.verdict["passed"]
    assert f"last shadow: version {inverted} refused" in render_text(status(cfg, storage, triggers=False))
