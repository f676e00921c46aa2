"""The typed model of ``mlops.yaml``: loading, defaults and errors that name the key.

The file is validated once, at the edge (CLI, Dagster definitions, the Python API); everything behind it takes
an :class:`MlopsConfig`. Unknown keys are errors. Storage locations are not part of the file: they come from the
environment (see :mod:`mlops_assets.storage`), so no secret ever sits in a config file.
"""

from __future__ import annotations

import functools
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_assets.alerts.settings import AlertsConfig
from mlops_assets.features.settings import FeaturesConfig, _duration_for_check
from mlops_assets.monitoring.settings import DriftConfig, RetrainingConfig
from mlops_assets.training.gate_settings import FairnessConfig, GatesConfig

BUNDLED_CONFIG = Path(__file__).parent / "default_config" / "mlops.yaml"
CONFIG_ENV_VAR = "MLOPS_CONFIG"


# A value of the label column as YAML writes it (``1``, ``yes``, ``true``); kept with its own type, because labels
# are compared with it as they are stored.
LabelValue = bool | int | float | str


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RowOrderTimestamp(_Section):
    """Derive the timestamp column from the row order, for data that has none (the bundled rainfall data)."""

    start: date
    step: str = "1D"


class DatasetConfig(_Section):
    source: str
    query: str | None = None
    timestamp_column: str
    timestamp_format: str | None = None
    timestamp_from_row_order: RowOrderTimestamp | None = None
    entity_columns: list[str] = Field(default_factory=list)
    # Columns that identify a row (an order id, or sensor and reading time): a repeat is duplicated ingestion and
    # blocks the partition. Entity columns are not unique: an event stream has many events per entity and time.
    unique_key: list[str] | None = Field(default=None, min_length=1)
    label_column: str
    positive_label: LabelValue = 1
    drop_columns: list[str] = Field(default_factory=list)
    categorical_columns: list[str] | None = None
    numeric_columns: list[str] | None = None

    @field_validator("positive_label", mode="before")
    @classmethod
    def _scalar_label(cls, v: object) -> object:
        # One message naming the key, rather than one per member of the union.
        if not isinstance(v, bool | int | float | str):
            raise ValueError(f"a label value (string, number or boolean) is required, got {v!r}")
        return v

    @model_validator(mode="after")
    def _query_needs_database(self) -> DatasetConfig:
        if self.query is not None and "://" not in self.source:
            raise ValueError("dataset.query is only used when dataset.source is a database URL")
        overlap = set(self.drop_columns) & (
            {self.label_column, self.timestamp_column} | set(self.entity_columns)
        )
        if overlap:
            raise ValueError(f"dataset.drop_columns names required columns: {sorted(overlap)}")
        dropped = set(self.drop_columns) & set(self.unique_key or [])
        if dropped:
            raise ValueError(f"dataset.unique_key names dropped columns: {sorted(dropped)}")
        return self


class PartitionsConfig(_Section):
    freq: Literal["day", "week", "month", "year"] = "month"
    # A backfill reads, validates and computes features for its partitions in groups of about this many rows (a
    # partition is never split): peak memory follows this number and the largest partition, not the backfill.
    rows_per_batch: int = Field(default=250_000, ge=1)


# Windows counted back from the newest labeled partition, by partition frequency (holdout, validation, training):
# about a quarter for the holdout and a quarter for validation (enough rows to judge a model and pick its threshold,
# short enough that a model refit off is at most half a year stale), three years of training (long enough for
# seasons, short enough to follow drift: the bundled rainfall model scores ROC AUC 0.80 on 36 months against 0.73
# on all history). A year cannot be split, so yearly data gets one year each and ten years of training.
WINDOW_DEFAULTS: dict[str, tuple[int, int, int]] = {
    "day": (91, 91, 1095),
    "week": (13, 13, 156),
    "month": (3, 3, 36),
    "year": (1, 1, 10),
}
_WINDOW_KEYS = ("holdout_partitions", "validation_partitions", "train_window_partitions")
# Keys that no longer exist, and what replaced them.
_REPLACED_MODEL_KEYS = {
    "holdout_fraction": "model.holdout_partitions",
    "validation_fraction": "model.validation_partitions",
}


class ThresholdConfig(_Section):
    """How the decision threshold on the positive-class probability is chosen, on the validation window.

    ``f1``: the threshold with the best F1. ``precision`` / ``recall``: among the thresholds reaching ``target``,
    the one with the best other metric (recall / precision).
    """

    objective: Literal["f1", "precision", "recall"] = "f1"
    target: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _target_matches_objective(self) -> ThresholdConfig:
        if self.objective == "f1" and self.target is not None:
            raise ValueError("model.threshold.target applies to objective precision or recall, not f1")
        if self.objective != "f1" and self.target is None:
            raise ValueError(f"model.threshold.objective {self.objective} needs a target (e.g. 0.9)")
        return self


class ModelConfig(_Section):
    name: str = "mlops_model"
    estimator: Literal["hist_gradient_boosting", "random_forest", "logistic_regression"] = (
        "hist_gradient_boosting"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    # Windows in partitions, counted back from the newest labeled partition (defaults: WINDOW_DEFAULTS for
    # partitions.freq). The holdout is the newest data, never fitted by the evaluated model; validation chooses the
    # decision threshold; training is what precedes them (null = all of it).
    holdout_partitions: int = Field(default=3, ge=1)
    validation_partitions: int = Field(default=3, ge=0)
    train_window_partitions: int | None = Field(default=36, ge=1)
    # After the release gates pass, fit the same recipe again on the training window moved forward to end at the
    # newest labeled partition: that refit is what gets registered and deployed.
    refit: bool = True
    # With refit on, the gates judge the recipe as it is deployed: the holdout is cut into this many folds (runs of
    # partitions), each predicted by the recipe fitted on the training window ending right before it (a
    # rolling-origin backtest). A model judged six months behind its holdout cannot be judged after a drift; a model
    # one fold behind can. Each fold costs one more fit.
    backtest_folds: int = Field(default=3, ge=1)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    random_state: int = 0

    @model_validator(mode="before")
    @classmethod
    def _refuse_replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _REPLACED_MODEL_KEYS.items():
                if old in data:
                    raise ValueError(
                        f"'model.{old}' was replaced by '{new}' (a number of partitions counted back from the "
                        "newest labeled partition)"
                    )
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c == "_" for c in v):
            raise ValueError("model.name must be letters, digits and underscores (it prefixes asset keys)")
        return v


class ValidationConfig(_Section):
    """Data validation policy (see README, "Bad rows: quarantine or block")."""

    # Ceiling on the null fraction of any column in a partition.
    max_null_fraction: float = Field(default=0.10, ge=0, le=1)
    # A column sparse by nature in the reference (above max_null_fraction in some reference partition, e.g. wind
    # gusts recorded only when they blow) is held to its worst reference partition's null fraction plus this.
    null_fraction_margin: float = Field(default=0.10, ge=0, le=1)
    # Minimum rows in a partition; a partial last partition is normal, so this is small.
    min_rows: int = Field(default=1, ge=1)
    # Plausibility bounds: reference [q_low, q_high] widened by `range_margin` times its width on each side.
    range_quantiles: tuple[float, float] = (0.001, 0.999)
    range_margin: float = Field(default=3.0, ge=0)
    # Rows outside the bounds are quarantined while they are at most this fraction of the partition; above it
    # the partition is blocked (a corrupt batch, not a stray reading).
    max_quarantine_fraction: float = Field(default=0.10, ge=0, le=1)
    # Reference data before any champion exists: this many earliest partitions.
    reference_partitions: int = Field(default=12, ge=1)
    # Categorical columns: values never seen in the reference are allowed up to this fraction of rows.
    max_unseen_category_fraction: float = Field(default=0.05, ge=0, le=1)
    # Columns with more distinct reference values than this are id-like (tail numbers, user ids): new values are
    # normal there, so they are not checked for unseen categories.
    max_checked_categories: int = Field(default=100, ge=1)
    # The label may be missing more often than features: unlabeled rows (labels arrive late, events were
    # cancelled) are kept and simply not trained on. Above this fraction in a partition the batch is blocked.
    max_label_null_fraction: float = Field(default=0.5, ge=0, le=1)
    # Exact copies of a row (all columns) allowed per partition, as a fraction of its rows, or twice the typical
    # (median) share in the other reference partitions where that is higher; above it the partition is blocked as
    # ingested twice. Identical rows happen where time is coarse and rows carry no event id; a file sent twice
    # adds its whole length. With `dataset.unique_key` set, any repeat of the key blocks.
    max_duplicate_fraction: float = Field(default=0.001, ge=0, le=1)


class IngestionConfig(_Section):
    """How the new-data sensor watches the source."""

    # Seconds between two looks at the source: a look compares file names, sizes and times (or one aggregate row
    # of a database) and reads data only when something changed.
    interval_seconds: int = Field(default=15, ge=5)


class ApprovalConfig(_Section):
    """``approval:``: with ``required: true`` a challenger that passed every gate waits for a person
    (``mlops-assets approve VERSION --by NAME`` / ``reject``) instead of becoming champion at once."""

    required: bool = False
    # A request not decided within this (e.g. 7D) expires: approving it is refused, a new run asks again.
    expires_after: str | None = None

    @field_validator("expires_after")
    @classmethod
    def _fixed_duration(cls, v: str | None) -> str | None:
        if v is not None:
            _duration_for_check(v, key="approval.expires_after")
        return v

    def expires_after_seconds(self) -> float | None:
        if self.expires_after is None:
            return None
        return _duration_for_check(self.expires_after, key="approval.expires_after").total_seconds()


class RetentionConfig(_Section):
    """``retention:``: what ``mlops-assets gc`` keeps. The offline store's snapshots of the champion, the previous
    version and versions awaiting approval or in shadow are always kept; so are those of the newest
    ``keep_versions``. The prediction log is kept for ``prediction_log_days``."""

    keep_versions: int = Field(default=10, ge=0)
    # Prediction-log rows (and what a shadow answered beside them) older than this many days are removed by gc;
    # null: kept for ever. What the running shadow answered is kept whatever its age (its comparison reads it).
    prediction_log_days: float | None = Field(default=None, gt=0)


class ProbationConfig(_Section):
    """``probation:``: how the prediction service watches a new champion right after it swaps it in, and rolls
    back to the champion it replaced (through the guarded path) when the new one breaches a limit.

    Judged every ``check_interval_seconds`` over the ``/predict`` requests answered in the last ``window_seconds``
    (4xx are the client's and not counted), once at least ``min_requests`` of them were answered by the new model.
    Breaches: the p95 latency above ``max_p95_latency_ms``, or above ``max_p95_latency_ratio`` times the previous
    champion's p95 measured by the service before the swap (never below ``latency_floor_ms``); or the share of 5xx
    above ``max_error_rate``; or, once ``min_labels`` of its predictions have labels back through ``/feedback`` (both
    classes), a live ROC AUC more than ``max_live_auc_drop`` below the previous champion's on its newest labeled
    predictions (judged every ``label_check_interval_seconds``). A model not breaching for ``duration_seconds``
    completes its probation."""

    enabled: bool = True
    duration_seconds: float = Field(default=600.0, gt=0)
    window_seconds: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=100, ge=1)
    # Absolute limit (null: none). One second for a single prediction is broken for any online model.
    max_p95_latency_ms: float | None = Field(default=1000.0, gt=0)
    # Relative limit (null: none): times the previous champion's p95 before the swap, when that was measured on
    # at least min_requests requests in the window before it.
    max_p95_latency_ratio: float | None = Field(default=3.0, ge=1)
    # The relative limit is never below this: a 2 ms model is not rolled back for answering in 7 ms.
    latency_floor_ms: float = Field(default=50.0, ge=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    check_interval_seconds: float = Field(default=1.0, gt=0)
    # The live metric on feedback labels (null: not judged). Labels come back late for many models: only those
    # arriving within duration_seconds count.
    max_live_auc_drop: float | None = Field(default=0.1, gt=0, le=1)
    min_labels: int = Field(default=200, ge=10)
    label_check_interval_seconds: float = Field(default=10.0, gt=0)


class ShadowConfig(_Section):
    """``rollout.shadow:``: how long a challenger runs in shadow and what its comparison with the champion
    requires. The service scores every ``/predict`` request with both and answers with the champion's; the
    ``shadow_comparison`` check judges the pairs once ``requests`` of them are logged, or after ``max_seconds``
    with at least ``min_requests``.

    Judged on the logged pairs (each limit null: not judged): the share of requests where the two decide alike
    (``min_agreement``), the shift of the shadow's scores against the champion's on the same requests (population
    stability index over ten equal-width probability bins, ``max_score_psi``), the shadow's share of scoring errors
    (``max_error_rate``), its p95 model-call time against the champion's on the same batches
    (``max_p95_latency_ratio``, never below ``latency_floor_ms``), and, once ``min_labels`` pairs have labels back
    through ``/feedback`` (both classes), its ROC AUC against the champion's on those rows (``max_live_auc_drop``).
    A retrain exists to change decisions where the data moved: the agreement and shift limits catch a challenger
    that is broken (inverted, fed the wrong columns), not one that learned something."""

    requests: int = Field(default=1000, ge=1)
    # The share of answered batches the shadow scores too (at random). Every scored batch costs what the champion's
    # own call costs, on the same machine: at 1 the service's p95 rose 1.05-1.8x under load on 2 cores over two
    # runs of benchmarks/bench_serving.py --shadow, at 0.25 by 0.6-1.27x. 1 reaches `requests` sooner.
    sample: float = Field(default=0.25, gt=0, le=1)
    max_seconds: float | None = Field(default=86400.0, gt=0)
    min_requests: int = Field(default=200, ge=1)
    min_agreement: float | None = Field(default=0.7, ge=0, le=1)
    max_score_psi: float | None = Field(default=2.0, gt=0)
    max_error_rate: float | None = Field(default=0.01, ge=0, le=1)
    max_p95_latency_ratio: float | None = Field(default=3.0, ge=1)
    latency_floor_ms: float = Field(default=20.0, ge=0)
    max_live_auc_drop: float | None = Field(default=0.05, gt=0, le=1)
    min_labels: int = Field(default=200, ge=10)
    # How often the shadow sensor looks at the logged pairs.
    check_interval_seconds: int = Field(default=30, ge=5)

    @model_validator(mode="after")
    def _judgeable(self) -> ShadowConfig:
        if self.min_requests > self.requests:
            raise ValueError(
                f"rollout.shadow.min_requests ({self.min_requests}) is above rollout.shadow.requests "
                f"({self.requests})"
            )
        return self


class RolloutConfig(_Section):
    """``rollout:``: how a challenger that passed every gate reaches traffic. ``direct``: it becomes champion at
    once (the prediction service's probation then watches it). ``shadow``: while a champion exists, it first runs in
    shadow (``rollout.shadow``) and is promoted only when the ``shadow_comparison`` check passes; the first model
    of a project has nothing to be compared with and is promoted directly."""

    mode: Literal["direct", "shadow"] = "direct"
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)


class MlopsConfig(_Section):
    dataset: DatasetConfig
    partitions: PartitionsConfig = Field(default_factory=PartitionsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    ingestion: IngestionConfig = Field(default_factory=IngestionConfig)
    # Sections owned by the feature, gate, drift, retraining and fairness modules; each validates its own.
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    # Who hears about what (mlops_assets.alerts.settings), and whether a person approves each new champion.
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    # What the prediction service watches on a new champion, and when it rolls it back.
    probation: ProbationConfig = Field(default_factory=ProbationConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    storage: dict[str, Any] | None = None

    # Where the file came from: relative sources resolve against its folder.
    source_dir: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _windows_fit_frequency(cls, data: Any) -> Any:
        """Window keys left out of ``model:`` take the defaults of ``partitions.freq`` (WINDOW_DEFAULTS)."""
        if not isinstance(data, dict):
            return data
        partitions = data.get("partitions")
        freq = getattr(partitions, "freq", None) or (partitions or {}).get("freq", "month")
        defaults = dict(zip(_WINDOW_KEYS, WINDOW_DEFAULTS.get(freq, WINDOW_DEFAULTS["month"]), strict=True))
        model = data.get("model")
        if isinstance(model, ModelConfig):
            missing = {k: v for k, v in defaults.items() if k not in model.model_fields_set}
            return {**data, "model": model.model_copy(update=missing)} if missing else data
        if model is None or isinstance(model, dict):
            return {**data, "model": {**defaults, **(model or {})}}
        return data

    def resolve_source(self) -> str:
        """The dataset source as a usable location: URLs as given, relative paths against the config's folder."""
        src = self.dataset.source
        if "://" in src or os.path.isabs(src) or self.source_dir is None:
            return src
        return str(self.source_dir / src)


def _format_error(path: Path | str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            lines.append(f"'{key}': {e['msg']}")
    return f"{path}: " + "; ".join(lines)


def parse_config(
    data: Any, *, origin: str | Path = "<config>", source_dir: Path | None = None
) -> MlopsConfig:
    """Validate an already-parsed mapping; errors name ``origin`` and the offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = MlopsConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(origin, err)) from None
    return cfg.model_copy(update={"source_dir": source_dir})


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if given, else ``$MLOPS_CONFIG``, else the bundled default."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else BUNDLED_CONFIG


def load_config(path: str | os.PathLike[str] | None = None) -> MlopsConfig:
    """Read and validate ``mlops.yaml`` (see :func:`config_path` for which file).

    Loaded once per process: the CLI, the definitions and every resource of a run share one validated object
    (frozen), read again only when the file changes.
    """
    p = config_path(path)
    try:
        stat = p.stat()
    except OSError:
        raise ConfigError(f"{p}: config file not found") from None
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    return _load(p, p.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _load(p: Path, resolved: Path, _mtime_ns: int, _size: int) -> MlopsConfig:
    try:
        text = resolved.read_text(encoding="utf-8-sig")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not a UTF-8 text file ({err.reason}): save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    _keep_label_spelling(text, data)
    return parse_config(data, origin=p, source_dir=resolved.parent)


# The words YAML 1.1 reads as booleans besides true/false: ``positive_label: YES`` means the label "YES".
_YAML_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _keep_label_spelling(text: str, data: Any) -> None:
    """Keep ``dataset.positive_label`` as written when YAML 1.1 turned a word such as ``YES``, ``no``, ``on`` or
    ``off`` into a boolean: a label column holds "YES"/"NO" far more often than booleans, and the user wrote the
    label's own spelling. ``true``/``false`` stay booleans (a boolean label column)."""
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict):
        return
    if not isinstance(data["dataset"].get("positive_label"), bool):
        return
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, section in root.value if isinstance(root, yaml.MappingNode) else []:
        if key.value != "dataset" or not isinstance(section, yaml.MappingNode):
            continue
        for k, v in section.value:
            if (
                k.value == "positive_label"
                and isinstance(v, yaml.ScalarNode)
                and v.style is None
                and v.value.lower() in _YAML_BOOL_WORDS
            ):
                data["dataset"]["positive_label"] = v.value
