"""Train a challenger on the offline store, put it through the release gates, and register it.

Three pieces, so each caller takes what it needs: :func:`load_training_data` (which partitions, which rows),
:func:`train_challenger` (fit, decision threshold, gates, refit, reference profile, plots: no registry, no MLflow)
and :func:`register_challenger` (MLflow version, gate record, model card). :func:`train_and_gate` is the three in a
row, what ``trained_model`` runs.

The gates judge the training *recipe* on the holdout; with ``model.refit`` (the default) the model that is
registered and deployed is the same recipe fitted again on the window ending at the newest labeled partition, so a
champion is never older than its data. Each registered version records the window it was fitted on
(:data:`TAG_TRAINED_WINDOW`) and its decision threshold (:data:`TAG_DECISION_THRESHOLD`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_assets import progress
from mlops_assets.catalogue import GateResult
from mlops_assets.config import MlopsConfig
from mlops_assets.data.partitions import key_window, row_keys
from mlops_assets.lineage import content_version
from mlops_assets.registry.tags import TAG_DECISION_THRESHOLD, TAG_TRAINED_WINDOW

if TYPE_CHECKING:
    from mlops_assets.features.offline import OfflineStore
    from mlops_assets.monitoring.profile import Profile
    from mlops_assets.provenance import Provenance
    from mlops_assets.registry.model_registry import ModelRegistry
    from mlops_assets.training.pipeline import Backtest, Split, TrainedModel
    from mlops_assets.training.threshold import ThresholdChoice

PARTITION = "__partition__"
# What a version was trained from: the rows of its windows, the feature definitions and the training recipe. A run
# whose fingerprint equals the champion's has nothing new to learn (see :func:`train_and_gate`).
TAG_TRAINING_FINGERPRINT = "mlops.training_fingerprint"


class TrainingDataError(RuntimeError):
    """The offline store holds nothing to train on; the message says what to materialize."""


class TrainingWaitingError(TrainingDataError):
    """Not enough labeled data yet for the configured windows, or a window with one class only: training waits
    (the message starts with ``waiting:`` and says for what) and proceeds once the data exists."""


@dataclass
class TrainingData:
    """The rows of the split's windows, each with its partition key, and the columns the model reads."""

    frame: pd.DataFrame
    split: Split
    numeric: list[str]
    categorical: list[str]
    newest_partition: str | None  # the newest partition the offline store holds rows for
    refit_window: list[str] = field(default_factory=list)  # what a refit is fitted on (model.refit)
    # partition -> digest of the offline-store file it was read from (a Parquet store; see OfflineStore.pinned)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


@dataclass
class Challenger:
    """A fitted challenger and everything the gates measured, before anything is registered."""

    model: TrainedModel  # the evaluated model: fitted on the split's training window, judged on its holdout
    gates: list[GateResult]
    metrics: dict[str, float]  # the evaluated model's holdout metrics, label metrics at ``threshold``
    profile: Profile  # of the deployed model's training rows
    plots: dict[str, bytes]
    holdout: pd.DataFrame  # the holdout's feature columns (an input example comes from it)
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    threshold: ThresholdChoice | None = None
    refit: TrainedModel | None = (
        None  # the same recipe on the refit window, when model.refit and the gates passed
    )
    # With model.refit: what the gates judged, per holdout fold (see :func:`backtest`)
    backtest: list[dict[str, str]] | None = None

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def deployed(self) -> TrainedModel:
        """The model to register and deploy: the refit when there is one."""
        return self.refit if self.refit is not None else self.model

    @property
    def trained_window(self) -> tuple[str, str]:
        """First and last partition the deployed model was fitted on."""
        keys = self.deployed.split.train
        return keys[0], keys[-1]


@dataclass
class TrainOutcome:
    """A registered challenger: its MLflow version, gates and evidence."""

    version: str
    mlflow_run_id: str
    sha256: str
    metrics: dict[str, float]
    split: dict[str, Any]
    feature_version: str
    champion_version: str | None
    gates: list[GateResult]
    model_card: str
    training_data_version: str
    plots: dict[str, bytes] = field(default_factory=dict)  # artifact name -> PNG (e.g. plots/roc_curve.png)
    provenance: Provenance | None = None  # what it was made from (mlops_assets.provenance)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def load_training_data(cfg: MlopsConfig, store: OfflineStore) -> TrainingData:
    """Which partitions hold labeled rows (two columns read), the windows over them (:func:`plan_windows`), and
    then whole rows for those windows only; without a training window (``model.train_window_partitions`` null),
    whole rows read once."""
    from mlops_assets.monitoring.state import newest_partition

    progress.step("trained_model", "reading the offline store")
    ts_col, label = cfg.dataset.timestamp_column, cfg.dataset.label_column
    if cfg.model.train_window_partitions is None:
        # No training window: the windows span every labeled partition, so one read of whole rows serves both the
        # plan and the training (a second read would fetch nearly the whole store again).
        frame = store.read()
        if frame.empty:
            raise TrainingDataError("the offline store is empty: materialize features first")
        keys = row_keys(frame[ts_col], cfg.partitions.freq)
        split, refit_keys = plan_windows(cfg, frame[ts_col], frame[label])
        windows = {*split.train, *split.validation, *split.holdout, *refit_keys}
        wanted = keys.isin(windows).to_numpy()
        if not wanted.all():
            frame = frame[wanted].reset_index(drop=True)
        data = _training_data(cfg, frame, split, refit_keys, newest_partition(keys.unique()))
        # The files of the windows only (the provenance checks the rows it read against these, see reproduce).
        data.files = store.file_digests(sorted(windows))
        return data
    labels = store.read(columns=[ts_col, label])
    if labels.empty:
        raise TrainingDataError("the offline store is empty: materialize features first")
    newest = newest_partition(row_keys(labels[ts_col], cfg.partitions.freq).unique())
    split, refit_keys = plan_windows(cfg, labels[ts_col], labels[label])
    del labels
    wanted_keys = sorted({*split.train, *split.validation, *split.holdout, *refit_keys})
    digests = store.file_digests(wanted_keys)
    frame = store.read(wanted_keys)
    data = _training_data(cfg, frame, split, refit_keys, newest)
    data.files = digests
    return data


def training_data_from_frame(cfg: MlopsConfig, frame: pd.DataFrame) -> TrainingData:
    """:class:`TrainingData` from feature rows already in memory (the same windows as :func:`load_training_data`;
    rows outside them are dropped): for callers that hold the data, such as tests and notebooks."""
    from mlops_assets.monitoring.state import newest_partition

    ts_col, label = cfg.dataset.timestamp_column, cfg.dataset.label_column
    keys = row_keys(frame[ts_col], cfg.partitions.freq)
    split, refit_keys = plan_windows(cfg, frame[ts_col], frame[label])
    rows = frame[keys.isin({*split.train, *split.validation, *split.holdout, *refit_keys})]
    return _training_data(cfg, rows, split, refit_keys, newest_partition(keys.unique()))


def plan_windows(cfg: MlopsConfig, timestamps: pd.Series, labels: pd.Series) -> tuple[Split, list[str]]:
    """The time split and the refit window (empty when ``model.refit`` is off) over the labeled partitions.

    Raises :class:`TrainingWaitingError` while the labeled partitions are fewer than the windows need, or while
    the training or holdout window holds one class only (a rare outcome that became possible only lately).
    """
    from mlops_assets.training.pipeline import TrainingError, binary_labels, refit_window, time_split

    labeled = labels.notna().to_numpy()
    keys = row_keys(timestamps, cfg.partitions.freq).to_numpy()[labeled]
    try:
        split = time_split(pd.unique(keys).tolist(), cfg)
    except TrainingError as err:
        raise TrainingWaitingError(f"waiting: {err}") from None
    positive = binary_labels(labels[labeled], cfg.dataset.positive_label)
    for name, window in (("training", split.train), ("holdout", split.holdout)):
        classes = np.unique(positive[np.isin(keys, window)])
        if len(classes) < 2:
            only = "positive" if classes.tolist() == [1] else "negative"
            raise TrainingWaitingError(
                f"waiting: the {name} window {window[0]}..{window[-1]} has one class ({only} labels only); "
                "training proceeds once both classes exist in the training and holdout windows"
            )
    refit_keys = refit_window(pd.unique(keys).tolist(), cfg) if cfg.model.refit else []
    return split, refit_keys


def _training_data(
    cfg: MlopsConfig, frame: pd.DataFrame, split: Split, refit_keys: list[str], newest: str | None
) -> TrainingData:
    from mlops_assets.features import model_feature_columns

    frame = frame.assign(**{PARTITION: row_keys(frame[cfg.dataset.timestamp_column], cfg.partitions.freq)})
    # The partition key is bookkeeping, not a model input.
    columns = model_feature_columns(cfg, [c for c in frame.columns if c != PARTITION])
    numeric = [
        c
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    categorical = [c for c in columns if c not in numeric]
    return TrainingData(frame, split, numeric, categorical, newest, refit_keys)


@dataclass
class ChampionForComparison:
    """The live champion, when it can score this challenger's holdout (same feature version)."""

    version: str
    model: Any | None  # None when not comparable
    feature_version: str | None
    threshold: float | None = None  # its recorded decision threshold (None: registered before thresholds)
    trained_through: str | None = None  # the newest partition it was fitted on (None: not recorded)

    @property
    def comparable(self) -> bool:
        return self.model is not None


def train_challenger(
    cfg: MlopsConfig,
    data: TrainingData,
    *,
    feature_version: str,
    champion: ChampionForComparison | None,
) -> Challenger:
    """Fit on the training window, choose the decision threshold on the validation window, evaluate every
    release gate on the holdout (beside ``champion`` when it is comparable), and, when ``model.refit`` is on and
    the gates pass, refit on the refit window and gate that refit (``refit_agrees``). The reference profile for
    the drift checks is the deployed model's training window.

    With ``model.refit`` the gates judge the recipe as it is deployed, through :func:`backtest`: each holdout fold
    predicted by the recipe fitted right before it. Without it they judge the evaluated model, which is deployed."""
    from mlops_assets.catalogue import release_gates
    from mlops_assets.training.gates import evaluate_gates, floors_beside_champion
    from mlops_assets.training.pipeline import Backtest, binary_labels, evaluate
    from mlops_assets.training.plots import release_plots

    label = cfg.dataset.label_column
    frame = data.frame
    progress.step("trained_model", f"fitting on {len(data.split.train)} partition(s)")
    model, profile = fit_with_profile(cfg, frame, data.split, data.numeric, data.categorical)
    threshold = decision_threshold(cfg, model, frame)
    # Positions as the index: the backtest routes each holdout row to its fold by it.
    holdout = frame[frame[PARTITION].isin(model.split.holdout) & frame[label].notna()].reset_index(drop=True)
    X_hold = holdout[model.feature_columns]
    y_bin = binary_labels(holdout[label], cfg.dataset.positive_label)
    # What the gates judge: with refit on, the recipe as it is deployed (a rolling-origin backtest over the
    # holdout); with refit off, the evaluated model itself, which is what gets deployed.
    judged: Any = backtest(cfg, data, model, holdout) if cfg.model.refit else model.pipeline
    champion_model = champion.model if champion is not None and champion.comparable else None
    champion_version = champion.version if champion is not None and champion_model is not None else None
    progress.step("trained_model", "release gates")
    results = evaluate_gates(
        judged,
        X_hold,
        pd.Series(y_bin),
        cfg.gates,
        cfg.fairness,
        champion=champion_model,
        champion_version=champion_version,
        sensitive=holdout[cfg.fairness.sensitive_column] if cfg.fairness.enabled else None,
        expected_schema=model.feature_columns,
        positive_label=1,
        threshold=threshold.value,
        artifact=judged.newest.pipeline if isinstance(judged, Backtest) else None,
    )
    if champion is not None and not champion.comparable:
        # A champion built on other feature definitions cannot score this holdout: the no-regression gate says so
        # instead of comparing (a feature change is a deliberate, reviewed release).
        results = [
            replace(
                r,
                message=f"champion version {champion.version} was trained on feature version "
                f"{champion.feature_version}, this challenger on {feature_version}: not comparable on the same "
                "holdout",
                details={**r.details, "champion_version": champion.version, "comparable": False},
            )
            if r.gate == "no_regression"
            else r
            for r in results
        ]
    unseen = np.ones(len(holdout), dtype=bool)
    if champion is not None and champion_model is not None and champion.trained_through is not None:
        # A refit champion was fitted up to its newest partition, which may lie inside this holdout: judged on rows
        # it was fitted on, it would look better than it is. It is compared on the rows it has never seen.
        unseen = (holdout[PARTITION] > champion.trained_through).to_numpy()
        if not unseen.all():
            results = [
                _no_regression_on_unseen(cfg, judged, champion, X_hold, y_bin, unseen, threshold.value)
                if r.gate == "no_regression"
                else r
                for r in results
            ]
    if champion is not None and champion_model is not None and unseen.any():
        # A floor the champion is below too, on rows it has never seen: judged against the champion there.
        results = [
            floors_beside_champion(
                r,
                judged,
                champion_model,
                X_hold[unseen],
                y_bin[unseen],
                cfg.gates.floors,
                cfg.gates.regression,
                threshold=threshold.value,
                champion_threshold=champion.threshold if champion.threshold is not None else 0.5,
                champion_version=champion.version,
            )
            if r.gate == "metric_floors"
            else r
            for r in results
        ]
    if not unseen.all():
        champion_model = None  # no plot or metrics beside a champion judged on its own training rows
    refit = None
    if cfg.model.refit:
        refit, profile, refit_result = refit_and_gate(
            cfg, data, model, results, X_hold, threshold=threshold.value, profile=profile, judged=judged
        )
        order = [g.name for g in release_gates(cfg)]
        results = sorted([*results, refit_result], key=lambda r: order.index(r.gate))
    plots = (
        release_plots(
            judged,
            X_hold,
            y_bin,
            threshold=threshold.value,
            champion=champion_model,
            champion_version=champion_version,
        )
        if len(np.unique(y_bin)) == 2
        else {}
    )
    metrics = {
        k: v
        for k, v in evaluate(judged, X_hold, y_bin, threshold=threshold.value).items()
        if isinstance(v, int | float)
    }
    champion_metrics = None
    if champion is not None and champion_model is not None:
        theirs = champion.threshold if champion.threshold is not None else 0.5
        champion_metrics = {
            k: v
            for k, v in evaluate(champion_model, X_hold, y_bin, threshold=theirs).items()
            if isinstance(v, int | float) and k != "n"
        }
    return Challenger(
        model=model,
        gates=results,
        metrics=metrics,
        profile=profile,
        plots=plots,
        holdout=X_hold,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
        threshold=threshold,
        refit=refit,
        backtest=judged.describe() if isinstance(judged, Backtest) else None,
    )


def backtest(cfg: MlopsConfig, data: TrainingData, model: TrainedModel, holdout: pd.DataFrame) -> Backtest:
    """The recipe fitted once per fold of the holdout (``model.backtest_folds``) on the training window ending
    right before the fold; ``holdout`` is indexed ``0..n-1``. A fold whose window holds one class keeps the previous
    fold's model (the first fold: the evaluated ``model``)."""
    from mlops_assets.training.pipeline import (
        Backtest,
        BacktestFold,
        Split,
        TrainingError,
        backtest_folds,
        fit,
        refit_window,
    )

    frame = data.frame
    labeled = frame[frame[cfg.dataset.label_column].notna()]
    keys = sorted(labeled[PARTITION].unique())
    folds: list[BacktestFold] = []
    previous = model
    for i, fold in enumerate(backtest_folds(model.split.holdout, cfg.model.backtest_folds)):
        progress.step("trained_model", f"backtest fold {i + 1}: fitting up to the partition before {fold[0]}")
        window = refit_window([k for k in keys if k < fold[0]], cfg)
        # One class in this window: the previous fold's model predicts this fold too.
        with contextlib.suppress(TrainingError):
            previous = fit(cfg, frame, PARTITION, data.numeric, data.categorical, split=Split(window, [], []))
        folds.append(BacktestFold(fold, previous))
    fold_of = {k: i for i, f in enumerate(folds) for k in f.holdout}
    return Backtest(folds, holdout[PARTITION].map(fold_of).to_numpy())


def _no_regression_on_unseen(
    cfg: MlopsConfig,
    model: Any,
    champion: ChampionForComparison,
    X_hold: pd.DataFrame,
    y_bin: np.ndarray,
    unseen: np.ndarray,
    threshold: float,
) -> GateResult:
    """The no-regression gate on the holdout rows newer than the champion's fitted window; with none (or one
    class only) there, a pass that says the metric floors judged this challenger alone."""
    from mlops_assets.catalogue import GateResult
    from mlops_assets.training.gates import no_regression_gate

    note = {"champion_trained_through": champion.trained_through, "unseen_rows": int(unseen.sum())}
    if len(np.unique(y_bin[unseen])) == 2:
        r = no_regression_gate(
            model,
            champion.model,
            X_hold[unseen],
            y_bin[unseen],
            cfg.gates.regression,
            threshold=threshold,
            champion_version=champion.version,
        )
        return replace(
            r,
            message=f"{r.message} (on the {int(unseen.sum())} holdout rows after {champion.trained_through}, "
            f"which champion version {champion.version} was not fitted on)",
            details={**r.details, **note},
        )
    return GateResult(
        gate="no_regression",
        passed=True,
        value=None,
        threshold=None,
        message=f"champion version {champion.version} was fitted through {champion.trained_through}, which covers "
        "this holdout: no unseen rows with both classes to compare on, the metric floors judge this challenger",
        details={"champion_version": champion.version, "comparable": False, **note},
    )


def decision_threshold(cfg: MlopsConfig, model: TrainedModel, frame: pd.DataFrame) -> ThresholdChoice:
    """The evaluated model's decision threshold: ``gates.decision_threshold`` when set, else chosen by
    ``model.threshold`` on the validation window (on the training window when validation holds one class or is
    switched off: never on the holdout, which must stay unseen)."""
    from mlops_assets.training.pipeline import binary_labels
    from mlops_assets.training.threshold import choose_threshold, fixed_threshold

    if cfg.gates.decision_threshold is not None:
        return fixed_threshold(cfg.gates.decision_threshold)
    label = cfg.dataset.label_column
    labeled = frame[frame[label].notna()]
    for window, keys in (("validation", model.split.validation), ("training", model.split.train)):
        rows = labeled[labeled[PARTITION].isin(keys)]
        y = binary_labels(rows[label], cfg.dataset.positive_label)
        if len(np.unique(y)) == 2:
            proba = model.pipeline.predict_proba(rows[model.feature_columns])[:, 1]
            return choose_threshold(y, proba, cfg.model.threshold, window=window)
    # Unreachable through load_training_data, which waits for a training window with both classes.
    raise TrainingWaitingError("waiting: no window with both classes to choose a decision threshold on")


def refit_and_gate(
    cfg: MlopsConfig,
    data: TrainingData,
    model: TrainedModel,
    results: list[GateResult],
    X_hold: pd.DataFrame,
    *,
    threshold: float,
    profile: Profile,
    judged: Any | None = None,
) -> tuple[TrainedModel | None, Profile, GateResult]:
    """Refit the recipe on ``data.refit_window`` once every gate in ``results`` passed, and judge the refit:
    sanity, latency and robustness on the holdout, and agreement there with the newest model the gates judged (the
    newest fold of ``judged``, a backtest; the evaluated ``model`` when not given).

    Returns the refit (None when the evaluated model was blocked), the profile of the model to deploy, and the
    ``refit_agrees`` result.
    """
    from mlops_assets.catalogue import GateResult
    from mlops_assets.training.gates import latency_gate, refit_agrees_gate, robustness_gate, sanity_gate
    from mlops_assets.training.pipeline import Backtest, Split

    blocked = [r.gate for r in results if not r.passed]
    if blocked:
        return (
            None,
            profile,
            GateResult(
                gate="refit_agrees",
                passed=False,
                value=None,
                threshold=cfg.gates.refit.min_decision_auc,
                message=f"not refit: the evaluated model is blocked by {', '.join(blocked)}",
                details={"refit_window": None},
            ),
        )
    keys = data.refit_window
    progress.step("trained_model", f"refitting on {len(keys)} partition(s) up to {keys[-1]}")
    # The refit window ends at the newest labeled partition, so it has no validation or holdout of its own.
    refit, refit_profile = fit_with_profile(
        cfg, data.frame, Split(keys, [], []), data.numeric, data.categorical
    )
    g = cfg.gates
    checks = [
        sanity_gate(refit.pipeline, X_hold, model.feature_columns),
        latency_gate(refit.pipeline, X_hold, g.latency),
        robustness_gate(refit.pipeline, X_hold, g.robustness, threshold=threshold),
    ]
    # The refit is compared with the newest model the gates judged: the same recipe, one fold less of data.
    reference = judged.newest if isinstance(judged, Backtest) else model
    result = refit_agrees_gate(
        reference.pipeline,
        refit.pipeline,
        X_hold,
        g.refit,
        threshold=threshold,
        refit_checks=checks,
        reference="the backtest's newest model" if isinstance(judged, Backtest) else "the evaluated model",
    )
    result.details["reference_window"] = f"{reference.split.train[0]}..{reference.split.train[-1]}"
    result.details["refit_window"] = f"{keys[0]}..{keys[-1]}"
    return refit, refit_profile, result


def fit_with_profile(
    cfg: MlopsConfig, frame: pd.DataFrame, split: Split, numeric: list[str], categorical: list[str]
) -> tuple[TrainedModel, Profile]:
    """Fit on ``split``'s training window (``frame`` carries a ``__partition__`` column) and compute the reference
    profile of the training window's labeled rows (features, predictions, labels) for the drift checks."""
    from mlops_assets.monitoring.state import reference_profile
    from mlops_assets.training.pipeline import fit

    model = fit(cfg, frame, PARTITION, numeric, categorical, split=split)
    rows = frame[frame[PARTITION].isin(model.split.train) & frame[cfg.dataset.label_column].notna()]
    probabilities = model.pipeline.predict_proba(rows[model.feature_columns])[:, 1]
    return model, reference_profile(cfg, rows, numeric, categorical, probabilities)


def champion_for_comparison(registry: ModelRegistry, feature_version: str) -> ChampionForComparison | None:
    """The registry's champion, loaded (sha256 verified) when it was trained on ``feature_version``."""
    from mlops_assets.registry.model_registry import TAG_FEATURE_VERSION

    info = registry.champion()
    if info is None:
        return None
    theirs = info.tags.get(TAG_FEATURE_VERSION)
    model = registry.load(alias="champion").model if theirs == feature_version else None
    threshold = info.tags.get(TAG_DECISION_THRESHOLD)
    window = info.tags.get(TAG_TRAINED_WINDOW)
    return ChampionForComparison(
        info.version,
        model,
        theirs,
        float(threshold) if threshold else None,
        window.partition("..")[2] if window else None,
    )


def register_challenger(
    cfg: MlopsConfig,
    registry: ModelRegistry,
    data: TrainingData,
    challenger: Challenger,
    *,
    feature_version: str,
    run_id: str,
    champion: ChampionForComparison | None,
    fingerprint: str | None = None,
    trigger: str = "manual",
) -> TrainOutcome:
    """Register the challenger as a new MLflow version (alias ``challenger``) with its profile, split, gates and
    plots; record its gate results and model card.

    The MLflow run is named after the model, its ``trigger`` (``initial``, ``drift``, ... ``run``) and the newest
    partition it was fitted on; the rows it was fitted on and the holdout are its dataset inputs (``training``,
    ``holdout``) with their digests."""
    from mlops_assets import provenance
    from mlops_assets.monitoring import state as monitoring_state
    from mlops_assets.training.model_card import render_model_card

    model = challenger.model
    deployed = challenger.deployed
    frame = data.frame
    train_keys = deployed.split.train
    made_of = provenance.capture(
        cfg,
        frame,
        PARTITION,
        {
            "train": model.split.train,
            "validation": model.split.validation,
            "holdout": model.split.holdout,
            "refit": data.refit_window,
        },
        feature_version=feature_version,
        data_through=data.newest_partition,
        data_files=data.files,
    )
    start, end = challenger.trained_window
    threshold = challenger.threshold
    label = cfg.dataset.label_column
    inputs = [*deployed.feature_columns, label]
    registered = registry.register(
        deployed.pipeline,
        input_example=challenger.holdout.head(5)
        if len(challenger.holdout)
        else frame[model.feature_columns].head(5),
        metrics={f"holdout_{k}": v for k, v in challenger.metrics.items()}
        | {
            f"validation_{k}": v
            for k, v in model.metrics.get("validation", {}).items()
            if isinstance(v, int | float)
        },
        partitions=train_keys,
        feature_version=feature_version,
        dagster_run_id=run_id,
        tags={
            "mlops.holdout_window": f"{model.split.holdout[0]}..{model.split.holdout[-1]}",
            "mlops.evaluated_window": f"{model.split.train[0]}..{model.split.train[-1]}",
            "mlops.refit": str(challenger.refit is not None).lower(),
            TAG_TRAINED_WINDOW: f"{start}..{end}",
            **({} if threshold is None else {TAG_DECISION_THRESHOLD: repr(threshold.value)}),
            **(
                {}
                if data.newest_partition is None
                else {monitoring_state.TAG_DATA_THROUGH: data.newest_partition}
            ),
            monitoring_state.TAG_TRAINED_AT: datetime.now(UTC).isoformat(),
            **({} if fingerprint is None else {TAG_TRAINING_FINGERPRINT: fingerprint}),
            **made_of.tags(),
        },
        json_artifacts={
            provenance.ARTIFACT: made_of.to_dict(),
            monitoring_state.PROFILE_ARTIFACT: challenger.profile.to_dict(),
            "split": model.split.to_dict()
            | {"refit": _window(challenger.refit), "backtest": challenger.backtest},
            "gates": [r.to_dict() for r in challenger.gates],
            "feature_columns": {"numeric": data.numeric, "categorical": data.categorical},
            "threshold": None if threshold is None else threshold.to_dict(),
        },
        file_artifacts=challenger.plots,
        run_name=f"{cfg.model.name}-{trigger}-{end}",
        datasets={
            "training": frame.loc[frame[PARTITION].isin(deployed.split.train), inputs],
            "holdout": frame.loc[frame[PARTITION].isin(model.split.holdout), inputs],
        },
        target=label,
    )
    registry.record_gate_results(registered.version, challenger.gates, run_id=run_id)
    card = render_model_card(
        model_name=cfg.model.name,
        version=registered.version,
        metrics={k: v for k, v in challenger.metrics.items() if k != "n"},
        champion_metrics=challenger.champion_metrics,
        champion_version=champion.version if champion else None,
        gate_results=challenger.gates,
        data_window=f"{start}..{end}",
        window_end=key_window(end, cfg.partitions.freq)[1].to_pydatetime(),
        backtest=challenger.backtest if challenger.refit is not None else None,
        holdout_window=f"{model.split.holdout[0]}..{model.split.holdout[-1]}",
        threshold=None if threshold is None else threshold.describe(),
        partition_count=len(train_keys),
        feature_version=feature_version,
        estimator=cfg.model.estimator,
        params=dict(cfg.model.params),
        training_rows=deployed.n_train,
        holdout_rows=len(challenger.holdout),
        dagster_run_id=run_id,
    )
    registry.set_model_card(registered.version, card)
    return TrainOutcome(
        version=registered.version,
        mlflow_run_id=registered.run_id,
        sha256=registered.sha256,
        metrics=challenger.metrics,
        split=model.split.to_dict() | {"refit": _window(challenger.refit)},
        feature_version=feature_version,
        champion_version=champion.version if champion else None,
        gates=challenger.gates,
        model_card=card,
        training_data_version=content_version(frame[frame[PARTITION].isin(train_keys)]),
        plots=challenger.plots,
        provenance=made_of,
    )


def _window(model: TrainedModel | None) -> dict[str, Any] | None:
    """First, last and count of the partitions ``model`` was fitted on (None without a model)."""
    if model is None:
        return None
    keys = model.split.train
    return {"first": keys[0], "last": keys[-1], "count": len(keys)}


@dataclass(frozen=True)
class Unchanged:
    """Nothing to train: the champion was trained on exactly these rows, features and recipe."""

    champion_version: str
    fingerprint: str

    @property
    def message(self) -> str:
        return (
            f"unchanged: champion version {self.champion_version} was trained on exactly this data, these "
            "features and this recipe; nothing to retrain (a forced run retrains on purpose)"
        )


def training_fingerprint(cfg: MlopsConfig, data: TrainingData, feature_version: str) -> str:
    """A hash of what a training would learn from: the windows' rows, the feature version and the recipe (the
    model, gate and fairness sections of the config)."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(content_version(data.frame).encode())
    h.update(feature_version.encode())
    recipe = {s: getattr(cfg, s).model_dump(mode="json") for s in ("model", "gates", "fairness")}
    h.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def train_and_gate(
    cfg: MlopsConfig,
    store: OfflineStore,
    registry: ModelRegistry,
    *,
    run_id: str,
    force: bool = True,
    trigger: str | None = None,
) -> TrainOutcome | Unchanged:
    """Load the training data, train a challenger beside the champion, gate it and register it (``trigger``: why
    it trains, which names the MLflow run; by default ``initial`` without a champion, else ``run``).

    With ``force`` off, a run whose training fingerprint equals the champion's trains nothing and returns
    :class:`Unchanged`: ``mlops-assets run`` twice on the same data makes one model version.
    """
    from mlops_assets.features import features_code_version

    feature_version = features_code_version(cfg)
    data = load_training_data(cfg, store)
    fingerprint = training_fingerprint(cfg, data, feature_version)
    if not force:
        info = registry.champion()
        if info is not None and info.tags.get(TAG_TRAINING_FINGERPRINT) == fingerprint:
            return Unchanged(info.version, fingerprint)
    champion = champion_for_comparison(registry, feature_version)
    if trigger is None:
        trigger = "initial" if registry.champion() is None else "run"
    challenger = train_challenger(cfg, data, feature_version=feature_version, champion=champion)
    return register_challenger(
        cfg,
        registry,
        data,
        challenger,
        feature_version=feature_version,
        run_id=run_id,
        champion=champion,
        fingerprint=fingerprint,
        trigger=trigger,
    )
