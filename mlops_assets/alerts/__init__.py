"""Alerts: events, channels (JSON webhook, Slack, email), routing, retry, one alert per incident.

Knows nothing of Dagster: the steps, commands, service and registry call :class:`Alerter`; the Dagster sensors in
:mod:`mlops_assets.defs.alerting` only translate events of the instance into :class:`AlertEvent`.
"""

from mlops_assets.alerts.background import BackgroundAlerter
from mlops_assets.alerts.dispatch import (
    Alerter,
    AlertLedger,
    AlertRecord,
    Delivery,
    MemoryLedger,
)
from mlops_assets.alerts.events import KINDS, AlertEvent
from mlops_assets.alerts.settings import AlertsConfig

__all__ = [
    "KINDS",
    "AlertEvent",
    "AlertLedger",
    "AlertRecord",
    "Alerter",
    "AlertsConfig",
    "BackgroundAlerter",
    "Delivery",
    "MemoryLedger",
]
