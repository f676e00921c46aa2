"""The shadow comparison: a challenger scored beside the champion on live requests (``rollout.mode: shadow``),
judged on what both answered for the same rows before it may be promoted.

Each criterion of :class:`~mlops_assets.config.ShadowConfig` is judged on the logged pairs
(:meth:`~mlops_assets.serving.prediction_log.PredictionLog.shadow_pairs`) or reported as not judged, saying why;
a criterion not judged never counts as passed, and the comparison passes only when every judged criterion passes
and at least one was judged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlops_assets.config import ShadowConfig

# A paired live ROC AUC drop must also exceed this many standard errors (Hanley & McNeil, both sides): one judgment
# per shadow, on a few hundred labels.
AUC_DROP_Z = 2.0


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool | None  # None: not judged (the message says why)
    measured: float | None
    threshold: float | None
    message: str


@dataclass(frozen=True)
class ShadowVerdict:
    """The comparison of shadow ``version`` with champion ``champion_version`` on ``pairs`` rows."""

    version: str
    champion_version: str | None
    pairs: int
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        judged = [c for c in self.criteria if c.passed is not None]
        return bool(judged) and all(c.passed for c in judged)

    @property
    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if c.passed is False]

    def summary(self) -> str:
        if self.passed:
            return (
                f"version {self.version} matched champion {self.champion_version} on {self.pairs} live rows: "
                + "; ".join(c.message for c in self.criteria if c.passed)
            )
        if not self.failed:
            return f"version {self.version}: nothing could be judged on {self.pairs} live rows"
        return (
            f"version {self.version} against champion {self.champion_version} on {self.pairs} live rows: "
            + ("; ".join(c.message for c in self.failed))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "champion_version": self.champion_version,
            "pairs": self.pairs,
            "passed": self.passed,
            "criteria": [asdict(c) for c in self.criteria],
        }


def score_psi(reference: np.ndarray, other: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``other``'s scores against ``reference``'s over ``bins`` equal-width
    probability bins (empty bins count as half a row, so one empty bin does not read as infinite shift).

    Fixed bins, not the reference's deciles: a confident model's scores pile up near 0 and 1, and a retrain on
    more data is often more confident still (0.001 where the champion said 0.01); deciles of such scores cut
    between near-identical values and read that as a large shift, while fixed bins keep both in the same bin."""
    edges = np.linspace(0, 1, bins + 1)[1:-1]
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    new = np.bincount(np.searchsorted(edges, other, side="right"), minlength=bins)
    p = np.maximum(ref, 0.5) / max(len(reference), 1)
    q = np.maximum(new, 0.5) / max(len(other), 1)
    return float(np.sum((q - p) * np.log(q / p)))


def compare(
    pairs: dict[str, list], settings: ShadowConfig, version: str, champion: str | None
) -> ShadowVerdict:
    """Judge shadow ``version`` on ``pairs`` (the columns of ``shadow_pairs``) at ``settings``."""
    from sklearn.metrics import roc_auc_score

    from mlops_assets.serving.probation import auc_standard_error

    n = len(pairs.get("champion_prediction", []))
    criteria: list[Criterion] = []
    if n < settings.min_requests:
        criteria.append(
            Criterion(
                "rows",
                False,
                float(n),
                float(settings.min_requests),
                f"{n} live rows scored by both, fewer than the {settings.min_requests} a comparison needs",
            )
        )
        return ShadowVerdict(version, champion, n, criteria)
    errors = np.array([e is not None for e in pairs["error"]], dtype=bool)
    if settings.max_error_rate is not None:
        rate = float(errors.mean())
        criteria.append(
            Criterion(
                "error_rate",
                rate <= settings.max_error_rate,
                rate,
                settings.max_error_rate,
                f"the shadow failed to score {errors.sum()} of {n} rows ({rate:.1%}; limit "
                f"{settings.max_error_rate:.1%})",
            )
        )
    ok = ~errors
    champ_pred, champ_p = (
        _column(pairs, "champion_prediction")[ok],
        _column(pairs, "champion_probability")[ok],
    )
    shadow_pred, shadow_p = _column(pairs, "prediction")[ok], _column(pairs, "probability")[ok]
    scored = int(ok.sum())
    if scored == 0:
        criteria.append(Criterion("scored", False, 0.0, None, "the shadow scored none of the rows"))
        return ShadowVerdict(version, champion, n, criteria)
    if settings.min_agreement is not None:
        agreement = float((champ_pred == shadow_pred).mean())
        criteria.append(
            Criterion(
                "agreement",
                agreement >= settings.min_agreement,
                agreement,
                settings.min_agreement,
                f"decided as the champion on {agreement:.1%} of {scored} rows (at least "
                f"{settings.min_agreement:.0%})",
            )
        )
    if settings.max_score_psi is not None:
        psi = score_psi(champ_p, shadow_p)
        criteria.append(
            Criterion(
                "score_shift",
                psi <= settings.max_score_psi,
                psi,
                settings.max_score_psi,
                f"score shift against the champion's (PSI) {psi:.3f} (at most {settings.max_score_psi:g})",
            )
        )
    if settings.max_p95_latency_ratio is not None:
        shadow_ms = np.asarray([v for v in pairs["latency_ms"] if v is not None], dtype=float)
        champ_ms = np.asarray(pairs["champion_latency_ms"], dtype=float)
        if len(shadow_ms) == 0:
            criteria.append(
                Criterion("latency", None, None, None, "latency not judged: no timed shadow call")
            )
        else:
            p95, champ95 = float(np.percentile(shadow_ms, 95)), float(np.percentile(champ_ms, 95))
            limit = max(settings.max_p95_latency_ratio * champ95, settings.latency_floor_ms)
            criteria.append(
                Criterion(
                    "latency",
                    p95 <= limit,
                    p95,
                    limit,
                    f"p95 model call {p95:.1f} ms against the champion's {champ95:.1f} ms on the same batches "
                    f"(at most {limit:.1f} ms)",
                )
            )
    if settings.max_live_auc_drop is not None:
        labels = _column(pairs, "label")[ok]
        has = ~np.isnan(labels)
        y = labels[has].astype(int)
        if len(y) < settings.min_labels or len(set(y.tolist())) < 2:
            criteria.append(
                Criterion(
                    "live_roc_auc",
                    None,
                    None,
                    float(settings.min_labels),
                    f"live ROC AUC not judged: {len(y)} labeled rows"
                    + (" of one class" if len(y) and len(set(y.tolist())) < 2 else "")
                    + f" (needs {settings.min_labels} of both classes)",
                )
            )
        else:
            live, before = float(roc_auc_score(y, shadow_p[has])), float(roc_auc_score(y, champ_p[has]))
            pos, neg = int(y.sum()), int(len(y) - y.sum())
            se = math.hypot(auc_standard_error(live, pos, neg), auc_standard_error(before, pos, neg))
            drop = before - live
            breach = drop > settings.max_live_auc_drop and drop > AUC_DROP_Z * se
            criteria.append(
                Criterion(
                    "live_roc_auc",
                    not breach,
                    live,
                    before - settings.max_live_auc_drop,
                    f"live ROC AUC {live:.3f} against the champion's {before:.3f} on the same {len(y)} labeled "
                    f"rows (a drop above {settings.max_live_auc_drop:g} and {AUC_DROP_Z:g} standard errors "
                    "fails)",
                )
            )
    return ShadowVerdict(version, champion, n, criteria)


def _column(pairs: dict[str, list], name: str) -> np.ndarray:
    """One column of the pairs as floats, None (no answer, no label yet) as NaN."""
    return np.array([np.nan if v is None else v for v in pairs[name]], dtype=float)
