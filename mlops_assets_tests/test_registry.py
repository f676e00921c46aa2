"""The MLflow registry on a real SQLite MLflow store with a file artifact root under tmp_path; deployment history
and promotion lock on SQLite."""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from mlops_assets.cli import main as cli_main
from mlops_assets.config import BUNDLED_CONFIG
from mlops_assets.registry import (
    ArtifactIntegrityError,
    NothingToRollBackError,
    PromotionError,
    RegistryError,
    UnknownVersionError,
)
from mlops_assets.registry.history import DeploymentHistory
from mlops_assets.registry.model_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG_DAGSTER_RUN_ID,
    TAG_DATA_WINDOW,
    TAG_FEATURE_VERSION,
    TAG_SHA256,
    TAG_TRUSTED_TYPES,
    ModelRegistry,
    file_sha256,
)
from mlops_assets.storage import storage_from_env
from mlops_assets.training.gate_settings import LatencyConfig
from mlops_assets.training.gates import FairnessConfig, GatesConfig, evaluate_gates
from mlops_assets_tests.support import bundled_feature_version, gate_passed, promote_concurrently, rainfall_xy


@lru_cache(maxsize=4)
def fitted(kind: str) -> Pipeline:
    X, y = rainfall_xy()
    # The data drifts in its last third: a model fitted on the recent window beats one fitted on all history
    # (holdout ROC AUC ~0.80 vs ~0.69; both pass the default floors).
    if kind == "good":
        Xtr, ytr = X.iloc[13_000:14_500], y.iloc[13_000:14_500]
    elif kind == "older":
        Xtr, ytr = X.iloc[:14_500], y.iloc[:14_500]
    elif kind == "tiny":
        Xtr, ytr = X.iloc[:300], y.iloc[:300]
    else:
        raise ValueError(kind)
    return Pipeline([("model", HistGradientBoostingClassifier(max_iter=40, random_state=0))]).fit(Xtr, ytr)


def holdout() -> tuple[pd.DataFrame, pd.Series]:
    X, y = rainfall_xy()
    return X.iloc[16_300:], y.iloc[16_300:]


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    home = tmp_path_factory.mktemp("registry") / "home"
    return storage_from_env({"MLOPS_HOME": str(home)})


@pytest.fixture
def reg(storage, request) -> ModelRegistry:
    """A registry for a model named after the test: tests share one MLflow store but not models or history."""
    return ModelRegistry(re.sub(r"\W", "_", request.node.name)[:80], storage)


def register(reg: ModelRegistry, kind: str = "good", *, gated: bool = True, **kw):
    """Register a test model trained on the bundled features, with a passing gate record unless not ``gated``
    (the champion guard needs one; the gate tests record their own)."""
    X, _ = rainfall_xy()
    kw.setdefault("feature_version", bundled_feature_version())
    rv = reg.register(
        fitted(kind), input_example=X.head(5), metrics=kw.pop("metrics", {"roc_auc": 0.7}), **kw
    )
    if gated:
        gate_passed(reg, rv.version)
    return rv


# ------------------------------------------------------------------------------------------------ register & load


def test_register_records_model_tags_artifacts_and_challenger_alias(reg, storage):
    rv = register(
        reg,
        metrics={"roc_auc": 0.71, "accuracy": 0.62, "skipped": None},
        partitions=["1949-01", "1949-02", "1949-03"],
        feature_version="feat-abc123",
        dagster_run_id="dagster-run-1",
        json_artifacts={"reference_profile": {"temperature": {"mean": 0.1}}},
        file_artifacts={"plots/note.txt": "hello"},
    )
    assert rv.version == "1"
    assert reg.aliases() == {CHALLENGER: "1"}
    # The trusted list is exactly what skops reports for this model: never "everything".
    assert rv.trusted_types == sorted(skops.io.get_untrusted_types(data=skops.io.dumps(fitted("good"))))
    assert rv.source.startswith(storage.mlflow_artifact_root)

    mv = reg.get_version(rv.version)
    assert mv.tags[TAG_SHA256] == rv.sha256
    assert json.loads(mv.tags[TAG_TRUSTED_TYPES]) == rv.trusted_types
    assert mv.tags[TAG_DATA_WINDOW] == "1949-01..1949-03"
    assert mv.tags[TAG_FEATURE_VERSION] == "feat-abc123"
    assert mv.tags[TAG_DAGSTER_RUN_ID] == "dagster-run-1"

    run = reg.client.get_run(rv.run_id)
    assert run.data.metrics == {"roc_auc": 0.71, "accuracy": 0.62}
    assert run.data.params["max_iter"] == "40"
    assert run.info.status == "FINISHED"
    listed = {a.path for a in reg.client.list_artifacts(rv.run_id)}
    assert {"plots", "reference_profile.json", "partitions.json"} <= listed
    # The model itself is the run's MLflow 3 LoggedModel, the version's source.
    assert "model" not in listed
    assert [o.model_id for o in run.outputs.model_outputs] == [rv.model_id]
    assert mv.source == f"models:/{rv.model_id}"
    assert reg.client.get_logged_model(rv.model_id).artifact_location == rv.source
    assert reg.load_json(rv.version, "reference_profile") == {"temperature": {"mean": 0.1}}
    mlmodel = (Path(urlparse(rv.source).path) / "MLmodel").read_text()
    assert "signature" in mlmodel and "skops" in mlmodel
    # Nothing leaks into the working directory.
    assert not Path("mlruns").exists()


def test_load_by_version_and_alias_gives_the_same_predictions(reg):
    rv = register(reg)
    Xh, _ = holdout()
    expected = fitted("good").predict_proba(Xh)
    by_version = reg.load(rv.version)
    by_alias = reg.load(alias=CHALLENGER)
    assert by_version.version == by_alias.version == rv.version
    assert by_version.sha256 == rv.sha256
    np.testing.assert_allclose(by_version.model.predict_proba(Xh), expected)
    np.testing.assert_allclose(by_alias.model.predict_proba(Xh), expected)
    with pytest.raises(UnknownVersionError, match="alias 'champion'"):
        reg.load(alias=CHAMPION)
    with pytest.raises(UnknownVersionError, match="no version 99"):
        reg.load(99)


def test_register_logs_into_the_active_run(reg, storage):
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(storage.mlflow_tracking_uri)
    try:
        with mlflow.start_run(experiment_id=reg.ensure_experiment()) as run:
            mlflow.log_param("outer", "dagster-mlflow")
            rv = register(reg)
            assert rv.run_id == run.info.run_id
            # The active run is left running: whoever opened it closes it.
            assert reg.client.get_run(run.info.run_id).info.status == "RUNNING"
    finally:
        mlflow.set_tracking_uri(previous_uri)
    data = reg.client.get_run(rv.run_id).data
    assert data.params["outer"] == "dagster-mlflow" and data.metrics["roc_auc"] == 0.7


def test_active_run_outside_the_artifact_root_is_refused(reg, storage, tmp_path):
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(storage.mlflow_tracking_uri)
    elsewhere = reg.client.create_experiment(
        f"{reg.model_name}_elsewhere", artifact_location=(tmp_path / "x").as_uri()
    )
    try:
        with (
            mlflow.start_run(experiment_id=elsewhere),
            pytest.raises(RegistryError, match="outside the artifact root"),
        ):
            register(reg)
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert reg.aliases() == {}
    assert not (tmp_path / "x").exists()


def test_wrong_sha256_is_refused(reg):
    rv = register(reg)
    artifact = Path(urlparse(rv.source).path) / "model.skops"
    # Replace the artifact by another valid skops model: only the sha256 tells them apart.
    skops.io.dump(fitted("tiny"), artifact)
    assert file_sha256(artifact) != rv.sha256
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        reg.load(rv.version)
    with pytest.raises(ArtifactIntegrityError):
        reg.load(alias=CHALLENGER)


def test_version_registered_outside_mlops_assets_is_refused(reg):
    rv = register(reg)
    mv = reg.client.create_model_version(reg.model_name, rv.source, run_id=rv.run_id)
    with pytest.raises(ArtifactIntegrityError, match="not registered through mlops_assets"):
        reg.load(mv.version)
    with pytest.raises(ArtifactIntegrityError):
        reg.promote(mv.version, reason="manual")
    assert reg.champion() is None


# ------------------------------------------------------------------------------------------------ promotion


def test_better_model_promoted_worse_blocked_and_champion_untouched(reg):
    Xh, yh = holdout()
    gates = GatesConfig(latency=LatencyConfig(single_row_samples=20, batch_repeats=1))
    fairness = FairnessConfig()

    v_old = register(reg, "older").version
    first = evaluate_gates(fitted("older"), Xh, yh, gates, fairness)
    # The first model only has to pass its own gates (no champion to regress against)...
    assert reg.promote_if_passed(v_old, first, reason="initial", run_id="run-1") is not None

    # ...a better challenger passes everything, including no-regression against the loaded champion.
    v_good = register(reg, "good").version
    champ = reg.load(alias=CHAMPION)
    results = evaluate_gates(
        fitted("good"), Xh, yh, gates, fairness, champion=champ.model, champion_version=champ.version
    )
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]
    d = reg.promote_if_passed(v_good, results, reason="drift", run_id="run-2")
    assert d is not None and d.version == v_good and d.previous_version == v_old
    assert reg.aliases()[CHAMPION] == v_good and reg.aliases()[PREVIOUS] == v_old

    # A worse challenger fails no-regression: not promoted, champion and previous untouched, results recorded.
    v_bad = register(reg, "older").version
    champ = reg.load(alias=CHAMPION)
    results = evaluate_gates(
        fitted("older"), Xh, yh, gates, fairness, champion=champ.model, champion_version=champ.version
    )
    failed = [r.gate for r in results if not r.passed]
    assert "no_regression" in failed
    assert reg.promote_if_passed(v_bad, results, reason="drift", run_id="run-3") is None
    assert reg.aliases()[CHAMPION] == v_good and reg.aliases()[PREVIOUS] == v_old
    assert [h.version for h in reg.history()] == [v_old, v_good]
    rec = reg.latest_gate_results()
    assert rec.version == v_bad and any(r["gate"] == "no_regression" and not r["passed"] for r in rec.results)


def test_promote_records_history_with_metrics_and_refuses_noop(reg):
    v1 = register(reg, metrics={"roc_auc": 0.61}).version
    v2 = register(reg, metrics={"roc_auc": 0.72}).version
    reg.promote(v1, reason="initial", run_id="r1")
    d2 = reg.promote(v2, reason="performance", run_id="r2", metrics={"roc_auc": 0.75})
    h = reg.history()
    assert d2 == h[-1]
    assert [(e.version, e.previous_version, e.reason, e.run_id) for e in h] == [
        (v1, None, "initial", "r1"),
        (v2, v1, "performance", "r2"),
    ]
    assert h[0].metrics == {"roc_auc": 0.61}  # defaults to the version's run metrics
    assert h[1].metrics == {"roc_auc": 0.75}
    assert h[0].deployed_at < h[1].deployed_at
    assert h[0].id < h[1].id
    champ = reg.champion()
    assert champ.version == v2 and champ.metrics == {"roc_auc": 0.72}
    with pytest.raises(PromotionError, match="already champion"):
        reg.promote(v2, reason="again")
    with pytest.raises(PromotionError, match="no gate results"):
        reg.promote_if_passed(v1, [], reason="x")
    assert len(reg.history()) == 2


def test_two_promotions_at_once_are_serialized(reg, storage, monkeypatch):
    v1, v2, v3 = (register(reg).version for _ in range(3))
    reg.promote(v1, reason="initial")

    elapsed = promote_concurrently(monkeypatch, reg.model_name, storage, (v2, v3), reason="concurrent")
    h = reg.history()
    assert len(h) == 3
    # A consistent chain: each promotion replaced exactly the champion left by the one before it.
    assert h[1].previous_version == h[0].version == v1
    assert h[2].previous_version == h[1].version
    assert {h[1].version, h[2].version} == {v2, v3}
    aliases = reg.aliases()
    assert aliases[CHAMPION] == h[2].version and aliases[PREVIOUS] == h[1].version
    assert elapsed >= 4 * 0.3  # two alias moves each, one after the other


def _hold_sqlite_lock(url: str, name: str, out) -> None:
    with DeploymentHistory(url).locked("m") as txn:
        start = time.time()
        time.sleep(0.4)
        txn.append(version=name, previous_version=None, reason="lock-test", run_id=None, metrics={})
        out.put((name, start, time.time()))


def test_sqlite_promotion_lock_serializes_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hold_sqlite_lock, args=(url, n, out)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    (_, s1, e1), (_, s2, e2) = sorted(out.get(timeout=5) for _ in procs)
    assert e1 <= s2 or e2 <= s1, "two processes held the promotion lock at once"
    assert sorted(d.version for d in DeploymentHistory(url).entries("m")) == ["a", "b"]


# ------------------------------------------------------------------------------------------------ rollback


def test_rollback_to_previous_and_to_a_given_version(reg):
    v1, v2, v3 = (register(reg).version for _ in range(3))
    reg.promote(v1, reason="initial")
    reg.promote(v2, reason="drift")
    reg.promote(v3, reason="drift")
    d = reg.rollback()
    assert (d.version, d.previous_version, d.reason) == (v2, v3, "rollback")
    assert reg.aliases()[CHAMPION] == v2 and reg.aliases()[PREVIOUS] == v3
    d = reg.rollback(to=v1)
    assert (d.version, d.previous_version) == (v1, v2)
    assert reg.champion().version == v1
    assert [e.reason for e in reg.history()] == ["initial", "drift", "drift", "rollback", "rollback"]
    with pytest.raises(PromotionError, match="already champion"):
        reg.rollback(to=v1)
    with pytest.raises(UnknownVersionError, match=r"no version 42 \(registered versions: 1, 2, 3\)"):
        reg.rollback(to=42)
    assert reg.champion().version == v1


def test_rollback_with_no_history_is_a_clear_error(reg):
    with pytest.raises(NothingToRollBackError, match="no previous champion"):
        reg.rollback()
    v1 = register(reg).version
    reg.promote(v1, reason="initial")
    with pytest.raises(NothingToRollBackError, match="no previous champion"):
        reg.rollback()
    assert reg.champion().version == v1 and len(reg.history()) == 1


# ------------------------------------------------------------------------------------------------ commands


@pytest.fixture
def config_file(reg, storage, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MLOPS_HOME", str(storage.home))
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_ARTIFACT_ROOT", "MLOPS_DEPLOYMENT_HISTORY_URL"):
        monkeypatch.delenv(var, raising=False)
    text = BUNDLED_CONFIG.read_text().replace("name: mlops_model", f"name: {reg.model_name}")
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return str(path)


def test_rollback_and_status_commands(reg, config_file, capsys):
    assert cli_main(["rollback", "--config", config_file]) == 1
    assert "no previous champion" in capsys.readouterr().err

    v1, v2 = register(reg).version, register(reg).version
    reg.promote(v1, reason="initial", run_id="run-a")
    reg.promote(v2, reason="drift", run_id="run-b")
    reg.record_gate_results(v2, [{"gate": "latency", "passed": True, "message": "latency within limits"}])

    assert cli_main(["rollback", "--config", config_file]) == 0
    assert f"champion is now version {v1} (was version {v2})" in capsys.readouterr().out
    assert cli_main(["rollback", "--config", config_file, "--to", "77"]) == 1
    assert "no version 77" in capsys.readouterr().err

    assert cli_main(["status", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert f"champion: version {v1}" in out
    assert "reason: rollback" in out and "reason: drift" in out
    assert "PASS  latency" in out
    assert "triggers now:" in out  # what the sensors' decide_retrain would say with the wall clock

    assert cli_main(["status", "--config", config_file, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["champion"]["version"] == v1
    assert [d["reason"] for d in report["deployments"]] == ["initial", "drift", "rollback"]
    assert report["latest_gate_results"]["version"] == v2
    assert set(report["triggers"]) >= {"would_retrain", "reason", "trigger", "held_by", "detail"}


def test_model_card_stored_with_the_version(reg):
    rv = register(reg)
    reg.set_model_card(rv.version, "# Model card\n\nhello")
    assert reg.get_version(rv.version).description == "# Model card\n\nhello"
    assert [a.path for a in reg.client.list_artifacts(rv.run_id, "model_cards")] == [
        f"model_cards/v{rv.version}.md"
    ]


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression", "random_forest"])
def test_project_pipeline_with_categoricals_round_trips(storage, estimator):
    """The lead's training pipeline (preprocessing inside) registers and loads with exactly its own trusted types."""
    from sklego.datasets import load_arrests

    from mlops_assets.config import load_config
    from mlops_assets.training.pipeline import build_pipeline

    df = load_arrests(as_frame=True)
    X, y = df.drop(columns="released"), (df["released"] == "Yes").astype(int)
    cfg = load_config(BUNDLED_CONFIG)
    params = {"n_estimators": 5} if estimator == "random_forest" else {"max_iter": 20}
    cfg = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"estimator": estimator, "params": params})}
    )
    pipe = build_pipeline(cfg, ["year", "age", "checks"], ["colour", "sex", "employed", "citizen"]).fit(X, y)
    reg = ModelRegistry(f"project_{estimator}", storage)
    rv = reg.register(pipe, input_example=X.head(3))
    assert rv.trusted_types == sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipe)))
    np.testing.assert_allclose(reg.load(rv.version).model.predict_proba(X), pipe.predict_proba(X))
