"""Check results (the data gates, the release gates, the drift check) as alert events, and the all-clear of a
check that passes again.

Input rows are plain dicts, as the run report holds them (``asset``, ``check``, ``passed``, ``blocking``,
``metadata`` with ``measured``, ``threshold``, ``failing_partitions``, ``message``): the in-process run and the
Dagster sensor on the event log both build them, so a failed non-blocking check (drift), which fails no run and so
reaches no run-failure sensor, is alerted all the same.

One incident per check, not per partition: the dedup key names the check, and the failing partitions are listed
in the one message (a backfill over 50 partitions with a corrupt column is one alert). The release gates of one
challenger are one incident: the gates that failed, in one message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlops_assets.alerts.dispatch import Alerter, AlertRecord
from mlops_assets.alerts.events import AlertEvent

DRIFT_CHECK = "features_match_champion_profile"  # mlops_assets.monitoring.replay.DRIFT_CHECK
RELEASE_PREFIX = "trained_model_passes_"
RELEASE_INCIDENT = "release_gate_failed:release_gates"


@dataclass(frozen=True)
class CheckAlerts:
    """What one batch of check results means: events to send, and incidents cleared (key, message)."""

    events: list[AlertEvent]
    cleared: list[tuple[str, str]]


def _partitions(md: Mapping[str, Any]) -> str | None:
    parts = [str(p) for p in md.get("failing_partitions") or []]
    if not parts:
        return md.get("partition")
    return parts[0] if len(parts) == 1 else f"{parts[0]}..{parts[-1]} ({len(parts)} partitions)"


def _kind(row: Mapping[str, Any]) -> str | None:
    check = str(row["check"])
    if check == DRIFT_CHECK:
        return "drift_detected"
    if check.startswith(RELEASE_PREFIX):
        return "release_gate_failed"
    if row.get("blocking"):
        return "data_gate_failed"
    return None  # a warning-only check of another kind: shown in reports, not alerted


def check_alerts(
    model: str,
    rows: Iterable[Mapping[str, Any]],
    run_id: str | None = None,
    retrain_reason: str | None = None,
) -> CheckAlerts:
    """The alert events of check results ``rows`` of one run (see the module docstring). In a retrain run
    (``retrain_reason``: drift, performance, freshness) failed release gates are ``retrain_blocked``."""
    events: list[AlertEvent] = []
    cleared: list[tuple[str, str]] = []
    release_failed: list[Mapping[str, Any]] = []
    release_seen = False
    for row in rows:
        kind = _kind(row)
        if kind is None:
            continue
        check = str(row["check"])
        md = row.get("metadata") or {}
        if kind == "release_gate_failed":
            release_seen = True
            if not row["passed"]:
                release_failed.append(row)
            continue
        key = f"{kind}:{check}"
        if row["passed"]:
            cleared.append((key, f"{model}: check {check} passes again"))
            continue
        partition = _partitions(md)
        what = "drift detected by" if kind == "drift_detected" else "blocking data gate"
        columns = [str(c) for c in md.get("failing_columns") or []]
        events.append(
            AlertEvent(
                kind=kind,
                model=model,
                summary=f"{model}: {what} {check} failed"
                + (f" on {partition}" if partition else "")
                + (f" (columns: {', '.join(columns[:10])})" if columns else "")
                + (f": {md['message']}" if md.get("message") else ""),
                partition=partition,
                check=check,
                measured=md.get("measured"),
                threshold=md.get("threshold"),
                run_id=run_id,
                dedup_key=key,
                details={k: md[k] for k in ("failing_columns",) if md.get(k)},
            )
        )
    if release_failed:
        first = release_failed[0]
        md = first.get("metadata") or {}
        names = [str(r["check"]).removeprefix(RELEASE_PREFIX) for r in release_failed]
        retrain = retrain_reason in ("drift", "performance", "freshness")
        events.append(
            AlertEvent(
                kind="retrain_blocked" if retrain else "release_gate_failed",
                model=model,
                summary=f"{model}: "
                + (f"the {retrain_reason} retrain is blocked: " if retrain else "")
                + f"the challenger failed release gate(s) {', '.join(names)}"
                + (f": {md['message']}" if md.get("message") else "")
                + "; the champion is unchanged",
                check=str(first["check"]),
                measured=md.get("measured"),
                threshold=md.get("threshold"),
                version=(first.get("version") or None),
                run_id=run_id,
                dedup_key=RELEASE_INCIDENT,
                details={"failed_gates": names},
            )
        )
    elif release_seen:
        cleared.append((RELEASE_INCIDENT, f"{model}: a challenger passed every release gate"))
    return CheckAlerts(events, cleared)


def alert_on_checks(
    alerter: Alerter,
    model: str,
    rows: Iterable[Mapping[str, Any]],
    run_id: str | None = None,
    retrain_reason: str | None = None,
) -> list[AlertRecord]:
    """Send (or suppress as repeats) the alerts of ``rows`` and resolve the incidents they clear."""
    result = check_alerts(model, rows, run_id, retrain_reason)
    out = [alerter.notify(e) for e in result.events]
    for key, message in result.cleared:
        rec = alerter.resolve(model, key, message, run_id=run_id)
        if rec is not None:
            out.append(rec)
    return out


def run_failed_event(model: str, job: str, run_id: str | None, error: str | None) -> AlertEvent:
    """A failed run of ``job`` (one incident per job until a run of it succeeds)."""
    return AlertEvent(
        kind="run_failed",
        model=model,
        summary=f"{model}: run of {job} failed" + (f": {error}" if error else ""),
        run_id=run_id,
        check=job,
        dedup_key=f"run_failed:{job}",
    )


def freshness_key(champion: str | None) -> str:
    """The dedup key of champion version ``champion``'s freshness incident (resolved when it is replaced)."""
    return f"freshness_breached:{champion}"


def retrain_events(
    model: str, trigger: str, detail: str, champion: str | None, run_key: str | None = None
) -> list[AlertEvent]:
    """A retrain requested by ``trigger`` (drift, performance, freshness); a freshness trigger is also the
    freshness incident of the current champion (cleared when a new champion replaces it). The request is alerted
    before Dagster creates its run, so it carries no run id: ``run_key`` (the run's ``dagster/run_key`` tag) ties
    it to the run, whose own alerts (``retrain_finished``, ``promoted``) carry the run id."""
    events = [
        AlertEvent(
            kind="retrain_started",
            model=model,
            summary=f"{model}: retrain requested ({trigger}): {detail}",
            version=champion,
            details={"trigger": trigger} | ({"run_key": run_key} if run_key else {}),
        )
    ]
    if trigger == "freshness":
        events.insert(
            0,
            AlertEvent(
                kind="freshness_breached",
                model=model,
                summary=f"{model}: champion version {champion} is past its freshness limit: {detail}",
                version=champion,
                dedup_key=freshness_key(champion),
            ),
        )
    return events
