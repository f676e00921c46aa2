"""Small statistical helpers shared by the profile (calibration) and the drift tests."""

from __future__ import annotations

import numpy as np
from scipy import special


def ks_pvalue(d: np.ndarray | float, n_eff: np.ndarray | float) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov p-value for statistic ``d`` at effective size ``n_eff`` (n1 n2 / (n1 + n2)),
    with Stephens' small-sample correction. On binned CDFs the maximum is taken over fewer points than the exact
    statistic, so the test is, if anything, conservative. Vectorized."""
    d = np.asarray(d, dtype=float)
    n = np.maximum(np.asarray(n_eff, dtype=float), 1e-12)
    sq = np.sqrt(n)
    p = special.kolmogorov((sq + 0.12 + 0.11 / sq) * d)
    return np.where((d <= 0) | (np.asarray(n_eff) <= 0), 1.0, np.minimum(1.0, p))


def design_effect_for_median_p(d: np.ndarray, n_eff: np.ndarray, *, max_effect: float = 1000.0) -> float:
    """The smallest factor ``f >= 1`` such that, dividing every sample size by ``f``, the median KS p-value of the
    blocks ``(d, n_eff)`` is at least 0.5 (what independent blocks from one distribution give)."""

    def median_p(f: float) -> float:
        return float(np.median(ks_pvalue(d, n_eff / f)))

    if median_p(1.0) >= 0.5:
        return 1.0
    if median_p(max_effect) < 0.5:
        return max_effect
    lo, hi = 1.0, max_effect
    for _ in range(60):  # bisection on a monotone function; 60 halvings are far below any useful precision
        mid = np.sqrt(lo * hi)
        if median_p(mid) >= 0.5:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.001:
            break
    return float(hi)
