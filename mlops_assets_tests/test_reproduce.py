"""Provenance and ``mlops-assets reproduce``: a version records what made it, and is rebuilt from that through the
product's own training step; a rewritten or missing partition, changed training code, or a version that recorded
nothing is refused with the reason. (The second real dataset's rebuild is in ``test_second_dataset``.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets import provenance
from mlops_assets.commands import reproduce as reproduce_cmd
from mlops_assets.commands.gc import gc
from mlops_assets.commands.reproduce import CannotReproduceError, reproduce
from mlops_assets.config import RetentionConfig, load_config
from mlops_assets.defs.factory import build_model_defs
from mlops_assets.features.stores import offline_store
from mlops_assets.registry.model_registry import ModelRegistry
from mlops_assets.runner import execute
from mlops_assets.storage import storage_from_env
from mlops_assets_tests.conftest import module_home, use_home, write_slice
from mlops_assets_tests.support import toy_versions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture(scope="module")
def trained(rainfall, migrated_mlflow_db, tmp_path_factory):
    """A project in a git checkout (config and data committed), one `run` on three years of the bundled data.
    Yields (config path, home, commit)."""
    folder = tmp_path_factory.mktemp("reproduce")
    with module_home(folder, migrated_mlflow_db) as home:
        path, _ = write_slice(folder, rainfall, years=3, name="rebuilt")
        _git(folder, "init", "-q")
        _git(folder, "add", path.name, "rebuilt.csv")
        _git(folder, "commit", "-q", "-m", "project")
        outcome = execute(
            load_config(path),
            config_file=str(path),
            storage=storage_from_env().ensure(),
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert outcome.status == "ok", outcome.error
        yield path, home, _git(folder, "rev-parse", "HEAD")


@pytest.fixture
def project(trained, monkeypatch):
    path, home, commit = trained
    use_home(monkeypatch, home)
    cfg = load_config(path)
    return cfg, storage_from_env(), commit


def test_a_version_records_what_made_it(project):
    cfg, storage, commit = project
    reg = ModelRegistry.from_config(cfg, storage)
    made_of = provenance.Provenance.from_dict(reg.load_json("1", provenance.ARTIFACT))
    windows = made_of.windows
    assert windows["holdout"] and windows["train"] and windows["refit"]
    # Every partition of every window has its data version, and nothing else does.
    assert set(made_of.data_versions) == {k for keys in windows.values() for k in keys}
    # ... and the digest of the offline-store file it was read from (what a rewrite keeps as a snapshot).
    assert made_of.data_files == offline_store(cfg, storage).file_digests(sorted(made_of.data_versions))
    assert made_of.git == {"commit": commit, "dirty": False}
    assert made_of.code_files == provenance.code_files()
    assert made_of.config == provenance.resolved_config(cfg)
    assert made_of.packages["scikit-learn"] == __import__("sklearn").__version__
    assert made_of.random_state == cfg.model.random_state == 0
    # Dagster knows the same code version: trained_model's, which the UI compares with its materializations'.
    graph = build_model_defs(cfg, config_path=None).resolve_asset_graph()
    key = dg.AssetKey([cfg.model.name, "trained_model"])
    assert graph.get(key).code_version == made_of.code_version
    tags = reg.get_version("1").tags
    assert tags[provenance.TAG_GIT_COMMIT] == commit and tags[provenance.TAG_GIT_DIRTY] == "false"
    assert tags[provenance.TAG_CODE_VERSION] == made_of.code_version
    assert tags[provenance.TAG_CONFIG_SHA] == provenance.config_sha256(made_of.config)


def test_reproduce_check_rebuilds_an_identical_model(trained):
    path, home, _ = trained
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(home), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "reproduce", "1", "--check", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "rebuilt version 1 rebuilt: IDENTICAL"
    assert "predictions on the" in lines[1] and lines[1].endswith("holdout rows: identical")
    assert re.fullmatch(r"  holdout metrics: (\d+) of \1 identical", lines[2]), lines[2]
    assert proc.stderr == ""


def _rewrite(store, key: str, bump: float) -> None:
    """``key`` written again through the store, as a new ingestion would, one value of one row changed."""
    frame = store.read([key])
    frame.loc[frame.index[3], "temperature"] += bump
    store.write_partition(key, frame)


@pytest.fixture
def store(project):
    """The module's offline store; the month the tests rewrite (1951-05) and the snapshots are restored after."""
    cfg, storage, _ = project
    store = offline_store(cfg, storage)
    target = store.root / "1951-05.parquet"
    kept = target.read_bytes()
    yield store
    target.write_bytes(kept)
    for _, _, path in store.snapshots():
        path.unlink()


def test_a_rewritten_partition_is_read_from_its_snapshot_and_gc_keeps_what_the_champion_needs(project, store):
    cfg, storage, _ = project
    _rewrite(store, "1951-05", 1.0)
    _rewrite(store, "1951-05", 2.0)  # the first rewrite's bytes: a snapshot no version needs
    assert len(store.snapshots()) == 2
    rebuilt = reproduce(cfg, storage, "1")
    assert rebuilt.identical, rebuilt.summary()

    # No retention beyond what must stay: the champion's snapshot stays, the other goes.
    bare = cfg.model_copy(update={"retention": RetentionConfig(keep_versions=0)})
    planned = gc(bare, storage, dry_run=True)
    assert planned.kept_for == ["1"] and planned.kept == 1 and len(planned.removed) == 1
    assert len(store.snapshots()) == 2  # a dry run removes nothing
    done = gc(bare, storage)
    assert done.removed == planned.removed and done.freed_bytes > 0
    [(key, digest, _)] = store.snapshots()
    made_of = provenance.Provenance.from_dict(
        ModelRegistry.from_config(cfg, storage).load_json("1", provenance.ARTIFACT)
    )
    assert (key, digest) == ("1951-05", made_of.data_files["1951-05"])


def test_a_rewrite_whose_snapshot_is_gone_is_refused_by_name(project, store):
    cfg, storage, _ = project
    _rewrite(store, "1951-05", 1.0)
    for _, _, path in store.snapshots():
        path.unlink()  # as a gc of a version not kept would
    with pytest.raises(CannotReproduceError, match=r"no snapshot kept: 1951-05\)"):
        reproduce(cfg, storage, "1")


def test_a_partition_removed_outside_the_store_is_refused_by_name(project):
    cfg, storage, _ = project
    target = offline_store(cfg, storage).root / "1950-02.parquet"
    aside = target.with_suffix(".aside")
    target.rename(aside)
    try:
        with pytest.raises(CannotReproduceError, match=r"no snapshot kept: 1950-02\)"):
            reproduce(cfg, storage, "1")
    finally:
        aside.rename(target)


def test_changed_training_code_is_refused_naming_the_file_and_the_commit(project, monkeypatch):
    cfg, storage, commit = project
    real = provenance.code_files()
    changed = {**real, "mlops_assets/training/pipeline.py": "0" * 16}
    monkeypatch.setattr(provenance, "code_files", lambda: changed)
    with pytest.raises(CannotReproduceError) as err:
        reproduce(cfg, storage, "1")
    assert "mlops_assets/training/pipeline.py" in str(err.value)
    assert f"check out commit {commit}" in str(err.value)
    assert reproduce_cmd.code_differences(
        provenance.Provenance.from_dict(ModelRegistry.from_config(cfg, storage).load_json("1", "provenance"))
    ) == ["mlops_assets/training/pipeline.py"]


def test_a_version_that_recorded_nothing_is_refused(project):
    cfg, storage, _ = project
    reg = ModelRegistry.from_config(cfg, storage)
    (toy,) = toy_versions(reg, 1)
    with pytest.raises(CannotReproduceError, match=rf"version {toy} has no provenance.json"):
        reproduce(cfg, storage, toy)
    # gc keeps it among the newest versions and finds no snapshot it needs.
    planned = gc(cfg, storage, dry_run=True)
    assert planned.kept_for == ["1", toy] and planned.removed == []


def test_the_recorded_config_keeps_no_password(project):
    cfg, _, _ = project
    url = "postgresql://reader:s3cret-pw@db.example.org:5432/warehouse"
    with_db = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"source": url})})
    recorded = provenance.resolved_config(with_db)
    assert recorded["dataset"]["source"] == "postgresql://reader:***@db.example.org:5432/warehouse"
    assert "s3cret-pw" not in str(recorded)


def test_a_rebuild_that_differs_is_reported_and_check_exits_1(project, monkeypatch, capsys):
    """The comparison is real: rebuilt with another recipe (as if the recorded config had said 5 boosting
    iterations), the predictions and metrics differ, the summary says DIFFERENT and `--check` exits 1."""
    import argparse

    cfg, storage, _ = project
    real = reproduce_cmd.recorded_config

    def other_recipe(prov, current):
        recorded = real(prov, current)
        model = recorded.model.model_copy(update={"params": {**recorded.model.params, "max_iter": 5}})
        return recorded.model_copy(update={"model": model})

    monkeypatch.setattr(reproduce_cmd, "recorded_config", other_recipe)
    rebuilt = reproduce(cfg, storage, "1")
    assert not rebuilt.identical and rebuilt.max_prediction_diff > 0 and rebuilt.metric_diffs
    assert rebuilt.summary()[0].endswith("rebuilt: DIFFERENT")
    args = argparse.Namespace(
        config=str(cfg.source_dir / "rebuilt.yaml"), version="1", check=True, json=False
    )
    assert reproduce_cmd.main(args) == 1
    assert "DIFFERENT" in capsys.readouterr().out


def test_gc_removes_the_prediction_log_past_its_retention_and_never_the_running_shadows_answers(project):
    from datetime import UTC, datetime, timedelta

    from mlops_assets.serving.prediction_log import PredictionLog, shadow_predictions

    cfg, storage, _ = project
    now = datetime.now(UTC)
    old = now - timedelta(days=40)

    def row(pid: str, at: datetime, model: str = cfg.model.name) -> dict:
        return {
            "id": pid,
            "predicted_at": at,
            "event_time": at,
            "model_name": model,
            "model_version": "1",
            "inputs": {"x": 1.0},
            "prediction": 0,
            "probability": 0.1,
        }

    log = PredictionLog(storage.prediction_log_url)
    log.submit([row(f"old{i}", old) for i in range(5)] + [row(f"new{i}", now) for i in range(3)])
    log.submit([row("other-model-old", old, model="another_model")])
    log.close()
    registry = ModelRegistry.from_config(cfg, storage)
    running = registry.start_shadow("1", reason="manual")
    answers = PredictionLog(storage.prediction_log_url, table=shadow_predictions)

    def answer(pid: str, version: str) -> dict:
        return {
            "id": pid,
            "predicted_at": old,
            "model_name": cfg.model.name,
            "model_version": version,
            "champion_version": "1",
            "prediction": 0,
            "probability": 0.2,
            "latency_ms": 1.0,
            "champion_latency_ms": 1.0,
            "error": None,
        }

    # old0 and old1 were scored by the running shadow; old2 by an earlier one.
    answers.submit([answer("old0", "1"), answer("old1", "1"), answer("old2", "9")])
    answers.close()
    try:
        forever = gc(cfg, storage, dry_run=True)
        assert forever.log_cutoff is None and "kept for ever" in forever.summary()[-1]

        kept30 = cfg.model_copy(update={"retention": RetentionConfig(prediction_log_days=30)})
        planned = gc(kept30, storage, dry_run=True)
        assert planned.log_removed == (3, 1), planned.summary()
        assert "would remove 3 prediction(s) and 1 shadow answer(s)" in planned.summary()[-1]
        assert gc(kept30, storage).log_removed == (3, 1)
        reader = PredictionLog(storage.prediction_log_url)
        left = {r.id for r in reader.records()}
        reader.close()
        assert left >= {"old0", "old1", "new0", "new1", "new2", "other-model-old"}
        assert not left & {"old2", "old3", "old4"}
        assert gc(kept30, storage).log_removed == (0, 0)
    finally:
        registry.end_shadow(running, "refused", {"passed": False, "message": "test"})
