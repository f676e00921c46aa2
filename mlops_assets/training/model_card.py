"""The model card: one Markdown page per registered version (the window it was fitted on and how old that data is,
its decision threshold, metrics beside the champion's, gate results, feature version). Shown as Dagster metadata and stored with the MLflow version (its description and
``model_cards/v<N>.md``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_METRIC_ORDER = ("roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_model_card(
    *,
    model_name: str,
    version: str | None,
    metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    gate_results: Sequence[Any] = (),
    data_window: str | None = None,
    window_end: datetime | None = None,
    backtest: Sequence[Mapping[str, str]] | None = None,
    holdout_window: str | None = None,
    threshold: str | None = None,
    partition_count: int | None = None,
    feature_version: str | None = None,
    estimator: str | None = None,
    params: Mapping[str, Any] | None = None,
    training_rows: int | None = None,
    holdout_rows: int | None = None,
    dagster_run_id: str | None = None,
    created_at: datetime | None = None,
) -> str:
    """Markdown model card. ``gate_results`` are ``GateResult`` objects or their dicts; the metrics of the champion
    are its scores on the same holdout when known (otherwise the column says so).

    ``data_window`` is what this model was fitted on and ``window_end`` the (exclusive) end of its newest partition,
    from which the card states the data's age; ``backtest`` is set for a refit (the gates judged the same recipe
    by a rolling-origin backtest: per fold, the holdout partitions and the window the recipe was fitted on to predict
    them); ``threshold`` describes the decision threshold.
    """
    created_dt = created_at or datetime.now(UTC)
    created = created_dt.isoformat(timespec="seconds")
    title_version = f" version {version}" if version is not None else ""
    lines = [f"# Model card: {model_name}{title_version}", "", f"Created {created}.", ""]
    lines += ["## Training data", ""]
    window = data_window or "not recorded"
    if window_end is not None:
        end = window_end if window_end.tzinfo else window_end.replace(tzinfo=UTC)
        age = (created_dt - end).days
        window += (
            f" (data up to {end.date().isoformat()}, {age} day{'s' if age != 1 else ''} old at creation)"
        )
    lines.append(f"- Data window: {window}")
    if backtest:
        folds = "; ".join(f"{f['holdout']} predicted by the recipe fitted on {f['fitted']}" for f in backtest)
        lines.append(
            "- Refit: the release gates judged the same recipe by a rolling-origin backtest over the holdout "
            f"({folds}); this model is that recipe refit on the newest data"
        )
    if holdout_window:
        lines.append(f"- Holdout window: {holdout_window}")
    if partition_count is not None:
        lines.append(f"- Partitions: {partition_count}")
    if training_rows is not None:
        lines.append(f"- Training rows: {training_rows}")
    if holdout_rows is not None:
        lines.append(f"- Holdout rows (newest data, never fitted on): {holdout_rows}")
    lines.append(f"- Feature code version: {feature_version or 'not recorded'}")
    if dagster_run_id:
        lines.append(f"- Dagster run: `{dagster_run_id}`")
    lines.append("")
    if estimator or params:
        lines += ["## Model", ""]
        if estimator:
            lines.append(f"- Estimator: {estimator}")
        for k, v in sorted((params or {}).items()):
            lines.append(f"- `{k}`: {_cell(v)}")
        lines.append("")
    if threshold:
        lines += [
            "## Decision threshold",
            "",
            f"Predict positive when the probability is at least {threshold}.",
            "",
        ]
    lines += ["## Holdout metrics", ""]
    champ_head = f"champion (v{champion_version})" if champion_version else "champion"
    lines += [f"| metric | this model | {champ_head} | difference |", "|---|---|---|---|"]
    names = [m for m in _METRIC_ORDER if m in metrics] + sorted(set(metrics) - set(_METRIC_ORDER))
    for m in names:
        ours = metrics[m]
        theirs = (champion_metrics or {}).get(m)
        diff = None if theirs is None else ours - theirs
        lines.append(f"| {m} | {_fmt(ours)} | {_fmt(theirs)} | {'—' if diff is None else f'{diff:+.4f}'} |")
    if champion_metrics is None and champion_version is not None:
        lines += [
            "",
            f"Champion version {champion_version} is not scored here: it uses other feature definitions, or it "
            "was fitted on this holdout (a refit); see the no_regression gate.",
        ]
    elif champion_metrics is None:
        lines += ["", "No champion to compare with: this would be the first deployment."]
    lines += ["", "## Release gates", ""]
    if not gate_results:
        lines.append("No gate results recorded.")
    else:
        lines += ["| gate | result | measured | threshold | details |", "|---|---|---|---|---|"]
        rows = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in gate_results]
        for d in rows:
            verdict = "pass" if d.get("passed") else "**FAIL**"
            lines.append(
                f"| {_cell(d.get('gate'))} | {verdict} | {_fmt(d.get('value'))} | {_fmt(d.get('threshold'))} "
                f"| {_cell(d.get('message', ''))} |"
            )
        failed = [str(d.get("gate")) for d in rows if not d.get("passed")]
        lines += ["", "All gates passed." if not failed else f"Blocked by: {', '.join(failed)}."]
    lines.append("")
    return "\n".join(lines)
