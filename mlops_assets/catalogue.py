"""What gates exist, written once: the data gates on ``raw_data`` and the release gates on ``trained_model``.

The Dagster check specs, the check names in reports and the docs are all built from these two catalogues; the
functions that measure each gate live with their concept (:mod:`mlops_assets.data.schema` for data,
:mod:`mlops_assets.training.gates` for release) and all return the one :class:`GateResult`.

A gate that does not apply to a dataset (no categorical column, no fairness column, no metric floor configured) is
absent: it has no check, never a check that reports a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig

GateKind = Literal["data", "release"]
DATA: Final = "data"
RELEASE: Final = "release"
CATEGORICAL = "categorical"


@dataclass
class GateResult:
    """One gate's verdict and its evidence: the measured ``value`` beside its ``threshold``, a human ``message``,
    and ``details``; data gates also name the failing partitions and columns and a sample of failing rows."""

    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    failing_partitions: list[str] = field(default_factory=list)
    failing_columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetShape:
    """What decides which data gates a dataset has, known without reading rows: the column kinds the data
    contract recorded (None before the first ingestion) and the configured keys."""

    kinds: Mapping[str, str] | None
    categorical_columns: list[str] | None
    entity_columns: list[str]
    unique_key: list[str] | None = None

    @classmethod
    def of(cls, cfg: MlopsConfig, kinds: Mapping[str, str] | None = None) -> DatasetShape:
        return cls(
            kinds=kinds,
            categorical_columns=cfg.dataset.categorical_columns,
            entity_columns=list(cfg.dataset.entity_columns),
            unique_key=list(cfg.dataset.unique_key) if cfg.dataset.unique_key else None,
        )

    def has_categories(self) -> bool:
        if self.kinds is not None:
            return CATEGORICAL in self.kinds.values()
        # Before any ingestion: configured categoricals decide; inferred ones (None) may exist.
        return self.categorical_columns is None or bool(self.categorical_columns)


@dataclass(frozen=True)
class GateSpec:
    """One gate of the catalogue: its name, kind, what it asserts, and when it applies."""

    name: str
    kind: GateKind
    description: str
    applies: Callable[[Any], bool] = field(default=lambda _: True, compare=False, repr=False)

    @property
    def check_name(self) -> str:
        """The Dagster asset check that publishes this gate."""
        return f"raw_data_{self.name}" if self.kind == DATA else f"trained_model_passes_{self.name}"


DATA_GATES: tuple[GateSpec, ...] = (
    GateSpec(
        "has_expected_columns",
        DATA,
        "Every column of the data contract is present and no unknown one appears.",
    ),
    GateSpec(
        "has_expected_dtypes",
        DATA,
        "Numeric columns hold numbers (a number arriving as text such as '25 years' fails).",
    ),
    GateSpec(
        "null_fraction_within_limit",
        DATA,
        "In every partition, each column's null fraction is within the limit.",
    ),
    GateSpec(
        "values_plausible",
        DATA,
        "Out-of-range values are few enough to quarantine; a corrupt feed blocks.",
    ),
    GateSpec(
        "labels_known",
        DATA,
        "Labels are one of the two classes: dataset.positive_label and the other class seen so far.",
    ),
    GateSpec(
        "categories_known",
        DATA,
        "Categorical columns hold known categories (a few unseen values are allowed).",
        applies=lambda shape: shape.has_categories(),
    ),
    # Every dataset has it: a file ingested twice or a re-sent batch duplicates rows whatever the data's shape.
    # Entity keys are not unique keys (an event stream has many events per entity and timestamp); only an
    # exact copy of a row, or a repeat of the key the user declares unique (``dataset.unique_key``), is a defect.
    GateSpec(
        "no_duplicate_rows",
        DATA,
        "No row arrives twice: exact copies of rows (all columns) at most twice as frequent as in the other "
        "reference partitions (validation.max_duplicate_fraction at least), and no repeated dataset.unique_key.",
    ),
    GateSpec("has_min_rows", DATA, "Every partition has at least the minimum number of rows."),
)

RELEASE_GATES: tuple[GateSpec, ...] = (
    GateSpec(
        "sanity",
        RELEASE,
        "Probabilities in [0, 1], no NaN, one prediction per row, input schema equal to the feature schema.",
    ),
    GateSpec(
        "metric_floors",
        RELEASE,
        "Holdout ROC AUC and PR AUC clearly above no skill (0.5 and the prevalence), and any absolute floor "
        "(F1, precision, recall, accuracy at the model's decision threshold) held.",
        applies=lambda cfg: any(v is not None for v in cfg.gates.floors.model_dump().values()),
    ),
    GateSpec(
        "no_regression",
        RELEASE,
        "Holdout metric no worse than the champion's on the same holdout, within the tolerance.",
    ),
    GateSpec(
        "latency",
        RELEASE,
        "p95 single-row and 1,000-row batch prediction time within limits and beside the champion's.",
    ),
    GateSpec("robustness", RELEASE, "Predictions agree under small input noise."),
    GateSpec(
        "refit_agrees",
        RELEASE,
        "The refit on the newest data passes sanity, latency and robustness and makes the decisions of the "
        "newest model the gates judged (the backtest's last fold) on the holdout.",
        applies=lambda cfg: cfg.model.refit,
    ),
    GateSpec(
        "fairness",
        RELEASE,
        "Largest between-group difference of the chosen rate under the threshold.",
        applies=lambda cfg: cfg.fairness.enabled,
    ),
)

_BY_NAME = {(g.kind, g.name): g for g in (*DATA_GATES, *RELEASE_GATES)}


def data_gate(name: str) -> GateSpec:
    return _BY_NAME[(DATA, name)]


def release_gate(name: str) -> GateSpec:
    return _BY_NAME[(RELEASE, name)]


def data_gates(shape: DatasetShape) -> list[GateSpec]:
    """The data gates this dataset has, in catalogue order."""
    return [g for g in DATA_GATES if g.applies(shape)]


def release_gates(cfg: MlopsConfig) -> list[GateSpec]:
    """The release gates this configuration has, in catalogue order (the order they are evaluated in)."""
    return [g for g in RELEASE_GATES if g.applies(cfg)]
