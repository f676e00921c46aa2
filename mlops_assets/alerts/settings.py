"""The ``alerts:`` section of ``mlops.yaml``: channels, routing, retry, links.

This module imports nothing from the project, so :mod:`mlops_assets.config` can import it at the top level.
Secrets never sit in the file: a channel names the environment variable that holds its secret (the webhook's
HMAC key, the Slack webhook URL, the SMTP credentials), read when an alert is sent.

Example::

    alerts:
      links:
        dagster_url: https://dagster.example.com        # run links: {dagster_url}/runs/{run_id}
        mlflow_url: https://mlflow.example.com          # version links
      channels:
        - type: webhook
          url: https://hooks.example.com/mlops
          secret_env: MLOPS_WEBHOOK_SECRET              # X-Mlops-Signature: sha256=HMAC-SHA256(body)
        - type: slack
          url_env: MLOPS_SLACK_WEBHOOK_URL
          min_severity: warning
        - type: email
          host: smtp.example.com
          port: 587                                      # STARTTLS unless starttls: false (a local relay)
          username_env: MLOPS_SMTP_USER
          password_env: MLOPS_SMTP_PASSWORD
          sender: mlops@example.com
          to: [oncall@example.com]
          kinds: [data_gate_failed, release_gate_failed, rolled_back, service_degraded]
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_assets.alerts.events import KINDS, SEVERITIES

Severity = Literal["info", "warning", "critical"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(v: str) -> str:
    if not _ENV_NAME.fullmatch(v):
        raise ValueError(
            f"{v!r} is not an environment variable name (the secret itself never goes in the file)"
        )
    return v


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    return v


EnvName = Annotated[str, AfterValidator(_env_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Channel(_Section):
    """What every channel shares: a name (for the records), which event kinds and from which severity."""

    name: str | None = None
    # Event kinds this channel receives (default: all); see mlops_assets.alerts.events.KINDS.
    kinds: list[str] | None = None
    min_severity: Severity = "info"
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str] | None) -> list[str] | None:
        unknown = sorted(set(v or []) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {sorted(KINDS)}")
        return v

    def accepts(self, kind: str, severity: str) -> bool:
        """Routing: this channel takes ``kind`` at ``severity``."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)


class WebhookChannelConfig(_Channel):
    """A generic JSON webhook: the event as a JSON body, HMAC-SHA256 signed when ``secret_env`` is set."""

    type: Literal["webhook"]
    url: HttpUrl
    secret_env: EnvName | None = None

    _secret = field_validator("secret_env")(classmethod(lambda cls, v: _env_name(v)))

    @property
    def label(self) -> str:
        return self.name or f"webhook {self.url}"


class SlackChannelConfig(_Channel):
    """A Slack incoming webhook; its URL is a secret, so normally given by ``url_env``."""

    type: Literal["slack"]
    url: HttpUrl | None = None
    url_env: EnvName | None = None

    _env = field_validator("url_env")(classmethod(lambda cls, v: _env_name(v)))

    @model_validator(mode="after")
    def _one_url(self) -> SlackChannelConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("a slack channel needs exactly one of url or url_env")
        return self

    @property
    def label(self) -> str:
        return self.name or f"slack {self.url_env or 'webhook'}"


class EmailChannelConfig(_Channel):
    """Email over SMTP: STARTTLS (unless ``starttls: false``, for a relay on the same host), credentials from the
    environment."""

    type: Literal["email"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    # A CA bundle to verify the server's certificate with (a private CA); default: the system's.
    ca_file: str | None = None
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    sender: str
    to: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> EmailChannelConfig:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("give both username_env and password_env, or neither")
        if self.username_env is not None and not self.starttls:
            raise ValueError("SMTP credentials are sent only over STARTTLS: set starttls: true")
        for addr in [self.sender, *self.to]:
            if "@" not in addr:
                raise ValueError(f"{addr!r} is not an email address")
        return self

    @property
    def label(self) -> str:
        return self.name or f"email {self.host}:{self.port}"


ChannelConfig = Annotated[
    WebhookChannelConfig | SlackChannelConfig | EmailChannelConfig, Field(discriminator="type")
]


class LinksConfig(_Section):
    """Base URLs that alert messages link to (a run in Dagster's UI, a version in MLflow's)."""

    dagster_url: HttpUrl | None = None
    mlflow_url: HttpUrl | None = None


class RetryConfig(_Section):
    """Delivery attempts per channel, waiting ``backoff_seconds``, then twice that, ... between them."""

    attempts: int = Field(default=3, ge=1, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=60)


class AlertsConfig(_Section):
    """``alerts:``: without a channel nothing is sent or recorded (the history still records every champion move)."""

    channels: list[ChannelConfig] = Field(default_factory=list)
    links: LinksConfig = Field(default_factory=LinksConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
