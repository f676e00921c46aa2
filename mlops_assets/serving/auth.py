"""Bearer tokens with scopes for the prediction service.

``MLOPS_SERVE_TOKENS`` holds comma-separated ``scope:token`` pairs; the scopes are ``predict`` (``POST /predict``),
``feedback`` (``POST /feedback``) and ``admin`` (``GET /metrics``, and everything the other two allow). A request
sends ``Authorization: Bearer TOKEN``: none (or an unknown token) is answered 401, a token without the endpoint's
scope 403. ``GET /health`` is open (load balancers probe it).

Tokens are compared in constant time (:func:`hmac.compare_digest`, against every configured token, so the time
says nothing about which one nearly matched) and never logged: errors name the scope and position, not the value.
Without ``MLOPS_SERVE_TOKENS`` the ``serve`` command generates random tokens, prints them once and requires them;
only ``--insecure-local`` on a loopback address turns authentication off (:meth:`Auth.insecure`).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

ENV_VAR = "MLOPS_SERVE_TOKENS"
SCOPES = ("predict", "feedback", "admin")


class AuthConfigError(ValueError):
    """``MLOPS_SERVE_TOKENS`` or ``--insecure-local`` given wrongly (the message never holds a token)."""


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: 401 (no or unknown token) or 403 (a token without the scope)."""

    status: int
    message: str


@dataclass(frozen=True)
class Auth:
    """The tokens a service accepts, each with its scope; ``enabled=False`` accepts every request."""

    tokens: tuple[tuple[str, bytes], ...] = ()
    enabled: bool = True
    generated: bool = False  # made at start (printed once) rather than configured

    @classmethod
    def insecure(cls) -> Auth:
        """No authentication: only for a service bound to loopback (see :func:`check_insecure_host`)."""
        return cls((), enabled=False)

    @classmethod
    def parse(cls, text: str) -> Auth:
        """``scope:token,scope:token``; the same token may be listed under several scopes."""
        tokens: list[tuple[str, bytes]] = []
        for i, item in enumerate(p.strip() for p in text.split(",")):
            if not item:
                continue
            scope, sep, token = item.partition(":")
            scope, token = scope.strip(), token.strip()
            if not sep or scope not in SCOPES:
                raise AuthConfigError(
                    f"{ENV_VAR}: entry {i + 1} does not start with a scope of {list(SCOPES)} and ':' "
                    "(expected scope:token, comma-separated)"
                )
            if not token or any(c.isspace() for c in token):
                raise AuthConfigError(
                    f"{ENV_VAR}: entry {i + 1} ({scope}) has an empty token or one with spaces"
                )
            tokens.append((scope, token.encode()))
        if not tokens:
            raise AuthConfigError(f"{ENV_VAR} is set but holds no scope:token entry")
        return cls(tuple(tokens))

    @classmethod
    def generate(cls) -> Auth:
        """One random token per scope (256 bits each)."""
        return cls(tuple((s, secrets.token_urlsafe(32).encode()) for s in SCOPES), generated=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Auth:
        """The configured tokens, or generated ones when ``MLOPS_SERVE_TOKENS`` is unset or empty."""
        text = env.get(ENV_VAR, "").strip()
        return cls.parse(text) if text else cls.generate()

    def env_value(self) -> str:
        """The tokens as ``MLOPS_SERVE_TOKENS`` spells them (what :meth:`parse` reads back)."""
        return ",".join(f"{scope}:{token.decode()}" for scope, token in self.tokens)

    def announce(self) -> str:
        """What ``serve`` prints once at start when the tokens were generated."""
        lines = [
            f"{ENV_VAR} is not set: this service requires these tokens, generated for this run "
            "(send 'Authorization: Bearer TOKEN'; they are not shown again):"
        ]
        lines += [f"  {scope:<9} {token.decode()}" for scope, token in self.tokens]
        lines.append(f"Set {ENV_VAR}=predict:...,feedback:...,admin:... to choose your own.")
        return "\n".join(lines)

    def check(self, authorization: bytes | None, scope: str) -> Denied | None:
        """None when the ``Authorization`` header value grants ``scope``, else why not."""
        if not self.enabled:
            return None
        if not authorization:
            return Denied(401, "missing 'Authorization: Bearer TOKEN' header")
        kind, _, given = authorization.strip().partition(b" ")
        if kind.lower() != b"bearer" or not given.strip():
            return Denied(401, "the Authorization header must be 'Bearer TOKEN'")
        given = given.strip()
        granted: set[str] = set()
        for token_scope, token in self.tokens:  # every token, whatever matched: constant time over the list
            if hmac.compare_digest(given, token):
                granted.add(token_scope)
        if not granted:
            return Denied(401, "unknown token")
        if scope in granted or "admin" in granted:
            return None
        return Denied(403, f"this token does not have the '{scope}' scope")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_insecure_host(host: str) -> None:
    """``--insecure-local`` is refused on anything but a loopback address."""
    if not is_loopback(host):
        raise AuthConfigError(
            f"--insecure-local turns authentication off and is allowed on a loopback address only, not {host!r}; "
            f"set {ENV_VAR} to serve on {host!r}"
        )
