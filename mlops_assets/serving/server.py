"""The ASGI app and the uvicorn protocol behind ``mlops-assets serve`` (:mod:`mlops_assets.commands.serve`)."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

SWITCH_INTERVAL = 0.0005


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


def http_protocol() -> Any:
    """uvicorn's httptools protocol with :class:`_OneWriteTransport` ("auto" when httptools is not installed)."""
    if importlib.util.find_spec("httptools") is None:
        return "auto"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class OneWriteHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_OneWriteTransport(transport))  # type: ignore[arg-type]

    return OneWriteHttpToolsProtocol


def build_app(config: str | None = None, options: Any = None, auth: Any = None):
    """The ASGI app for ``config`` (a path to ``mlops.yaml``, or None for ``$MLOPS_CONFIG`` / the bundled one),
    requiring ``auth`` (default: the tokens of ``MLOPS_SERVE_TOKENS``, which must be set)."""
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
    return create_app(PredictionService(cfg, storage_from_env(), options=options), auth=auth, freeze_gc=True)
