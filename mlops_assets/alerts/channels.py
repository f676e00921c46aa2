"""Delivery of one alert to one channel: a generic JSON webhook (HMAC-signed), a Slack incoming webhook, email
over SMTP. Standard library only: ``mlops-assets rollback`` sends alerts too and must start fast.

Each ``send`` either returns or raises :class:`DeliveryError` (or the ``OSError`` / ``smtplib.SMTPException`` of
the transport); retrying, recording and never letting a failure escape are :mod:`.dispatch`'s business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from mlops_assets.alerts.events import AlertEvent
from mlops_assets.alerts.settings import (
    EmailChannelConfig,
    LinksConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)

SIGNATURE_HEADER = "X-Mlops-Signature"


class DeliveryError(RuntimeError):
    """A delivery that failed; ``retryable`` False when trying again cannot help (a secret that is not set)."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


def _secret(environ: Mapping[str, str], name: str, what: str, label: str) -> str:
    value = environ.get(name)
    if not value:
        raise DeliveryError(
            f"environment variable {name} is not set (the {what} of alert channel '{label}')", retryable=False
        )
    return value


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    # urlopen raises HTTPError (an OSError) for a 4xx/5xx answer.
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def send_webhook(
    ch: WebhookChannelConfig, event: AlertEvent, links: LinksConfig, environ: Mapping[str, str]
) -> None:
    payload: dict[str, Any] = event.payload(links.dagster_url, links.mlflow_url)
    body = json.dumps(payload, default=str, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "X-Mlops-Event": event.kind}
    if ch.secret_env:
        headers[SIGNATURE_HEADER] = sign(body, _secret(environ, ch.secret_env, "HMAC secret", ch.label))
    _post(ch.url, body, headers, ch.timeout_seconds)


def send_slack(
    ch: SlackChannelConfig, event: AlertEvent, links: LinksConfig, environ: Mapping[str, str]
) -> None:
    url = ch.url or _secret(environ, str(ch.url_env), "webhook URL", ch.label)
    subject, text = event.text(links.dagster_url, links.mlflow_url)
    body = json.dumps({"text": f"*{subject}*\n{text}"}).encode()
    _post(url, body, {"Content-Type": "application/json"}, ch.timeout_seconds)


def send_email(
    ch: EmailChannelConfig, event: AlertEvent, links: LinksConfig, environ: Mapping[str, str]
) -> None:
    import smtplib
    import ssl
    from email.message import EmailMessage

    subject, text = event.text(links.dagster_url, links.mlflow_url)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = ch.sender
    msg["To"] = ", ".join(ch.to)
    msg["X-Mlops-Event"] = event.kind
    msg.set_content(text)
    user = _secret(environ, ch.username_env, "SMTP user", ch.label) if ch.username_env else None
    password = _secret(environ, ch.password_env, "SMTP password", ch.label) if ch.password_env else None
    with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_seconds) as smtp:
        smtp.ehlo()
        if ch.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=ch.ca_file))
            smtp.ehlo()
        if user is not None and password is not None:
            smtp.login(user, password)
        smtp.send_message(msg)


def send(ch: Any, event: AlertEvent, links: LinksConfig, environ: Mapping[str, str]) -> None:
    """Deliver ``event`` on channel ``ch`` (a channel config of :mod:`.settings`)."""
    if isinstance(ch, WebhookChannelConfig):
        send_webhook(ch, event, links, environ)
    elif isinstance(ch, SlackChannelConfig):
        send_slack(ch, event, links, environ)
    elif isinstance(ch, EmailChannelConfig):
        send_email(ch, event, links, environ)
    else:  # the config's discriminated union has no other member
        raise TypeError(f"unknown alert channel {type(ch).__name__}")
