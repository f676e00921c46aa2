"""Drift of a frame (a partition, a batch of predictions, of labels) against a stored reference :class:`Profile`.

Each column gets two answers, and drifts only when both say yes:

* **Is the change real?** A sample-size-aware two-sample test against the reference bins: Kolmogorov-Smirnov on
  the binned CDFs for numeric columns, chi-squared homogeneity for categorical ones, a two-proportion z-test for the
  null rate. Both sample sizes enter (the reference is a sample too), reduced to their effective size when the
  reference shows serial correlation, and the p-values are corrected for the number of tests (Holm by default).
* **Does it matter?** An effect-size floor: the Wasserstein-1 distance in units of the reference's robust standard
  deviation, the Jensen-Shannon distance, the absolute change of the null fraction. A million rows make every
  difference significant; the floor keeps a 0.02-standard-deviation wobble from paging anyone.

With a seasonal profile, the reference for a frame is the mixture of the reference seasons in the proportions the
frame's rows fall into them: a January partition is compared with the reference Januaries, a year with the year.

Prediction drift and label drift use the same function over one column (a predicted probability profiled as
numeric, a label profiled as categorical).

Everything is vectorized: one ``searchsorted`` and two ``bincount`` per column, no sort of the current data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_assets.monitoring.profile import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    Profile,
    categorical_values,
    numeric_values,
    season_index,
)
from mlops_assets.monitoring.settings import DriftConfig
from mlops_assets.monitoring.stats import ks_pvalue


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict for one column. ``p_value_adjusted`` is after the multiple-testing correction."""

    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    p_value_adjusted: float
    distance_name: Literal["wasserstein_norm", "jensen_shannon"]
    distance: float
    threshold: float
    drifted: bool
    strong: bool
    n_reference: int
    n_current: int
    n_effective: (
        float  # the two-sample effective size the test used: n_r * n_c / (n_r + n_c), after the design effect
    )
    null_rate_reference: float
    null_rate_current: float
    null_p_value_adjusted: float | None  # None when neither side has nulls (no test run)
    null_drifted: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """Per-column results plus the overall verdict: ``drifted`` if any column drifted, ``strong`` if any column
    carries a strong signal (corrected p below ``strong_alpha`` and distance at least ``strong_factor`` x floor)."""

    features: list[FeatureDrift]
    drifted: bool
    strong: bool
    n_current: int
    alpha: float
    correction: str
    seasonality: str
    tests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def drifted_features(self) -> list[str]:
        return [f.column for f in self.features if f.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def feature(self, column: str) -> FeatureDrift:
        for f in self.features:
            if f.column == column:
                return f
        raise KeyError(f"column {column!r} is not in this drift report")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (asset-check metadata, reports)."""
        return {
            "drifted": self.drifted,
            "strong": self.strong,
            "drifted_features": self.drifted_features,
            "share_drifted": self.share_drifted,
            "n_current": self.n_current,
            "alpha": self.alpha,
            "correction": self.correction,
            "seasonality": self.seasonality,
            "tests": self.tests,
            "notes": list(self.notes),
            "features": [f.to_dict() for f in self.features],
        }


# --------------------------------------------------------------------------------------------------------------
# Reference mixture for a frame's seasons


@dataclass(frozen=True)
class _Mixture:
    weights: np.ndarray  # (seasons,) share of the frame's rows in each season
    fallback: np.ndarray  # (seasons,) bool: reference too thin in that season -> pooled reference


def _mix(counts: np.ndarray, per_row: np.ndarray, mix: _Mixture) -> tuple[np.ndarray, float]:
    """Expected distribution of ``per_row`` (counts or sums, shape (seasons, k)) normalized by the season's
    ``counts`` total, mixed with the frame's season weights; and the reference's effective size for that mixture.
    """
    n_s = counts.sum(axis=1).astype(float)
    n_all = float(n_s.sum())
    pooled = per_row.sum(axis=0) / n_all
    out = np.zeros(per_row.shape[1])
    inv_n = 0.0
    for s in np.flatnonzero(mix.weights):
        w = mix.weights[s]
        if mix.fallback[s] or n_s[s] == 0:
            out += w * pooled
            inv_n += w * w / n_all
        else:
            out += w * per_row[s] / n_s[s]
            inv_n += w * w / n_s[s]
    return out, (1.0 / inv_n if inv_n > 0 else n_all)


def _season_shares(seasons: np.ndarray, n_seasons: int) -> np.ndarray:
    """Share of rows in each season (all zeros for no rows)."""
    if n_seasons == 1:
        return np.ones(1) if len(seasons) else np.zeros(1)
    counts = np.bincount(seasons, minlength=n_seasons).astype(float)
    return counts / counts.sum() if len(seasons) else counts


# --------------------------------------------------------------------------------------------------------------
# Statistics


def _ks_pvalue(d: float, n_eff: float) -> float:
    return float(ks_pvalue(d, n_eff))


def _wasserstein(
    edges: np.ndarray, q_r: np.ndarray, m_r: np.ndarray, q_c: np.ndarray, m_c: np.ndarray
) -> float:
    """Wasserstein-1 from bin probabilities ``q`` and bin partial means ``m = E[X; X in bin]``.

    Over each segment between edges (and each open tail) the integral of F_ref - F_cur is exact given those two
    numbers per bin; summing the absolute values is exact whenever the CDFs do not cross inside a bin.
    """
    if len(edges) == 0:
        return float(abs(m_r[0] - m_c[0]))

    # Signed integral of F over each segment, for one distribution: lower tail, interior bins, upper tail.
    def segments(q: np.ndarray, m: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(q)
        lower = edges[0] * q[0] - m[0]
        widths = np.diff(edges)
        interior = widths * cdf[:-2] + edges[1:] * q[1:-1] - m[1:-1]
        upper = -(m[-1] - edges[-1] * q[-1])  # integral of (1 - F) enters with the opposite sign
        return np.concatenate([[lower], interior, [upper]])

    return float(np.abs(segments(q_r, m_r) - segments(q_c, m_c)).sum())


def _adjust(p: np.ndarray, method: str) -> np.ndarray:
    m = len(p)
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


def _two_proportion_p(r1: float, n1: float, r2: float, n2: float) -> float:
    pooled = (r1 * n1 + r2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) if n1 > 0 and n2 > 0 else 0.0
    if se == 0:
        return 1.0 if r1 == r2 else 0.0
    from scipy import stats  # here, not at the top: `status` imports this module and never tests drift

    return float(2 * stats.norm.sf(abs(r1 - r2) / se))


def _inflation(design_effect: float, cfg: DriftConfig) -> float:
    """Fraction of rows that count as independent observations (see the profile's design effect)."""
    if not cfg.dependence_adjustment:
        return 1.0
    return 1.0 / max(design_effect, 1.0)


# --------------------------------------------------------------------------------------------------------------
# Per-column comparison: raw numbers before the multiple-testing correction


@dataclass
class _Raw:
    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    distance_name: Literal["wasserstein_norm", "jensen_shannon"]
    distance: float
    threshold: float
    n_reference: int
    n_current: int
    n_effective: float
    null_rate_reference: float
    null_rate_current: float
    null_p_value: float | None
    q_ref: np.ndarray
    q_cur: np.ndarray
    note: str = ""


def _null_part(
    nulls_ref: np.ndarray, season_rows: np.ndarray, isnull: np.ndarray, mix_all: _Mixture, factor: float
) -> tuple[float, float, float | None]:
    rate_ref, n_ref = _mix(season_rows[:, None].astype(float), nulls_ref[:, None].astype(float), mix_all)
    r_ref = float(rate_ref[0])
    r_cur = float(isnull.mean()) if len(isnull) else 0.0
    if r_ref == 0 and r_cur == 0:
        return r_ref, r_cur, None
    p = _two_proportion_p(r_ref, n_ref * factor, r_cur, max(len(isnull) * factor, 1.0))
    return r_ref, r_cur, p


def _numeric(
    prof: NumericProfile, x: np.ndarray, seasons: np.ndarray, season_rows: np.ndarray, cfg: DriftConfig
) -> _Raw:
    n_seasons = prof.counts.shape[0]
    valid = ~np.isnan(x)
    complete = bool(valid.all())
    xv = x if complete else x[valid]  # no copy in the common case
    fallback = prof.counts.sum(axis=1) < cfg.min_season_rows
    mix_all = _Mixture(_season_shares(seasons, n_seasons), fallback)
    mix_valid = mix_all if complete else _Mixture(_season_shares(seasons[valid], n_seasons), fallback)
    factor = _inflation(prof.design_effect, cfg)
    r_null, c_null, p_null = _null_part(prof.nulls, season_rows, ~valid, mix_all, factor)
    k = len(prof.edges) + 1
    note = (
        "fallback to the pooled reference for thin seasons"
        if (mix_valid.fallback & (mix_valid.weights > 0)).any()
        else ""
    )
    if len(xv) == 0:
        return _Raw(
            prof.name,
            "numeric",
            "ks",
            0.0,
            1.0,
            "wasserstein_norm",
            0.0,
            cfg.wasserstein_threshold,
            int(prof.counts.sum()),
            0,
            0.0,
            r_null,
            c_null,
            p_null,
            np.zeros(k),
            np.zeros(k),
            "no non-null values in the current frame",
        )
    idx = np.searchsorted(prof.edges, xv, side="left")
    q_c = np.bincount(idx, minlength=k) / len(xv)
    m_c = np.bincount(idx, weights=xv, minlength=k) / len(xv)
    q_r, n_ref = _mix(prof.counts, prof.counts.astype(float), mix_valid)
    m_r, _ = _mix(prof.counts, prof.sums, mix_valid)
    d = float(np.max(np.abs(np.cumsum(q_r)[:-1] - np.cumsum(q_c)[:-1]))) if k > 1 else 0.0
    n1, n2 = n_ref * factor, len(xv) * factor
    n_eff = n1 * n2 / (n1 + n2)
    w = _wasserstein(prof.edges, q_r, m_r, q_c, m_c) / prof.scale
    return _Raw(
        prof.name,
        "numeric",
        "ks",
        d,
        _ks_pvalue(d, n_eff),
        "wasserstein_norm",
        w,
        cfg.wasserstein_threshold,
        int(prof.counts.sum()),
        len(xv),
        n_eff,
        r_null,
        c_null,
        p_null,
        q_r,
        q_c,
        note,
    )


def _categorical(
    prof: CategoricalProfile,
    frame: pd.DataFrame,
    seasons: np.ndarray,
    season_rows: np.ndarray,
    cfg: DriftConfig,
) -> _Raw:
    n_seasons = prof.counts.shape[0]
    values, isnull = categorical_values(frame, prof.name)
    valid = ~isnull
    v = values[valid]
    fallback = prof.counts.sum(axis=1) < cfg.min_season_rows
    mix_all = _Mixture(_season_shares(seasons, n_seasons), fallback)
    mix_valid = _Mixture(_season_shares(seasons[valid], n_seasons), fallback)
    factor = _inflation(prof.design_effect, cfg)
    r_null, c_null, p_null = _null_part(prof.nulls, season_rows, isnull, mix_all, factor)
    k = len(prof.categories)
    codes = pd.Categorical(v, categories=prof.categories).codes.astype(np.int64)
    unseen = codes < 0
    note = ""
    if unseen.any():
        if OTHER in prof.categories:
            codes[unseen] = prof.categories.index(OTHER)
        else:
            codes[unseen] = k  # a slot the reference never saw
        note = f"{int(unseen.sum())} rows with values not in the reference"
    slots = k + 1
    counts_ref = np.concatenate([prof.counts, np.zeros((n_seasons, 1), dtype=np.int64)], axis=1)
    if len(v) == 0:
        return _Raw(
            prof.name,
            "categorical",
            "chi2",
            0.0,
            1.0,
            "jensen_shannon",
            0.0,
            cfg.jensen_shannon_threshold,
            int(prof.counts.sum()),
            0,
            0.0,
            r_null,
            c_null,
            p_null,
            np.zeros(slots),
            np.zeros(slots),
            "no non-null values in the current frame",
        )
    q_c = np.bincount(codes, minlength=slots) / len(v)
    q_r, n_ref = _mix(counts_ref, counts_ref.astype(float), mix_valid)
    n1, n2 = n_ref * factor, len(v) * factor
    n_eff = n1 * n2 / (n1 + n2)
    pooled = (n1 * q_r + n2 * q_c) / (n1 + n2)
    used = pooled > 0
    chi2 = float(n_eff * (((q_r - q_c) ** 2)[used] / pooled[used]).sum())
    dof = int(used.sum()) - 1
    from scipy import stats

    p = float(stats.chi2.sf(chi2, dof)) if dof > 0 else 1.0
    # Jensen-Shannon distance, base 2 (0 = identical, 1 = disjoint).
    mid = (q_r + q_c) / 2
    kl = lambda a: float(np.sum(a[a > 0] * np.log2(a[a > 0] / mid[a > 0])))  # noqa: E731
    js = float(np.sqrt(max(0.0, (kl(q_r) + kl(q_c)) / 2)))
    return _Raw(
        prof.name,
        "categorical",
        "chi2",
        chi2,
        p,
        "jensen_shannon",
        js,
        cfg.jensen_shannon_threshold,
        int(prof.counts.sum()),
        len(v),
        n_eff,
        r_null,
        c_null,
        p_null,
        q_r,
        q_c,
        note,
    )


def _raw_results(
    profile: Profile, frame: pd.DataFrame, cfg: DriftConfig, columns: Sequence[str] | None
) -> tuple[list[_Raw], list[str]]:
    cols = list(profile.columns) if columns is None else list(columns)
    unknown = [c for c in cols if c not in profile.columns]
    if unknown:
        raise KeyError(f"columns not in the reference profile: {unknown} (profiled: {list(profile.columns)})")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise KeyError(f"columns missing from the current frame: {missing}")
    if len(frame) == 0:
        raise ValueError("cannot check drift on an empty frame")
    n_seasons = len(profile.season_rows)
    notes: list[str] = []
    if profile.seasonality == "none" or n_seasons == 1:
        seasons = np.zeros(len(frame), dtype=np.int64)
    else:
        ts_col = profile.timestamp_column
        if ts_col is None or ts_col not in frame.columns:
            raise KeyError(
                f"the profile is seasonal ({profile.seasonality}) but the frame has no timestamp column {ts_col!r}"
            )
        seasons = season_index(frame[ts_col], profile.seasonality)
    results: list[_Raw] = []
    for c in cols:
        prof = profile.columns[c]
        rows = profile.season_rows
        if isinstance(prof, NumericProfile):
            results.append(_numeric(prof, numeric_values(frame, c), seasons, rows, cfg))
        else:
            results.append(_categorical(prof, frame, seasons, rows, cfg))
    return results, notes


def detect_drift(
    profile: Profile,
    frame: pd.DataFrame,
    cfg: DriftConfig | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Compare ``frame`` with the reference ``profile`` (all profiled columns, or ``columns``).

    A column drifts when its corrected p-value is below ``cfg.alpha`` *and* its distance reaches the floor (or the
    same for its null rate). The correction runs over every test of this call, so one call per partition over all
    features keeps the per-partition false-alarm rate at ``alpha``.
    """
    cfg = cfg or DriftConfig()
    raws, notes = _raw_results(profile, frame, cfg, columns)
    # One family: a distribution test per column, plus a null-rate test where either side has nulls.
    pvals = [r.p_value for r in raws] + [r.null_p_value for r in raws if r.null_p_value is not None]
    adjusted = _adjust(np.asarray(pvals, dtype=float), cfg.correction)
    n_cols = len(raws)
    null_adj: dict[int, float] = {}
    j = n_cols
    for i, r in enumerate(raws):
        if r.null_p_value is not None:
            null_adj[i] = float(adjusted[j])
            j += 1
    features: list[FeatureDrift] = []
    for i, r in enumerate(raws):
        p_adj = float(adjusted[i])
        dist_drift = p_adj < cfg.alpha and r.distance >= r.threshold
        strong = p_adj < cfg.strong_alpha and r.distance >= cfg.strong_factor * r.threshold
        np_adj = null_adj.get(i)
        null_gap = abs(r.null_rate_current - r.null_rate_reference)
        null_drift = np_adj is not None and np_adj < cfg.alpha and null_gap >= cfg.null_rate_threshold
        if (
            np_adj is not None
            and np_adj < cfg.strong_alpha
            and null_gap >= cfg.strong_factor * cfg.null_rate_threshold
        ):
            strong = True
        features.append(
            FeatureDrift(
                column=r.column,
                kind=r.kind,
                test=r.test,
                statistic=r.statistic,
                p_value=r.p_value,
                p_value_adjusted=p_adj,
                distance_name=r.distance_name,
                distance=r.distance,
                threshold=r.threshold,
                drifted=bool(dist_drift or null_drift),
                strong=bool(strong),
                n_reference=r.n_reference,
                n_current=r.n_current,
                n_effective=r.n_effective,
                null_rate_reference=r.null_rate_reference,
                null_rate_current=r.null_rate_current,
                null_p_value_adjusted=np_adj,
                null_drifted=bool(null_drift),
                note=r.note,
            )
        )
    return DriftReport(
        features=features,
        drifted=any(f.drifted for f in features),
        strong=any(f.strong for f in features),
        n_current=len(frame),
        alpha=cfg.alpha,
        correction=cfg.correction,
        seasonality=profile.seasonality,
        tests=len(pvals),
        notes=notes,
    )


def drift_plot(
    profile: Profile, frame: pd.DataFrame, report: DriftReport, cfg: DriftConfig | None = None
) -> bytes:
    """A PNG: for each column of ``report``, the reference (season-matched) and current bin probabilities, titled
    with the test result; drifted columns in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or DriftConfig()
    cols = [f.column for f in report.features]
    raws, _ = _raw_results(profile, frame, cfg, cols)
    n = max(len(raws), 1)
    ncols = min(4, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, raw, feat in zip(axes.flat, raws, report.features, strict=False):
        k = len(raw.q_ref)
        x = np.arange(k)
        ax.bar(x - 0.2, raw.q_ref, width=0.4, label="reference", color="#8da0cb")
        ax.bar(x + 0.2, raw.q_cur, width=0.4, label="current", color="#fc8d62")
        prof = profile.columns[raw.column]
        if isinstance(prof, CategoricalProfile):
            labels = [*prof.categories, "(unseen)"]
            ax.set_xticks(x, labels, rotation=90, fontsize=6)
        else:
            ax.set_xlabel("reference quantile bin", fontsize=7)
        verdict = "DRIFT" if feat.drifted else "ok"
        ax.set_title(
            f"{feat.column} [{verdict}]\n{feat.test} p_adj={feat.p_value_adjusted:.2g} "
            f"{feat.distance_name}={feat.distance:.3f} (>= {feat.threshold:g})",
            fontsize=8,
            color="#b2182b" if feat.drifted else "black",
        )
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"drift vs reference: {len(report.drifted_features)}/{len(report.features)} columns drifted "
        f"(n={report.n_current}, alpha={report.alpha:g}, {report.correction})",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
