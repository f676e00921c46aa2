"""Alerts sent from a thread of their own, for a caller that must not wait for a channel: the prediction service,
whose requests and prediction-log writer would otherwise stall behind a slow or absent receiver (up to
attempts x timeout per channel)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from mlops_assets.alerts.dispatch import Alerter
from mlops_assets.alerts.events import AlertEvent

log = logging.getLogger("mlops_assets.alerts")


class BackgroundAlerter:
    """:meth:`Alerter.notify` and :meth:`Alerter.resolve` run in the order they were asked, on one daemon thread;
    here they return at once. What is sent, suppressed or recorded is the wrapped :class:`Alerter`'s business."""

    def __init__(self, alerter: Alerter, *, name: str = "alert-delivery"):
        self.alerter = alerter
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def notify(self, event: AlertEvent) -> None:
        """Queue ``event`` for :meth:`Alerter.notify`."""
        self._jobs.put(lambda: self.alerter.notify(event))

    def resolve(self, model: str, dedup_key: str, summary: str, **fields: Any) -> None:
        """Queue the all-clear of incident ``dedup_key`` (:meth:`Alerter.resolve`)."""
        self._jobs.put(lambda: self.alerter.resolve(model, dedup_key, summary, **fields))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, waiting at most ``timeout`` seconds, and stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("alerts still being delivered after %.0f s; not waiting for them", timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                # A delivery failure is recorded by the Alerter and never raised; what arrives here is a ledger
                # that cannot be written. Logged with its traceback, and the thread lives on for the next alert.
                log.exception("an alert could not be sent or recorded")
