"""Release gates: pure functions that decide whether a challenger may become champion.

Each gate takes fitted models and frames, measures one thing and returns a :class:`GateResult` with the measured
value, the threshold and details; a failing gate is a result, not an exception. Exceptions (:class:`GateError`)
are kept for inputs the gate cannot work with at all (a champion that cannot score the holdout, an unconfigured
fairness gate called anyway). The Dagster asset checks are thin wrappers over these functions.

Conventions: ``y`` holds the raw labels, compared with ``positive_label``; a model is anything with
``predict_proba`` and ``classes_`` (a fitted scikit-learn classifier or pipeline); the positive class is decided
by ``predict_proba >= threshold`` (the model's decision threshold, see :mod:`mlops_assets.training.threshold`), so
every gate judges the same decision rule the service applies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.catalogue import GateResult
from mlops_assets.metrics import classification_metrics
from mlops_assets.training.gate_settings import (
    FairnessConfig,
    GatesConfig,
    LatencyConfig,
    MetricFloors,
    RefitConfig,
    RegressionConfig,
    RobustnessConfig,
)

__all__ = [
    "FairnessConfig",
    "GateError",
    "GatesConfig",
    "compute_metrics",
    "evaluate_gates",
    "fairness_gate",
    "latency_gate",
    "metric_floors_gate",
    "no_regression_gate",
    "positive_proba",
    "refit_agrees_gate",
    "robustness_gate",
    "sanity_gate",
]

METRIC_NAMES = ("roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall")


class GateError(ValueError):
    """A gate cannot be evaluated on these inputs (the message says why); distinct from a gate that fails."""


# ---------------------------------------------------------------------------------------------- predictions


def positive_proba(model: Any, X: pd.DataFrame, positive_label: Any = 1) -> np.ndarray:
    """Probability of ``positive_label`` for each row of ``X``."""
    classes = list(getattr(model, "classes_", []))
    if positive_label not in classes:
        raise GateError(f"model classes {classes} do not contain the positive label {positive_label!r}")
    proba = np.asarray(model.predict_proba(X))
    return proba[:, classes.index(positive_label)]


def _labels(y: pd.Series | np.ndarray, positive_label: Any) -> np.ndarray:
    return (np.asarray(y) == positive_label).astype(int)


def compute_metrics(
    model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray, *, positive_label: Any = 1, threshold: float = 0.5
) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), accuracy, F1, precision and recall of ``model`` on ``(X, y)``, and the
    ``prevalence`` (share of positives: the PR AUC of a model with no skill).

    ROC AUC and PR AUC are ``nan`` when ``y`` holds one class only (undefined there; floors treat them as failed).
    """
    y_true = _labels(y, positive_label)
    scores = positive_proba(model, X, positive_label)
    m = classification_metrics(y_true, scores, threshold=threshold)
    auc = m["roc_auc"]
    if auc is None:
        pr_auc = float("nan")
    else:
        from sklearn.metrics import average_precision_score

        pr_auc = float(average_precision_score(y_true, scores))
    return {
        "roc_auc": float("nan") if auc is None else auc,
        "pr_auc": pr_auc,
        # An undefined metric (None) is nan here, which fails every floor.
        **{
            k: float("nan") if (v := m[k]) is None else float(v)
            for k in ("accuracy", "f1", "precision", "recall")
        },
        "prevalence": float(y_true.mean()) if len(y_true) else float("nan"),
    }


# ---------------------------------------------------------------------------------------------- gates


def _floors(metrics: Mapping[str, float], floors: MetricFloors) -> dict[str, tuple[str, float]]:
    """Metric -> (floor name, floor value) for every configured floor; relative floors resolved against the
    no-skill baseline of this holdout (ROC AUC 0.5, PR AUC the prevalence)."""
    out: dict[str, tuple[str, float]] = {}
    if floors.roc_auc_lift is not None:
        out["roc_auc"] = ("roc_auc_lift", 0.5 + floors.roc_auc_lift * 0.5)
    if floors.pr_auc_lift is not None:
        prevalence = float(metrics.get("prevalence", float("nan")))
        # An undefined prevalence leaves nothing to be relative to: the floor cannot be met (nan comparisons fail).
        out["pr_auc"] = ("pr_auc_lift", prevalence + floors.pr_auc_lift * (1 - prevalence))
    absolute = floors.model_dump(exclude={"roc_auc_lift", "pr_auc_lift", "champion_below_floor"})
    for name, value in absolute.items():
        if value is None:
            continue
        # Both a relative and an absolute floor on one metric: the stricter holds.
        if name not in out or value > out[name][1]:
            out[name] = (name, value)
    return out


@dataclass(frozen=True)
class ChampionBeside:
    """The champion's metrics on the same rows, for floors it misses too (``gates.floors.champion_below_floor``)."""

    version: str
    metrics: Mapping[str, float | None]
    tolerance: float  # gates.regression.tolerance: how much the challenger must beat it by
    # What a model without skill reaches on these rows by chance (see :func:`chance_bars`); without it, no skill
    # itself (ROC AUC 0.5, PR AUC the prevalence) is the lowest bar.
    chance: Mapping[str, float] | None = None
    rows: int | None = None


CHANCE_DRAWS = 200  # label permutations behind a chance bar
CHANCE_QUANTILE = 0.975  # reached by no skill at most once in 40 draws
CHANCE_MAX_ROWS = 20_000  # rows a chance bar is computed on (a seeded sample above it)


def chance_bars(y_true: np.ndarray, scores: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """ROC AUC and PR AUC that ``scores`` reach on ``y_true`` (0/1) by chance: the ``CHANCE_QUANTILE`` of each
    over ``CHANCE_DRAWS`` random permutations of the labels (the scores kept, ties and all). On a few hundred rows a
    model without skill often scores ROC AUC 0.55 or more; on tens of thousands, hardly above 0.5."""
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    if len(y_true) > CHANCE_MAX_ROWS:
        keep = rng.choice(len(y_true), CHANCE_MAX_ROWS, replace=False)
        y_true, scores = y_true[keep], scores[keep]
    draws = rng.permuted(np.tile(y_true.astype(np.int8), (CHANCE_DRAWS, 1)), axis=1)
    roc, pr = permuted_metrics(draws, scores)
    return {
        "roc_auc": float(np.quantile(roc, CHANCE_QUANTILE)),
        "pr_auc": float(np.quantile(pr, CHANCE_QUANTILE)),
    }


def permuted_metrics(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision (as scikit-learn computes them, ties included) of ``scores`` against each
    row of ``labels`` (draws x rows, 0/1, each row holding both classes), all rows at once."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    n_pos = labels.sum(axis=1).astype(float)
    n_neg = labels.shape[1] - n_pos
    ranks = rankdata(scores)  # ties share their average rank: the Mann-Whitney form of ROC AUC
    roc = (labels @ ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-scores, kind="mergesort")
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]  # last row of each distinct score
    tp = np.cumsum(labels[:, order], axis=1, dtype=np.int32)[:, ends]
    precision = tp / (ends + 1)
    recall = tp / n_pos[:, None]
    steps = np.diff(recall, axis=1, prepend=0.0)
    return roc, (steps * precision).sum(axis=1)


def metric_floors_gate(
    metrics: Mapping[str, float], floors: MetricFloors, champion: ChampionBeside | None = None
) -> GateResult:
    """Every configured metric floor holds on the holdout.

    ``value`` is the smallest margin ``metric - bar`` over the configured floors (``threshold`` 0); a metric
    that is missing or undefined (NaN) fails its floor. Relative floors (``roc_auc_lift``, ``pr_auc_lift``) are
    resolved against this holdout's no-skill baseline; ``details`` shows the resolved floor of each metric.

    With ``champion`` (its metrics on the same rows, which it was never fitted on), a floor that both miss is judged
    against the champion instead: the bar is the champion's value plus its ``tolerance``, never at or below no
    skill (ROC AUC 0.5, PR AUC the prevalence), and never below what no skill reaches by chance on these rows
    (``champion.chance``, when given).
    """
    configured = _floors(metrics, floors)
    if not configured:
        raise GateError("metric floors gate called with every floor switched off (gates.floors all null)")
    no_skill = {"roc_auc": 0.5, "pr_auc": float(metrics.get("prevalence", float("nan")))}
    per_metric: dict[str, Any] = {}
    failures, beside, margins = [], [], []
    for name, (source, floor) in configured.items():
        value = metrics.get(name)
        defined = value is not None and not np.isnan(value) and not np.isnan(floor)
        bar, judged_by, judged_beside = floor, f"gates.floors.{source}", False
        entry: dict[str, Any] = {}
        if champion is not None and defined and value is not None and value < floor:
            theirs = champion.metrics.get(name)
            base = float("nan") if theirs is None else float(theirs)
            entry["champion"] = None if np.isnan(base) else base
            if base < floor:  # False when the champion's value is undefined
                chance = (champion.chance or {}).get(name, -np.inf)
                if np.isfinite(chance):
                    entry["chance"] = round(float(chance), 6)
                bar = max(base + champion.tolerance, no_skill.get(name, -np.inf), chance)
                judged_by = f"champion version {champion.version} ({base:.4f}) + {champion.tolerance}"
                judged_beside = True
        ok = bool(defined and value is not None and value >= bar)
        if judged_beside and name in no_skill:
            ok = ok and value is not None and value > no_skill[name]
        per_metric[name] = {
            "value": None if value is None else float(value),
            "floor": None if np.isnan(floor) else round(float(floor), 6),
            "floor_key": f"gates.floors.{source}",
            "passed": ok,
            **entry,
            **({"bar": round(float(bar), 6), "judged_by": judged_by} if judged_beside else {}),
        }
        if defined and value is not None:
            margins.append(value - bar)
        shown = value if value is None else round(float(value), 4)
        if judged_beside and champion is not None:
            if champion.chance and name in champion.chance:
                against = (
                    f"the higher of the champion + {champion.tolerance} and what no skill reaches by chance on "
                    f"these {champion.rows} rows, {champion.chance[name]:.4f}"
                )
            elif name in no_skill:
                against = (
                    f"the higher of the champion + {champion.tolerance} and no skill, {no_skill[name]:.4f}"
                )
            else:
                against = f"the champion + {champion.tolerance}"
            beside.append(
                f"{name} {shown} is below the floor {floor:.4f}, which champion version {champion.version} is "
                f"below too on these rows ({entry['champion']:.4f}): judged against it, {shown} "
                f"{'>=' if ok else '<'} {bar:.4f} ({against})"
            )
        elif not ok:
            failures.append(
                _one_class(name, value, metrics) or f"{name}={shown} < {round(float(floor), 4)} ({source})"
            )
    margin = float(min(margins)) if margins else None
    plain = "all metric floors hold" if not failures else "below floor: " + ", ".join(failures)
    message = "; ".join(beside) + ("" if not failures else "; " + plain) if beside else plain
    return GateResult(
        gate="metric_floors",
        passed=all(m["passed"] for m in per_metric.values()),
        value=margin,
        threshold=0.0,
        message=message,
        details={"metrics": per_metric, "prevalence": metrics.get("prevalence")}
        | ({} if champion is None else {"champion_version": champion.version}),
    )


def floors_beside_champion(
    result: GateResult,
    challenger: Any,
    champion: Any,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    floors: MetricFloors,
    regression: RegressionConfig,
    *,
    threshold: float,
    champion_threshold: float,
    champion_version: str,
    positive_label: Any = 1,
) -> GateResult:
    """``result`` (``metric_floors`` on the whole holdout) judged again beside the champion, on rows (``X``, ``y``)
    the champion was never fitted on, when it failed and ``gates.floors.champion_below_floor`` is
    ``beat_champion``: see :func:`metric_floors_gate`. ``result`` stands when the champion meets every floor the
    challenger misses there."""
    if result.passed or floors.champion_below_floor == "block":
        return result
    y = np.asarray(y)
    if len(np.unique(_labels(y, positive_label))) < 2:
        return result
    ours = compute_metrics(challenger, X, y, positive_label=positive_label, threshold=threshold)
    theirs = compute_metrics(champion, X, y, positive_label=positive_label, threshold=champion_threshold)
    chance = chance_bars(_labels(y, positive_label), positive_proba(challenger, X, positive_label))
    beside = metric_floors_gate(
        ours, floors, ChampionBeside(champion_version, theirs, regression.tolerance, chance, len(y))
    )
    if not any("bar" in m for m in beside.details["metrics"].values()):
        return result  # the champion meets the floors the challenger misses: the plain failure stands
    beside.details |= {"rows": len(y), "on_full_holdout": result.to_dict()}
    return beside


def _one_class(metric: str, value: float | None, metrics: Mapping[str, float]) -> str | None:
    """Why ``metric`` is undefined (NaN) when the holdout holds one class only (prevalence 0 or 1), else None."""
    prevalence = metrics.get("prevalence")
    if value is None or not np.isnan(value) or prevalence not in (0.0, 1.0):
        return None
    only = "positive" if prevalence == 1.0 else "negative"
    return f"{metric} is undefined: the holdout has one class only (every label {only})"


def no_regression_gate(
    challenger: Any,
    champion: Any | None,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    cfg: RegressionConfig,
    *,
    positive_label: Any = 1,
    threshold: float = 0.5,
    champion_version: str | None = None,
) -> GateResult:
    """The challenger matches or beats the champion on the same holdout, within the tolerance.

    Both models are scored here on the very same ``(X, y)``. Semantics follow MLflow's ``MetricThreshold``:
    ``absolute`` passes when ``challenger >= champion - tolerance``, ``relative`` when
    ``challenger >= champion * (1 - tolerance)``. ``value``/``threshold`` are the first configured metric of the
    challenger and its minimum allowed value. With no champion there is nothing to regress against: the gate
    passes and says so (``details["champion_version"]`` is ``None``).
    """
    ours = compute_metrics(challenger, X, y, positive_label=positive_label, threshold=threshold)
    primary = cfg.metrics[0]
    if champion is None:
        return GateResult(
            gate="no_regression",
            passed=True,
            value=ours[primary],
            threshold=None,
            message="no champion yet: first deployment, nothing to regress against",
            details={"champion_version": None, "challenger": {m: ours[m] for m in cfg.metrics}},
        )
    try:
        theirs = compute_metrics(champion, X, y, positive_label=positive_label, threshold=threshold)
    except (KeyError, ValueError) as err:
        raise GateError(
            f"the champion (version {champion_version}) cannot score the challenger's holdout: {err}"
        ) from err
    per_metric: dict[str, Any] = {}
    failures = []
    for m in cfg.metrics:
        base = theirs[m]
        minimum = base - cfg.tolerance if cfg.mode == "absolute" else base * (1 - cfg.tolerance)
        ok = not np.isnan(ours[m]) and (np.isnan(minimum) or ours[m] >= minimum)
        per_metric[m] = {
            "challenger": ours[m],
            "champion": base,
            "delta": ours[m] - base,
            "min_allowed": minimum,
            "passed": bool(ok),
        }
        if not ok:
            failures.append(
                _one_class(m, ours[m], ours)
                or f"{m} {ours[m]:.4f} < {minimum:.4f} (champion {base:.4f}, {cfg.mode} tolerance {cfg.tolerance})"
            )
    return GateResult(
        gate="no_regression",
        passed=not failures,
        value=ours[primary],
        threshold=per_metric[primary]["min_allowed"],
        message="no regression against the champion"
        if not failures
        else "regression: " + "; ".join(failures),
        details={
            "champion_version": champion_version,
            "mode": cfg.mode,
            "tolerance": cfg.tolerance,
            "metrics": per_metric,
        },
    )


def _measure_latency(
    models: dict[str, Any], X: pd.DataFrame, cfg: LatencyConfig
) -> dict[str, dict[str, float]]:
    rows = [X.iloc[[i % len(X)]] for i in range(cfg.single_row_samples)]
    batch = X.iloc[np.arange(1000) % len(X)]
    for m in models.values():  # warm-up: first calls pay one-off costs (imports, caches)
        m.predict_proba(rows[0])
        m.predict_proba(batch)
    single: dict[str, list[float]] = {k: [] for k in models}
    batch_t: dict[str, list[float]] = {k: [] for k in models}
    for row in rows:
        for name, m in models.items():
            t0 = time.perf_counter()
            m.predict_proba(row)
            single[name].append((time.perf_counter() - t0) * 1e3)
    for _ in range(cfg.batch_repeats):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.predict_proba(batch)
            batch_t[name].append((time.perf_counter() - t0) * 1e3)
    return {
        name: {
            "p95_single_row_ms": float(np.percentile(single[name], 95)),
            "batch_1000_rows_ms": float(np.median(batch_t[name])),
        }
        for name in models
    }


def latency_gate(
    challenger: Any,
    X: pd.DataFrame,
    cfg: LatencyConfig,
    *,
    champion: Any | None = None,
    champion_version: str | None = None,
) -> GateResult:
    """p95 single-row ``predict_proba`` latency and the time for a 1,000-row batch, against the configured
    limits and against the champion measured in the same call (interleaved, so both see the same machine load).

    ``value``/``threshold``: the challenger's p95 single-row latency and its limit, in milliseconds.
    """
    if len(X) == 0:
        raise GateError("latency gate needs at least one row")
    models = {"challenger": challenger} | ({"champion": champion} if champion is not None else {})
    if cfg.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=cfg.threads):
            measured = _measure_latency(models, X, cfg)
    else:
        measured = _measure_latency(models, X, cfg)
    n_single = cfg.single_row_samples
    ours = measured["challenger"]
    failures = []
    if ours["p95_single_row_ms"] > cfg.p95_single_row_ms:
        failures.append(
            f"p95 single-row {ours['p95_single_row_ms']:.1f} ms > limit {cfg.p95_single_row_ms} ms"
        )
    if ours["batch_1000_rows_ms"] > cfg.batch_1000_rows_ms:
        failures.append(
            f"1,000-row batch {ours['batch_1000_rows_ms']:.1f} ms > limit {cfg.batch_1000_rows_ms} ms"
        )
    if "champion" in measured:
        for key, label in (
            ("p95_single_row_ms", "p95 single-row"),
            ("batch_1000_rows_ms", "1,000-row batch"),
        ):
            mine, base = ours[key], measured["champion"][key]
            if mine > base * cfg.max_slowdown and mine - base > cfg.slack_ms:
                failures.append(
                    f"{label} {mine:.1f} ms is more than {cfg.max_slowdown}x the champion's {base:.1f} ms"
                )
    return GateResult(
        gate="latency",
        passed=not failures,
        value=ours["p95_single_row_ms"],
        threshold=cfg.p95_single_row_ms,
        message="latency within limits" if not failures else "; ".join(failures),
        details={
            "challenger": ours,
            "champion": measured.get("champion"),
            "champion_version": champion_version if champion is not None else None,
            "limits": {
                "p95_single_row_ms": cfg.p95_single_row_ms,
                "batch_1000_rows_ms": cfg.batch_1000_rows_ms,
            },
            "max_slowdown": cfg.max_slowdown,
            "slack_ms": cfg.slack_ms,
            "single_row_samples": n_single,
            "threads": cfg.threads,
        },
    )


def perturb(X: pd.DataFrame, noise_level: float, rng: np.random.Generator) -> pd.DataFrame:
    """``X`` with small noise: numeric columns get Gaussian noise of ``noise_level`` x the column's standard
    deviation; other columns get a ``noise_level`` fraction of their values swapped for another observed value."""
    out = X.copy()
    for col in X.columns:
        s = X[col]
        if pd.api.types.is_bool_dtype(s):
            continue
        if pd.api.types.is_numeric_dtype(s):
            std = float(s.std(skipna=True)) if s.notna().sum() > 1 else 0.0
            noise = rng.normal(0.0, noise_level * std, len(s)) if std > 0 else np.zeros(len(s))
            out[col] = s + noise  # NaN stays NaN: missing values are not "noise"
        else:
            observed = s.dropna().unique()
            if len(observed) < 2:
                continue
            flip = rng.random(len(s)) < noise_level
            if flip.any():
                replacement = rng.choice(observed, size=int(flip.sum()))
                col_values = s.to_numpy(dtype=object, copy=True)
                col_values[flip] = replacement
                out[col] = pd.Series(col_values, index=s.index).astype(s.dtype)
    return out


def robustness_gate(
    model: Any, X: pd.DataFrame, cfg: RobustnessConfig, *, positive_label: Any = 1, threshold: float = 0.5
) -> GateResult:
    """Predicted labels barely change under small input noise (see :func:`perturb`).

    ``value`` is the fraction of rows whose predicted label is unchanged; ``threshold`` the minimum agreement.
    """
    if len(X) == 0:
        raise GateError("robustness gate needs at least one row")
    rng = np.random.default_rng(cfg.random_state)
    clean = positive_proba(model, X, positive_label) >= threshold
    noisy = positive_proba(model, perturb(X, cfg.noise_level, rng), positive_label) >= threshold
    agreement = float(np.mean(clean == noisy))
    ok = agreement >= cfg.min_agreement
    return GateResult(
        gate="robustness",
        passed=ok,
        value=agreement,
        threshold=cfg.min_agreement,
        message=(
            f"{agreement:.3f} of predictions unchanged under noise {cfg.noise_level}"
            + ("" if ok else f" (< {cfg.min_agreement})")
        ),
        details={"noise_level": cfg.noise_level, "rows": len(X), "flipped": int(np.sum(clean != noisy))},
    )


def fairness_gate(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    sensitive: pd.Series | np.ndarray,
    cfg: FairnessConfig,
    *,
    positive_label: Any = 1,
    threshold: float = 0.5,
) -> GateResult:
    """The largest difference of the chosen rate between two groups of the sensitive column stays under
    ``cfg.max_difference``.

    ``selection_rate``: share of rows predicted positive; ``true_positive_rate``: share of actual positives
    predicted positive. Groups smaller than ``cfg.min_group_size`` (rows, or actual positives for the TPR) are
    listed but not compared; fewer than two comparable groups fails (a configured gate that cannot measure is not
    a pass). Only call it when ``cfg.sensitive_column`` is set: otherwise the gate does not exist.
    """
    if not cfg.enabled:
        raise GateError("fairness gate is not configured: set fairness.sensitive_column to enable it")
    sens = pd.Series(np.asarray(sensitive, dtype=object), name=cfg.sensitive_column)
    if len(sens) != len(X):
        raise GateError(f"sensitive column has {len(sens)} values for {len(X)} rows")
    y_true = _labels(y, positive_label)
    y_pred = (positive_proba(model, X, positive_label) >= threshold).astype(int)
    groups: dict[str, dict[str, Any]] = {}
    for g in pd.unique(sens.fillna("<missing>")):
        mask = (sens.fillna("<missing>") == g).to_numpy()
        positives = mask & (y_true == 1)
        if cfg.metric == "selection_rate":
            size, rate = int(mask.sum()), float(y_pred[mask].mean())
        else:
            size = int(positives.sum())
            rate = float(y_pred[positives].mean()) if size else float("nan")
        groups[str(g)] = {
            "rows": int(mask.sum()),
            "n": size,
            "rate": rate,
            "compared": size >= cfg.min_group_size,
        }
    compared = {g: v["rate"] for g, v in groups.items() if v["compared"]}
    base_meta = {"sensitive_column": cfg.sensitive_column, "metric": cfg.metric, "groups": groups}
    if len(compared) < 2:
        return GateResult(
            gate="fairness",
            passed=False,
            value=None,
            threshold=cfg.max_difference,
            message=(
                f"cannot compare {cfg.metric} across '{cfg.sensitive_column}': fewer than two groups with "
                f"at least {cfg.min_group_size} {'rows' if cfg.metric == 'selection_rate' else 'positives'}"
            ),
            details=base_meta,
        )
    hi = max(compared, key=compared.__getitem__)
    lo = min(compared, key=compared.__getitem__)
    diff = compared[hi] - compared[lo]
    ok = diff <= cfg.max_difference
    return GateResult(
        gate="fairness",
        passed=ok,
        value=float(diff),
        threshold=cfg.max_difference,
        message=(
            f"largest {cfg.metric} difference {diff:.3f} between '{hi}' ({compared[hi]:.3f}) and '{lo}' "
            f"({compared[lo]:.3f})" + ("" if ok else f" exceeds {cfg.max_difference}")
        ),
        details=base_meta | {"highest_group": hi, "lowest_group": lo},
    )


def sanity_gate(
    model: Any,
    X: pd.DataFrame,
    expected_schema: Mapping[str, str] | Sequence[str] | None = None,
) -> GateResult:
    """Basic contract of a deployable classifier on ``X``.

    Checks: probabilities in [0, 1] with rows summing to 1, no NaN in probabilities or predictions, exactly one
    prediction per row, the input columns (and dtypes, when ``expected_schema`` maps name -> dtype) equal to the
    feature schema, and the model's own ``feature_names_in_`` equal to those columns. ``value`` is the number of
    failed checks (``threshold`` 0).
    """
    problems: list[str] = []
    checks: dict[str, bool] = {}
    n = len(X)
    actual = {c: str(X[c].dtype) for c in X.columns}
    try:
        proba = np.asarray(model.predict_proba(X), dtype=float)
        pred = np.asarray(model.predict(X))
    except (ValueError, KeyError, TypeError) as err:
        # A model that cannot score the feature frame is the plainest sanity failure: reported, not raised.
        return GateResult(
            gate="sanity",
            passed=False,
            value=1.0,
            threshold=0.0,
            message=f"model cannot score the input ({type(err).__name__}: {str(err).strip()[:500]})",
            details={"checks": {"model_scores_input": False}, "rows": n, "input_schema": actual},
        )
    checks["one_prediction_per_row"] = proba.ndim == 2 and proba.shape[0] == n and pred.shape[0] == n
    if not checks["one_prediction_per_row"]:
        problems.append(
            f"{n} rows in, probabilities of shape {proba.shape} and {pred.shape[0]} predictions out"
        )
    checks["no_nan"] = not (np.isnan(proba).any() or pd.isna(pred).any())
    if not checks["no_nan"]:
        problems.append(f"{int(np.isnan(proba).any(axis=-1).sum())} rows with NaN probabilities")
    finite = proba[~np.isnan(proba)]
    checks["proba_in_unit_interval"] = bool(((finite >= 0) & (finite <= 1)).all())
    if not checks["proba_in_unit_interval"]:
        problems.append(f"probabilities outside [0, 1]: min {finite.min():.4g}, max {finite.max():.4g}")
    if proba.ndim == 2 and not np.isnan(proba).any():
        checks["proba_rows_sum_to_one"] = bool(np.allclose(proba.sum(axis=1), 1.0, atol=1e-6))
        if not checks["proba_rows_sum_to_one"]:
            problems.append("probability rows do not sum to 1")
    if expected_schema is not None:
        if isinstance(expected_schema, Mapping):
            expected = {str(k): str(v) for k, v in expected_schema.items()}
            same = list(expected) == list(actual) and expected == actual
        else:
            expected = {str(k): actual.get(str(k), "<missing>") for k in expected_schema}
            same = list(expected) == list(actual)
        checks["input_schema_matches_features"] = same
        if not same:
            missing = [c for c in expected if c not in actual]
            extra = [c for c in actual if c not in expected]
            retyped = {
                c: (expected[c], actual[c]) for c in expected if c in actual and expected[c] != actual[c]
            }
            problems.append(
                f"input schema differs from the feature schema: missing {missing}, extra {extra}, "
                f"dtype changes {retyped}" + ("" if missing or extra or retyped else ", column order differs")
            )
    names_in = getattr(model, "feature_names_in_", None)
    if names_in is not None:
        checks["model_features_match_input"] = list(names_in) == list(X.columns)
        if not checks["model_features_match_input"]:
            problems.append(f"model was fitted on columns {list(names_in)}, input has {list(X.columns)}")
    return GateResult(
        gate="sanity",
        passed=not problems,
        value=float(len(problems)),
        threshold=0.0,
        message="sane" if not problems else "; ".join(problems),
        details={"checks": checks, "rows": n},
    )


def evaluate_gates(
    challenger: Any,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    gates: GatesConfig,
    fairness: FairnessConfig,
    *,
    champion: Any | None = None,
    champion_version: str | None = None,
    sensitive: pd.Series | np.ndarray | None = None,
    expected_schema: Mapping[str, str] | Sequence[str] | None = None,
    positive_label: Any = 1,
    threshold: float | None = None,
    artifact: Any | None = None,
) -> list[GateResult]:
    """Every configured gate on one holdout, in a fixed order; fairness only when it is configured.

    ``threshold`` is the challenger's decision threshold (``gates.decision_threshold`` when not given, else 0.5).
    ``artifact`` is the one fitted model whose prediction latency is timed, when ``challenger`` predicts through
    several (a backtest's folds); default ``challenger``.
    """
    t = threshold if threshold is not None else gates.decision_threshold or 0.5
    metrics = compute_metrics(challenger, X, y, positive_label=positive_label, threshold=t)
    results = [sanity_gate(challenger, X, expected_schema)]
    if any(v is not None for v in gates.floors.model_dump().values()):
        results.append(metric_floors_gate(metrics, gates.floors))
    results += [
        no_regression_gate(
            challenger,
            champion,
            X,
            y,
            gates.regression,
            positive_label=positive_label,
            threshold=t,
            champion_version=champion_version,
        ),
        latency_gate(
            artifact if artifact is not None else challenger,
            X,
            gates.latency,
            champion=champion,
            champion_version=champion_version,
        ),
        robustness_gate(challenger, X, gates.robustness, positive_label=positive_label, threshold=t),
    ]
    if fairness.enabled:
        if sensitive is None:
            raise GateError(
                f"fairness.sensitive_column is '{fairness.sensitive_column}' but no values were given"
            )
        results.append(
            fairness_gate(challenger, X, y, sensitive, fairness, positive_label=positive_label, threshold=t)
        )
    return results


def refit_agrees_gate(
    evaluated: Any,
    refit: Any,
    X: pd.DataFrame,
    cfg: RefitConfig,
    *,
    threshold: float,
    refit_checks: Sequence[GateResult] = (),
    positive_label: Any = 1,
    reference: str = "the evaluated model",
) -> GateResult:
    """The refit (the same recipe fitted on a window ending at the newest labeled partition) makes the decisions of
    ``evaluated`` (described by ``reference``: the model the gates judged, or the newest of a backtest's models) on
    the holdout, and passed its own sanity, latency and robustness checks (``refit_checks``).

    ``value`` is the ROC AUC of the refit's probabilities against the evaluated model's decisions at ``threshold``
    (1: the refit ranks every row the evaluated model calls positive above every row it calls negative; 0.5: no
    relation); ``threshold`` the configured minimum. When the evaluated model calls every holdout row the same, its
    top tenth by probability stands in for its positives. ``details`` adds the share of rows with the same label,
    the rank correlation and the mean absolute difference of the probabilities, and each refit check.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    if len(X) < 2:
        raise GateError("refit agreement gate needs at least two holdout rows")
    ours = positive_proba(evaluated, X, positive_label)
    theirs = positive_proba(refit, X, positive_label)
    decisions = ours >= threshold
    stand_in = bool(decisions.all() or not decisions.any())
    if stand_in:
        decisions = ours >= np.quantile(ours, 0.9)
    measurable = 0 < decisions.sum() < len(decisions)
    decision_auc = float(roc_auc_score(decisions, theirs)) if measurable else float("nan")
    constant = np.ptp(ours) == 0 or np.ptp(theirs) == 0
    problems = []
    if not measurable:
        problems.append(f"{reference} gives every holdout row the same probability: nothing to agree on")
    elif decision_auc < cfg.min_decision_auc:
        problems.append(
            f"the refit does not make the decisions of {reference}: ROC AUC {decision_auc:.3f} against them "
            f"< {cfg.min_decision_auc}"
        )
    problems += [f"the refit fails {r.gate}: {r.message}" for r in refit_checks if not r.passed]
    ok_message = (
        f"the refit makes the decisions of {reference} (ROC AUC {decision_auc:.3f} against them) and passes "
        + ", ".join(r.gate for r in refit_checks)
    )
    return GateResult(
        gate="refit_agrees",
        passed=not problems,
        value=decision_auc if measurable else None,
        threshold=cfg.min_decision_auc,
        message=ok_message if not problems else "; ".join(problems),
        details={
            "label_agreement": float(np.mean((ours >= threshold) == (theirs >= threshold))),
            "rank_correlation": None if constant else float(spearmanr(ours, theirs).statistic),
            "mean_abs_probability_difference": float(np.mean(np.abs(ours - theirs))),
            "decisions_stand_in": "top tenth by probability" if stand_in else None,
            "rows": len(X),
            "decision_threshold": threshold,
            "refit_checks": [r.to_dict() for r in refit_checks],
        },
    )
