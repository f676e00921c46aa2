"""The served model and hot swap.

:class:`ServedModel` is one verified champion version, ready to predict: its pipeline, its input columns split into
raw columns (sent with each event) and window features (completed from the online store), and the request schema.

:class:`ModelSlot` holds the current :class:`ServedModel`. A request batch reads the slot once and uses that object
for the whole batch, and :class:`ChampionWatcher` replaces it with one reference assignment (atomic in Python), so a
request never sees a half-loaded model and every response names the version that produced it.

The watcher polls the registry's ``champion`` alias in its own thread. When the alias moves it loads the version
through the registry's verified path (sha256 + recorded trusted types), checks that the feature code version
recorded with the model equals the online store's, warms the model up with one prediction, and only then swaps. A
version that fails any of this is refused with a log line saying why, and the service keeps the model it has.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets.registry.tags import TAG_DECISION_THRESHOLD
from mlops_assets.serving.validation import EARLIEST, InputSchema

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig
    from mlops_assets.registry.model_registry import LoadedModel

log = logging.getLogger("mlops_assets.serving")

TAG_FEATURE_VERSION = "mlops.feature_version"  # as written by ModelRegistry.register


class ModelRefusedError(RuntimeError):
    """A champion version the service will not serve; the message says why."""


@dataclass(frozen=True)
class ServedModel:
    """One champion version, verified and ready."""

    pipeline: Any
    model_name: str
    version: str
    feature_version: str | None
    columns: tuple[str, ...]  # the pipeline's input columns, in order
    window_features: tuple[str, ...]  # of those, the ones completed from the online store
    schema: InputSchema
    loaded_at: float
    # The final estimator when the preprocessing step provably passes the columns through unchanged (checked at
    # load time on a probe): predicting on a float matrix then skips ~1 ms of DataFrame handling per call.
    fast_estimator: Any = None
    # Predict the positive class when its probability reaches this (the threshold chosen at training and recorded
    # with the version; 0.5 for versions registered before thresholds were recorded).
    threshold: float = 0.5

    @property
    def numeric_only(self) -> bool:
        return not self.schema.categorical

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class (positive when its probability reaches :attr:`threshold`) and the positive-class
        probability."""
        return self._result(self.pipeline.predict_proba(X[list(self.columns)]))

    def predict_matrix(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Same as :meth:`predict` for a float matrix whose columns are :attr:`columns` (numeric models)."""
        if self.fast_estimator is not None:
            return self._result(self.fast_estimator.predict_proba(M))
        return self.predict(pd.DataFrame(M, columns=list(self.columns)))

    def _result(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positive = proba[:, 1]
        pred = self.pipeline.classes_[(positive >= self.threshold).astype(np.int64)]
        return pred, positive


def _column_kinds(pipeline: Any, columns: list[str]) -> tuple[set[str], set[str]]:
    """Numeric and categorical input columns, read from the pipeline's ColumnTransformer (``num`` / ``cat``)."""
    numeric, categorical = set(), set()
    pre = getattr(pipeline, "named_steps", {}).get("preprocess")
    for name, _, cols in getattr(pre, "transformers_", []) or []:
        if name == "cat":
            categorical.update(cols)
        elif name == "num":
            numeric.update(cols)
    # Anything not declared categorical is a number (the training code sends every non-numeric column to "cat").
    numeric.update(c for c in columns if c not in categorical)
    return numeric, categorical


def build_served_model(cfg: MlopsConfig, loaded: LoadedModel, window_feature_names: list[str]) -> ServedModel:
    """A :class:`ServedModel` from a registry ``LoadedModel``; ``window_feature_names`` are the config's window
    features (the model's other inputs are raw columns that each event row carries)."""
    pipeline = loaded.model
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:
        raise ModelRefusedError(
            f"model '{loaded.model_name}' version {loaded.version}: the pipeline records no input column names "
            "(it was not fitted on a DataFrame); the service needs them to build its input schema"
        )
    columns = [str(c) for c in names]
    window = [c for c in columns if c in set(window_feature_names)]
    raw = [c for c in columns if c not in set(window)]
    numeric, categorical = _column_kinds(pipeline, raw)
    ds = cfg.dataset
    reserved = {ds.timestamp_column, *ds.entity_columns}
    bad = [c for c in raw if c in reserved or c == ds.label_column]
    if bad:
        raise ModelRefusedError(
            f"model '{loaded.model_name}' version {loaded.version}: input columns {bad} are the timestamp, an "
            "entity key or the label"
        )
    from mlops_assets.features import feature_registry

    defs = feature_registry(cfg)
    sources = {d.source for d in defs}
    # The engine reads back a window (and a TTL) from each event time: the earliest accepted time leaves room for
    # the longest of them inside datetime64[ns].
    reach = max((pd.Timedelta(d.window) + pd.Timedelta(d.ttl) for d in defs), default=pd.Timedelta(0))
    earliest = max(EARLIEST, (pd.Timestamp.min + reach).ceil("D").tz_localize("UTC").to_pydatetime())
    schema = InputSchema(
        earliest=earliest,
        timestamp=ds.timestamp_column,
        entities=tuple(ds.entity_columns),
        numeric=tuple(c for c in raw if c in numeric),
        categorical=tuple(c for c in raw if c in categorical),
        label=ds.label_column,
        ignored=frozenset((set(ds.drop_columns) | sources) - set(raw) - {ds.label_column}),
    )
    model = ServedModel(
        pipeline=pipeline,
        model_name=loaded.model_name,
        version=str(loaded.version),
        feature_version=loaded.tags.get(TAG_FEATURE_VERSION),
        columns=tuple(columns),
        window_features=tuple(window),
        schema=schema,
        loaded_at=time.time(),
        threshold=float(loaded.tags.get(TAG_DECISION_THRESHOLD) or 0.5),
    )
    fast = _passthrough_estimator(model)
    return model if fast is None else dataclasses.replace(model, fast_estimator=fast)


def _passthrough_estimator(model: ServedModel) -> Any:
    """The final estimator if the pipeline is (column-passthrough preprocessing, estimator) and gives bit-identical
    probabilities on a probe with missing values, else None."""
    steps = getattr(model.pipeline, "steps", None)
    if not model.numeric_only or not steps or len(steps) != 2:
        return None
    pre, est = steps[0][1], steps[1][1]
    from sklearn.preprocessing import FunctionTransformer

    for _name, trans, cols in getattr(pre, "transformers_", [("?", "?", ["?"])]):
        # A fitted "passthrough" is an identity FunctionTransformer (func None).
        identity = trans in ("passthrough", "drop") or (
            isinstance(trans, FunctionTransformer) and trans.func is None
        )
        if not identity and len(cols):
            return None
    try:
        if list(pre.get_feature_names_out()) != list(model.columns):
            return None
    except (AttributeError, ValueError):
        return None
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(64, len(model.columns)))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    reference = model.pipeline.predict_proba(pd.DataFrame(probe, columns=list(model.columns)))
    return est if np.array_equal(est.predict_proba(probe), reference, equal_nan=True) else None


class ModelSlot:
    """The current model; ``None`` until a champion has been loaded."""

    def __init__(self) -> None:
        self.current: ServedModel | None = None
        self.refusal: str | None = None  # why the latest champion is not served, if it is not


class ChampionWatcher:
    """Polls the champion alias and hot-swaps the served model off the request path.

    ``load_version(version) -> ServedModel`` does the verified load and every check, raising
    :class:`ModelRefusedError` (or a registry error) to refuse; ``on_swap(new, replaced)`` / ``on_refuse`` report
    to metrics (and start a probation).
    """

    def __init__(
        self,
        slot: ModelSlot,
        champion_version: Callable[[], str | None],
        load_version: Callable[[str], ServedModel],
        *,
        poll_interval: float = 2.0,
        on_swap: Callable[[ServedModel, ServedModel | None], None] | None = None,
        on_refuse: Callable[[str, str], None] | None = None,
    ):
        self.slot = slot
        self.champion_version = champion_version
        self.load_version = load_version
        self.poll_interval = poll_interval
        self.on_swap = on_swap
        self.on_refuse = on_refuse
        self._seen: str | None = None  # the alias target handled last (served or refused)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None

    def check_once(self) -> bool:
        """Look at the alias once; swap if it moved to a loadable version. Returns True on a swap."""
        target = self.champion_version()
        if target is None:
            if self._seen is None and self.slot.current is None:
                self.slot.refusal = "the registered model has no 'champion' version yet"
            return False
        if target == self._seen:
            return False
        self._seen = target
        current = self.slot.current
        if current is not None and current.version == target:
            return False
        try:
            model = self.load_version(target)
        except ModelRefusedError as err:
            self._refuse(target, str(err))
            return False
        except Exception as err:  # a registry/IO failure: logged, reported, retried at the next alias move
            self._refuse(target, f"{type(err).__name__}: {err}")
            return False
        self.slot.current = model  # the swap: one reference assignment
        self.slot.refusal = None
        log.info(
            "serving model '%s' version %s (was %s)",
            model.model_name,
            model.version,
            current.version if current else "none",
        )
        if self.on_swap:
            self.on_swap(model, current)
        return True

    def _refuse(self, version: str, why: str) -> None:
        msg = f"refusing champion version {version}: {why}"
        if self.slot.current is not None:
            msg += f"; still serving version {self.slot.current.version}"
        log.error(msg)
        self.slot.refusal = msg
        if self.on_refuse:
            self.on_refuse(version, why)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.check_once()
            except Exception as err:  # the registry is unreachable: log it and poll again
                self.last_error = err
                log.error("champion watcher: cannot read the champion alias: %s: %s", type(err).__name__, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
