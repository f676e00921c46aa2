"""The ``gates:`` and ``fairness:`` sections of ``mlops.yaml``.

Pydantic only (no numpy, no sklearn), so that :mod:`mlops_assets.config` can import it without slowing the light
commands. The gate functions themselves live in :mod:`mlops_assets.training.gates`.

Defaults are calibrated on the bundled NOAA rainfall data, which drifts strongly in its last third: a
HistGradientBoosting model fitted on the first 80 % of days scores, on the newest 10 % (the default holdout),
ROC AUC ~0.71, accuracy ~0.62, F1 ~0.57, precision ~0.48, recall ~0.72 (on the newest 20 %: 0.76 / 0.70 / 0.60 /
0.56 / 0.65), while the same model fitted on shuffled labels scores ROC AUC ~0.48, F1 ~0.00, recall ~0.00.
Accuracy stays near the majority rate (~0.65) even for the shuffled model, so its floor is only a sanity floor.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MetricName = Literal["roc_auc", "accuracy", "f1", "precision", "recall"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricFloors(_Section):
    """Minimum holdout value for each metric; ``null`` switches that floor off (it is then reported absent)."""

    roc_auc: float | None = Field(default=0.65, ge=0, le=1)
    accuracy: float | None = Field(default=0.55, ge=0, le=1)
    f1: float | None = Field(default=0.40, ge=0, le=1)
    precision: float | None = Field(default=0.35, ge=0, le=1)
    recall: float | None = Field(default=0.30, ge=0, le=1)


def _roc_auc_only() -> list[MetricName]:
    return ["roc_auc"]


class RegressionConfig(_Section):
    """No regression against the champion on the same holdout, like MLflow's ``MetricThreshold``.

    ``absolute``: the challenger passes when ``challenger >= champion - tolerance``;
    ``relative``: when ``challenger >= champion * (1 - tolerance)``. Default: one point of ROC AUC.
    """

    metrics: list[MetricName] = Field(default_factory=_roc_auc_only, min_length=1)
    tolerance: float = Field(default=0.01, ge=0, le=1)
    mode: Literal["absolute", "relative"] = "absolute"


class LatencyConfig(_Section):
    """Prediction latency limits, and how much slower than the champion (measured in the same call) is allowed.

    Slower than the champion fails only when the challenger is both ``max_slowdown`` times slower AND more than
    ``slack_ms`` slower: millisecond timings are too noisy for a ratio alone.
    """

    p95_single_row_ms: float = Field(default=50.0, gt=0)
    batch_1000_rows_ms: float = Field(default=500.0, gt=0)
    max_slowdown: float = Field(default=2.0, ge=1)
    slack_ms: float = Field(default=10.0, ge=0)
    single_row_samples: int = Field(default=50, ge=20)
    batch_repeats: int = Field(default=3, ge=1)
    # Native (OpenMP/BLAS) threads while measuring, as in one serving worker; null = the libraries' default.
    # One thread keeps the figures stable on a busy machine: HistGradientBoosting's OpenMP threads spin-wait
    # when the cores are shared, making single-row predictions 10-20x slower for reasons unrelated to the model.
    threads: int | None = Field(default=1, ge=1)


class RobustnessConfig(_Section):
    """Gaussian noise of ``noise_level`` x each numeric column's standard deviation; predicted labels must agree
    with the clean predictions on at least ``min_agreement`` of the rows (rainfall model: ~0.96 at 0.02)."""

    noise_level: float = Field(default=0.02, gt=0, le=1)
    min_agreement: float = Field(default=0.90, ge=0, le=1)
    random_state: int = 0


class GatesConfig(_Section):
    """Release gates a challenger must pass before it may become champion (all blocking)."""

    floors: MetricFloors = Field(default_factory=MetricFloors)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    # Decision threshold on the positive-class probability used for the label metrics.
    decision_threshold: float = Field(default=0.5, gt=0, lt=1)


class FairnessConfig(_Section):
    """Fairness gate; it exists only when ``sensitive_column`` is set.

    The gate measures the chosen rate per group of ``sensitive_column`` on the holdout and fails when the largest
    difference between two groups exceeds ``max_difference``. Groups with fewer than ``min_group_size`` rows are
    reported but not compared (their rate is noise).
    """

    sensitive_column: str | None = None
    metric: Literal["selection_rate", "true_positive_rate"] = "selection_rate"
    max_difference: float = Field(default=0.10, ge=0, le=1)
    min_group_size: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _column_named(self) -> FairnessConfig:
        if self.sensitive_column is not None and not self.sensitive_column.strip():
            raise ValueError("fairness.sensitive_column must be a column name (or null)")
        return self

    @property
    def enabled(self) -> bool:
        return self.sensitive_column is not None
