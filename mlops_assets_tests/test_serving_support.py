"""Shared set-up of the serving tests: a small HistGradientBoosting model trained on the bundled rainfall data,
registered through the registry module, an online store materialized with the recent events, and a real uvicorn
server on a free loopback port. (Also holds a test of that set-up's own offline path.)"""

from __future__ import annotations

import functools
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlops_assets.config import BUNDLED_CONFIG, MlopsConfig, parse_config
from mlops_assets.storage import Storage, storage_from_env
from mlops_assets_tests.support import gate_passed

# The online store keeps 400 days, so the last year of the data can be scored as of each day.
RETENTION = pd.Timedelta("400D")
SCORED_DAYS = 300


def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll ``predicate`` every 50 ms until it is true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def storage_for(home: Path) -> Storage:
    """Everything under ``home``: MLflow (SQLite + artifacts), online store, prediction log, history."""
    return storage_from_env({"MLOPS_HOME": str(home)}).ensure()


@dataclass
class Trained:
    cfg: MlopsConfig
    raw: pd.DataFrame  # the source rows (timestamp column tz-aware UTC)
    features: pd.DataFrame  # compute_features of all rows
    columns: list[str]  # model inputs
    pipelines: dict[int, object]  # max_iter -> fitted pipeline


@functools.lru_cache(maxsize=1)
def trained() -> Trained:
    """Train (once per test process) two small pipelines on the rainfall data: max_iter 25 and 40."""
    from mlops_assets.data.sources import read_source
    from mlops_assets.features import compute_features, model_feature_columns
    from mlops_assets.training.pipeline import binary_labels, build_pipeline

    cfg, _ = _config_only()
    raw = read_source(cfg)
    feats = compute_features(cfg, raw)
    columns = model_feature_columns(cfg, list(feats.columns))
    y = binary_labels(feats[cfg.dataset.label_column], cfg.dataset.positive_label)
    train = feats[cfg.dataset.timestamp_column] < raw[cfg.dataset.timestamp_column].max() - pd.Timedelta(
        "400D"
    )
    pipelines = {}
    for max_iter in (25, 40):
        c = cfg.model_copy(update={"model": cfg.model.model_copy(update={"params": {"max_iter": max_iter}})})
        p = build_pipeline(c, columns, [])
        p.fit(feats.loc[train, columns], y[train.to_numpy()])
        pipelines[max_iter] = p
    return Trained(cfg, raw, feats, columns, pipelines)


def _config_only() -> tuple[MlopsConfig, dict]:
    data = yaml.safe_load(BUNDLED_CONFIG.read_text())
    data["features"]["online_retention"] = "400D"
    return parse_config(data, origin=BUNDLED_CONFIG, source_dir=BUNDLED_CONFIG.parent), data


def write_config(tmp: Path) -> Path:
    _, data = _config_only()
    path = tmp / "mlops.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def register(
    storage: Storage,
    max_iter: int,
    *,
    promote: bool = True,
    feature_version: str | None = None,
    pipeline: object | None = None,
) -> str:
    """Register the pipeline trained with ``max_iter`` (or ``pipeline``) through the registry API; promote it to
    champion."""
    from mlops_assets.features import features_code_version
    from mlops_assets.registry.model_registry import ModelRegistry

    t = trained()
    reg = ModelRegistry(t.cfg.model.name, storage)
    rv = reg.register(
        pipeline if pipeline is not None else t.pipelines[max_iter],
        input_example=t.features[t.columns].head(3),
        metrics={"holdout_roc_auc": 0.8},
        feature_version=feature_version or features_code_version(t.cfg),
    )
    gate_passed(reg, rv.version)  # as if the pipeline had gated it: the guard and the service require it
    if promote:
        reg.promote(rv.version, reason="manual")
    return rv.version


class SlowClassifier:
    """A fitted classifier that sleeps ``delay`` seconds in every predict call and then answers as ``inner``: a
    champion whose latency went bad. Registered like any model (skops records this type as trusted)."""

    def __init__(self, inner: object, delay: float = 0.2):
        self.inner = inner
        self.delay = delay
        self.feature_names_in_ = inner.feature_names_in_  # type: ignore[attr-defined]
        self.classes_ = inner.classes_  # type: ignore[attr-defined]

    def get_params(self, deep: bool = True) -> dict:
        return {"inner": self.inner, "delay": self.delay}

    def predict_proba(self, X):
        time.sleep(self.delay)
        return self.inner.predict_proba(X)  # type: ignore[attr-defined]

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


class InvertedClassifier:
    """A fitted classifier that answers as fast as ``inner`` with its probabilities turned around: a champion that
    passed its gates and whose predictions turn out wrong once labels come back."""

    def __init__(self, inner: object):
        self.inner = inner
        self.feature_names_in_ = inner.feature_names_in_  # type: ignore[attr-defined]
        self.classes_ = inner.classes_  # type: ignore[attr-defined]

    def get_params(self, deep: bool = True) -> dict:
        return {"inner": self.inner}

    def predict_proba(self, X):
        return self.inner.predict_proba(X)[:, ::-1]  # type: ignore[attr-defined]

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class FailingClassifier:
    """A fitted classifier that answers as ``inner`` until the file ``switch`` exists, then raises in every predict
    call: a champion that went bad once it served (it loads, warms up and answers first)."""

    def __init__(self, inner: object, switch: str):
        self.inner = inner
        self.switch = switch
        self.feature_names_in_ = inner.feature_names_in_  # type: ignore[attr-defined]
        self.classes_ = inner.classes_  # type: ignore[attr-defined]

    def get_params(self, deep: bool = True) -> dict:
        return {"inner": self.inner, "switch": self.switch}

    def predict_proba(self, X):
        if Path(self.switch).exists():
            raise RuntimeError("the model's backend is gone")
        return self.inner.predict_proba(X)  # type: ignore[attr-defined]

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def materialize_online(storage: Storage) -> None:
    """The online store with the events of the last 430 days (the retention plus the longest window)."""
    from mlops_assets.features.stores import online_store

    t = trained()
    ts = t.cfg.dataset.timestamp_column
    recent = t.raw[t.raw[ts] >= t.raw[ts].max() - RETENTION - pd.Timedelta("30D")]
    online_store(t.cfg, storage).materialize(t.cfg, recent)


def scored_rows(n: int = SCORED_DAYS) -> pd.DataFrame:
    """The last ``n`` days as raw event rows (label removed)."""
    t = trained()
    return t.raw.tail(n).drop(columns=[t.cfg.dataset.label_column]).reset_index(drop=True)


def offline_predictions(max_iter: int, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What the model predicts offline for ``rows``: features from compute_features over the whole data."""
    t = trained()
    ts = t.cfg.dataset.timestamp_column
    X = t.features.set_index(ts).loc[rows[ts], t.columns]
    p = t.pipelines[max_iter]
    return p.predict(X), p.predict_proba(X)[:, 1]


def row_json(rows: pd.DataFrame, ts_col: str) -> list[dict]:
    out = []
    for rec in rows.to_dict("records"):
        rec[ts_col] = pd.Timestamp(rec[ts_col]).isoformat()
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------- a live server
class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port, in a thread of the test process (``http``: uvicorn's
    protocol setting, e.g. ``mlops-assets serve``'s own :func:`~mlops_assets.serving.server.http_protocol`)."""

    def __init__(self, app, http: object = "auto"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", http=http)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start within 60 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def test_offline_path_scores_the_last_year_with_both_classes():
    """The fixture's own sanity: the rows the HTTP tests score hold both classes and get finite probabilities."""
    t = trained()
    rows = scored_rows()
    pred, proba = offline_predictions(25, rows)
    labels = t.raw.tail(SCORED_DAYS)[t.cfg.dataset.label_column]
    assert set(labels.unique()) == {0, 1}
    assert np.isfinite(proba).all() and len(pred) == SCORED_DAYS
    assert not np.array_equal(offline_predictions(40, rows)[1], proba)  # the two versions differ
