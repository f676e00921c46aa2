"""The ASGI app and the uvicorn protocol behind ``mlops-assets serve`` (:mod:`mlops_assets.commands.serve`)."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

SWITCH_INTERVAL = 0.0005
# Seconds a client may take from connecting (or from the first byte of its next request) to the end of the request's
# headers; uvicorn itself has no such limit, so sockets that connect and trickle (or send nothing) are held forever.
HEADER_TIMEOUT = 10.0


class _OneWriteTransport:
    """A connection's transport that sends a response's status line and headers together with its body.

    uvicorn writes them in two calls; on loopback each write is a send() that also runs the receiving side's
    TCP processing and wakes the client, so one write instead of two saves ~10 % of the CPU per request. The
    head is held until the next write (the body, in the same event-loop step) or, failing that, sent on the
    next loop step; any other call first sends what is held, so bytes keep their order.
    """

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # everything else: the transport itself
        return getattr(self._transport, name)


_PROTOCOL_NAME = "OneWriteHttpToolsProtocol"
_protocols: dict[float, Any] = {}


def __getattr__(name: str) -> Any:
    """The default protocol class as a module attribute, made on first use: ``--workers`` hands uvicorn's worker
    processes the class by reference (pickled as ``mlops_assets.serving.server.OneWriteHttpToolsProtocol``)."""
    if name == _PROTOCOL_NAME:
        return http_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def http_protocol(header_timeout: float = HEADER_TIMEOUT) -> Any:
    """uvicorn's httptools protocol with :class:`_OneWriteTransport` and a header timeout: a connection whose
    request headers are not complete ``header_timeout`` seconds after it opened (or after its request began) is
    closed. ("auto", without either, when httptools is not installed.) One class per timeout."""
    if importlib.util.find_spec("httptools") is None:
        return "auto"
    if header_timeout not in _protocols:
        _protocols[header_timeout] = _make_protocol(header_timeout)
    return _protocols[header_timeout]


def _make_protocol(header_timeout: float) -> Any:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class OneWriteHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_OneWriteTransport(transport))  # type: ignore[arg-type]
            self._start_header_timer()

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_timer()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

    if header_timeout == HEADER_TIMEOUT:
        OneWriteHttpToolsProtocol.__module__ = __name__
        OneWriteHttpToolsProtocol.__qualname__ = _PROTOCOL_NAME
    return OneWriteHttpToolsProtocol


# What a worker process of `mlops-assets serve --workers N` builds its app from (set by the parent): the config file,
# the allowed Host names and whether authentication is off; the tokens come from MLOPS_SERVE_TOKENS.
WORKER_ENV = "MLOPS_SERVE_WORKER"


def worker_app():
    """The app of one worker process of ``mlops-assets serve --workers N`` (a uvicorn factory): its own prediction
    service on the champion, with the settings the parent put in ``MLOPS_SERVE_WORKER``."""
    import json
    import os
    import sys

    from mlops_assets.serving.auth import Auth

    settings = json.loads(os.environ[WORKER_ENV])
    sys.setswitchinterval(SWITCH_INTERVAL)
    return build_app(
        settings["config"],
        auth=Auth.insecure() if settings["insecure"] else None,
        allowed_hosts=frozenset(settings["allowed_hosts"]) if settings["allowed_hosts"] else None,
    )


def build_app(
    config: str | None = None,
    options: Any = None,
    auth: Any = None,
    allowed_hosts: frozenset[str] | None = None,
):
    """The ASGI app for ``config`` (a path to ``mlops.yaml``, or None for ``$MLOPS_CONFIG`` / the bundled one),
    requiring ``auth`` (default: the tokens of ``MLOPS_SERVE_TOKENS``, which must be set) and, with
    ``allowed_hosts``, one of those names in the Host header."""
    import os

    from mlops_assets.config import load_config
    from mlops_assets.serving.app import create_app
    from mlops_assets.serving.auth import ENV_VAR, Auth, AuthConfigError
    from mlops_assets.serving.service import PredictionService
    from mlops_assets.storage import storage_from_env

    if auth is None:
        if not os.environ.get(ENV_VAR, "").strip():
            raise AuthConfigError(f"{ENV_VAR} is not set: give the tokens the app requires, or pass auth=")
        auth = Auth.from_env(os.environ)
    cfg = load_config(config)
    service = PredictionService(cfg, storage_from_env(), options=options)
    return create_app(service, auth=auth, allowed_hosts=allowed_hosts, freeze_gc=True)
