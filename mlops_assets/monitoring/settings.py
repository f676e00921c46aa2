"""The ``drift:`` and ``retraining:`` sections of ``mlops.yaml``.

Pydantic only (no numpy), so that :mod:`mlops_assets.config` can import it cheaply. The functions that use these
settings live in :mod:`mlops_assets.monitoring.drift` and :mod:`mlops_assets.monitoring.policy`.

Drift defaults aim at *practical* significance: a feature drifts only when the change is both statistically
significant (sample-size-aware, corrected for the number of features tested) and larger than an effect-size floor,
so that a million rows never flag a shift nobody would act on. The floors are Evidently's defaults for large samples
(normalized Wasserstein 0.1, Jensen-Shannon distance 0.1); the significance level is family-wise over the features.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftConfig(_Section):
    """How a partition is compared with the champion's reference profile."""

    # Quantile bins per numeric column in the reference profile (fewer when the column has ties).
    bins: int = Field(default=20, ge=2, le=1000)
    # Categorical columns keep at most this many most frequent values; the rest share one "other" slot.
    max_categories: int = Field(default=50, ge=1)
    # Compare each row with the reference rows of the same season, so that a January partition is not "drift"
    # merely for being winter. `month`: calendar month of the timestamp column; `none`: one pooled reference.
    seasonality: Literal["month", "none"] = "month"
    # A season with fewer reference rows than this falls back to the pooled reference.
    min_season_rows: int = Field(default=30, ge=1)
    # Family-wise significance level over all the tests of one call (features and their null rates).
    alpha: float = Field(default=0.01, gt=0, lt=1)
    # Multiple-testing correction across those tests.
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    # Effect-size floors (practical significance): Wasserstein-1 distance in units of the reference's robust
    # standard deviation (IQR / 1.349) for numeric columns, Jensen-Shannon distance (base 2) for categorical ones,
    # absolute change of the null fraction for both.
    wasserstein_threshold: float = Field(default=0.1, gt=0)
    jensen_shannon_threshold: float = Field(default=0.1, gt=0, le=1)
    null_rate_threshold: float = Field(default=0.05, gt=0, le=1)
    # Serial dependence (daily weather, sessions of one user) and year-to-year variation make n rows worth fewer
    # independent ones. The profile measures, on partition-sized blocks of the reference, how much more blocks
    # differ from the rest than independent rows would (the design effect), and the tests divide the sample sizes
    # by it. Off: every row counts as independent.
    dependence_adjustment: bool = True
    # A "strong" signal (enough on its own to trigger a retrain): a feature whose corrected p-value is below
    # `strong_alpha` and whose distance is at least `strong_factor` times its floor.
    strong_alpha: float = Field(default=1e-5, gt=0, lt=1)
    strong_factor: float = Field(default=5.0, ge=1)

    @model_validator(mode="after")
    def _strong_is_stricter(self) -> DriftConfig:
        if self.strong_alpha > self.alpha:
            raise ValueError(
                "drift.strong_alpha must not exceed drift.alpha (a strong signal is a stricter one)"
            )
        return self


MetricName = Literal["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier"]


class RetrainingConfig(_Section):
    """When the retraining triggers may fire, and the storm control that holds them back."""

    # Drift: retrain after this many consecutive drifted partitions (checked against the live champion) ...
    drift_persistence: int = Field(default=2, ge=1)
    # ... or after a single partition with a strong signal (see drift.strong_alpha / strong_factor).
    retrain_on_strong_drift: bool = True
    # Drift-triggered retraining at all (the check still runs and reports).
    drift_trigger: bool = True
    # Freshness: retrain when the champion is older than this many days. Off unless set.
    max_model_age_days: float | None = Field(default=None, gt=0)
    # Performance: the champion's metric on newly labeled data, pooled over the newest `performance_window`
    # partitions scored by the current champion, with at least `performance_min_rows` labeled rows.
    performance_metric: MetricName = "roc_auc"
    # Retrain when that metric is below this absolute value ... (off unless set)
    performance_threshold: float | None = None
    # ... or more than this below the champion's own holdout metric (off unless set).
    max_performance_drop: float | None = Field(default=None, gt=0)
    performance_window: int = Field(default=3, ge=1)
    performance_min_rows: int = Field(default=100, ge=1)
    # Storm control: no automatic retrain within `cooldown_days` of the previous one, at most
    # `max_retrains_per_window` retrains in any `window_days`, and never again on the data (newest partition) a challenger
    # already failed on (until new data arrives). A manual request bypasses the cooldown and the cap only.
    cooldown_days: float = Field(default=90.0, ge=0)
    max_retrains_per_window: int = Field(default=2, ge=1)
    window_days: float = Field(default=365.0, gt=0)
    # How often the daemon evaluates the retraining sensors (seconds). The drift sensor's evaluation with no new
    # check result reads one small log and stops, so it looks often: it bounds how long a drifted batch waits for
    # its retrain (new data -> new champion in about a minute). The performance sensor also sums the labels in the
    # prediction log on every look, the freshness sensor waits for days: they look less often.
    sensor_interval_seconds: int = Field(default=15, ge=1)
    performance_interval_seconds: int = Field(default=60, ge=1)
    freshness_interval_seconds: int = Field(default=3600, ge=1)

    @model_validator(mode="after")
    def _lower_is_worse(self) -> RetrainingConfig:
        lower_is_better = self.performance_metric in ("log_loss", "brier")
        if lower_is_better and self.performance_threshold is not None and self.performance_threshold < 0:
            raise ValueError("retraining.performance_threshold must be >= 0 for log_loss / brier")
        return self
