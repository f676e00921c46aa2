"""What can be alerted on, written once: each event kind with its default severity and whether it is an
*incident* (a condition that holds until it clears, alerted once and resolved once) or a one-off *notice* (a
promotion, a rollback: each one is news).

An :class:`AlertEvent` is one occurrence: which model, what happened in one human sentence, and where they apply
the partition, check, measured value, threshold, version and run. Its ``dedup_key`` names the incident: every
occurrence with the same key while the incident is open is recorded but not sent again (a backfill over 50
partitions with a corrupt column is one incident, not 50).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Kind:
    """One event kind of the catalogue."""

    title: str
    severity: str
    incident: bool


KINDS: dict[str, Kind] = {
    "data_gate_failed": Kind("blocking data gate failed", "critical", incident=True),
    "release_gate_failed": Kind("release gate failed", "warning", incident=True),
    "drift_detected": Kind("drift detected", "warning", incident=True),
    "retrain_started": Kind("retrain requested", "info", incident=False),
    "retrain_finished": Kind("retrain finished", "info", incident=False),
    "retrain_blocked": Kind("retrain blocked by the gates", "warning", incident=True),
    "promoted": Kind("new champion", "info", incident=False),
    "rolled_back": Kind("champion rolled back", "warning", incident=False),
    "run_failed": Kind("run failed", "critical", incident=True),
    "freshness_breached": Kind("model past its freshness limit", "warning", incident=True),
    "service_degraded": Kind("prediction service degraded", "critical", incident=True),
    "approval_requested": Kind("challenger awaiting approval", "info", incident=False),
    "approval_decided": Kind("approval decided", "info", incident=False),
    "shadow_started": Kind("challenger in shadow", "info", incident=False),
    "shadow_refused": Kind("challenger failed its shadow comparison", "warning", incident=False),
}


@dataclass(frozen=True)
class AlertEvent:
    """One occurrence of an event kind (see :data:`KINDS`)."""

    kind: str
    model: str
    summary: str  # one human sentence: what happened
    severity: str | None = None  # default: the kind's
    partition: str | None = None
    check: str | None = None
    measured: Any = None
    threshold: Any = None
    version: str | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The incident this occurrence belongs to (default: kind and check); ignored for notices.
    dedup_key: str | None = None
    resolved: bool = False
    deployment_id: int | None = None  # the history row of the alias move this event reports

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown alert event kind {self.kind!r}; known: {sorted(KINDS)}")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; known: {list(SEVERITIES)}")

    @property
    def level(self) -> str:
        return self.severity or KINDS[self.kind].severity

    @property
    def incident(self) -> bool:
        return KINDS[self.kind].incident

    @property
    def key(self) -> str | None:
        """The incident key (None for a notice)."""
        if not self.incident:
            return None
        return self.dedup_key or f"{self.kind}:{self.check or ''}"

    def links(self, dagster_url: str | None, mlflow_url: str | None) -> dict[str, str]:
        out = {}
        if dagster_url and self.run_id:
            out["dagster_run"] = f"{dagster_url.rstrip('/')}/runs/{self.run_id}"
        if mlflow_url and self.version:
            out["mlflow_version"] = f"{mlflow_url.rstrip('/')}/#/models/{self.model}/versions/{self.version}"
        return out

    def payload(self, dagster_url: str | None = None, mlflow_url: str | None = None) -> dict[str, Any]:
        """The JSON a webhook receives (INTERFACE.md, "Alerts"): ``event``, ``model``, ``summary`` and the fields
        that apply."""
        body: dict[str, Any] = {
            "event": self.kind,
            "model": self.model,
            "summary": self.summary,
            "severity": self.level,
            "status": "resolved" if self.resolved else ("firing" if self.incident else "notice"),
        }
        for name in ("partition", "check", "measured", "threshold", "version", "run_id"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        if self.key is not None:
            body["dedup_key"] = self.key
        if self.details:
            body["details"] = self.details
        links = self.links(dagster_url, mlflow_url)
        if links:
            body["links"] = links
        return body

    def text(self, dagster_url: str | None = None, mlflow_url: str | None = None) -> tuple[str, str]:
        """(subject, body) for people: Slack and email."""
        title = KINDS[self.kind].title
        state = "RESOLVED" if self.resolved else self.level.upper()
        subject = f"[{state}] {self.model}: {title}"
        lines = [self.summary]
        facts = [
            f"{name}: {value}"
            for name, value in (
                ("partition", self.partition),
                ("check", self.check),
                ("measured", self.measured),
                ("threshold", self.threshold),
                ("version", self.version),
                ("run", self.run_id),
            )
            if value is not None
        ]
        if facts:
            lines.append("; ".join(facts))
        for name, url in self.links(dagster_url, mlflow_url).items():
            lines.append(f"{name.replace('_', ' ')}: {url}")
        return subject, "\n".join(lines)
