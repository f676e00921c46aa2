"""Routing, retry, deduplication and the record of every alert.

:class:`Alerter` takes an :class:`~.events.AlertEvent`, decides whether it is news (an incident already open and
delivered is not sent again), sends it to every channel whose routing accepts its kind and severity, retrying each
with exponential backoff, and records what happened in an :class:`AlertLedger` (the deployment history's database
in the project, :class:`MemoryLedger` alone). A delivery that fails is logged and recorded, never raised: an alert
must not fail the pipeline or the service it reports on. An incident whose every delivery failed stays
undelivered, so its next occurrence is sent again rather than suppressed.
"""

from __future__ import annotations

import http.client
import logging
import os
import smtplib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from mlops_assets.alerts.channels import DeliveryError, send
from mlops_assets.alerts.events import AlertEvent
from mlops_assets.alerts.settings import AlertsConfig

log = logging.getLogger("mlops_assets.alerts")

# What a transport can raise: network and HTTP errors (OSError, including urllib's), a malformed HTTP answer,
# SMTP refusals, and our own DeliveryError. Anything else is a bug and propagates.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
    smtplib.SMTPException,
    DeliveryError,
)

SENT, FAILED, SUPPRESSED, RESOLVED, UNROUTED = "sent", "failed", "suppressed", "resolved", "unrouted"


@dataclass(frozen=True)
class Delivery:
    """One channel's attempt(s) at one alert."""

    channel: str
    ok: bool
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class AlertRecord:
    """One alert as recorded: ``state`` is ``sent`` (at least one channel took it), ``failed`` (none did),
    ``suppressed`` (its incident was already open and delivered), ``resolved`` (the all-clear of an incident) or
    ``unrouted`` (no channel takes this kind and severity)."""

    model: str
    kind: str
    severity: str
    state: str
    summary: str
    dedup_key: str | None
    payload: dict[str, Any]
    deliveries: list[Delivery] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    deployment_id: int | None = None

    @property
    def delivered(self) -> bool:
        return any(d.ok for d in self.deliveries)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertLedger(Protocol):
    """Where alerts are recorded, and read back per incident."""

    def record_alert(self, record: AlertRecord) -> None: ...

    def incident_alerts(self, model: str, dedup_key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` records of incident ``dedup_key``, oldest first: dicts with at least ``state``,
        ``kind`` and ``delivered``."""
        ...


class MemoryLedger:
    """An in-process ledger (tests, and a process without a history database)."""

    def __init__(self) -> None:
        self.records: list[AlertRecord] = []

    def record_alert(self, record: AlertRecord) -> None:
        self.records.append(record)

    def incident_alerts(self, model: str, dedup_key: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = [
            {"state": r.state, "kind": r.kind, "delivered": r.delivered}
            for r in self.records
            if r.model == model and r.dedup_key == dedup_key
        ]
        return rows[-limit:]


@dataclass(frozen=True)
class Incident:
    """The open incident of a dedup key: its kind, and whether any of its alerts reached a channel."""

    kind: str
    delivered: bool


def open_incident(rows: list[dict[str, Any]]) -> Incident | None:
    """The incident open in ``rows`` (records of one key, oldest first): everything since the last ``resolved``."""
    span = []
    for r in reversed(rows):
        if r["state"] == RESOLVED:
            break
        span.append(r)
    if not span:
        return None
    # A suppressed repeat implies an earlier delivery (the one that may have scrolled out of ``rows``).
    delivered = any(r["delivered"] or r["state"] == SUPPRESSED for r in span)
    return Incident(kind=span[-1]["kind"], delivered=delivered)


class Alerter:
    """Sends and records alerts per ``config`` (the ``alerts:`` section)."""

    def __init__(
        self,
        config: AlertsConfig,
        ledger: AlertLedger | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.ledger: AlertLedger = ledger if ledger is not None else MemoryLedger()
        # The one place alert secrets are read from: the environment of this process.
        self.environ = environ if environ is not None else os.environ
        self.sleep = sleep

    def notify(self, event: AlertEvent) -> AlertRecord:
        """Send ``event`` (unless its incident is already open and delivered) and record the outcome."""
        key = event.key
        if key is not None:
            incident = open_incident(self.ledger.incident_alerts(event.model, key))
            if incident is not None and incident.delivered:
                return self._record(event, SUPPRESSED, [])
        deliveries = self._deliver(event)
        state = UNROUTED if not deliveries else SENT if any(d.ok for d in deliveries) else FAILED
        return self._record(event, state, deliveries)

    def resolve(self, model: str, dedup_key: str, summary: str, **fields: Any) -> AlertRecord | None:
        """The all-clear of incident ``dedup_key`` if it is open (sent to the channels that take its kind), else
        None."""
        incident = open_incident(self.ledger.incident_alerts(model, dedup_key))
        if incident is None:
            return None
        event = AlertEvent(
            kind=incident.kind, model=model, summary=summary, dedup_key=dedup_key, resolved=True, **fields
        )
        # Nobody was told of the incident: no all-clear either (it is still recorded).
        deliveries = self._deliver(event) if incident.delivered else []
        return self._record(event, RESOLVED, deliveries)

    def _deliver(self, event: AlertEvent) -> list[Delivery]:
        out = []
        for ch in self.config.channels:
            if ch.accepts(event.kind, event.level):
                out.append(self._send_with_retry(ch, event))
        return out

    def _send_with_retry(self, ch: Any, event: AlertEvent) -> Delivery:
        retry = self.config.retry
        error = ""
        for attempt in range(1, retry.attempts + 1):
            try:
                send(ch, event, self.config.links, self.environ)
                return Delivery(ch.label, True, attempt)
            except TRANSPORT_ERRORS as err:
                error = f"{type(err).__name__}: {err}"
                if isinstance(err, DeliveryError) and not err.retryable:
                    break
                if attempt < retry.attempts:
                    self.sleep(retry.backoff_seconds * 2 ** (attempt - 1))
        log.warning(
            "alert %s for model '%s' not delivered to %s after %d attempt(s): %s",
            event.kind,
            event.model,
            ch.label,
            attempt,
            error,
        )
        return Delivery(ch.label, False, attempt, error)

    def _record(self, event: AlertEvent, state: str, deliveries: list[Delivery]) -> AlertRecord:
        links = self.config.links
        record = AlertRecord(
            model=event.model,
            kind=event.kind,
            severity=event.level,
            state=state,
            summary=event.summary,
            dedup_key=event.key if not event.resolved else event.dedup_key,
            payload=event.payload(links.dagster_url, links.mlflow_url),
            deliveries=deliveries,
            deployment_id=event.deployment_id,
        )
        self.ledger.record_alert(record)
        return record


def with_deployment(event: AlertEvent, deployment_id: int | None) -> AlertEvent:
    """``event`` tied to the history row of the alias move it reports."""
    return replace(event, deployment_id=deployment_id)
