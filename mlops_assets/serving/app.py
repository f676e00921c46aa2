"""The ASGI app: ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /metrics`` (see INTERFACE.md).

Every endpoint but ``/health`` needs a bearer token with its scope (:mod:`.auth`), checked before the body is read.

Handlers stay thin: read the body under a size cap, validate, hand the request to the service (which batches
it), and time it for ``/metrics``. No middleware on the hot path: each handler records its own latency.

``POST /predict`` is answered by a plain ASGI function (:meth:`ServiceApp.__call__` routes it there before
Starlette's middleware, router, ``Request`` and ``Response`` objects: ~0.1 ms a request, a tenth of the request
path). Every other request, and ``/predict`` under a ``root_path``, goes through the Starlette routes, which share
the same code (:func:`_predict_response`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mlops_assets.serving.auth import Auth, Denied
from mlops_assets.serving.prediction_log import (
    FutureLabelError,
    LabelConflictError,
    PredictionLogError,
    UnknownPredictionError,
)
from mlops_assets.serving.ratelimit import LabelBudget
from mlops_assets.serving.service import NoModelError, PredictionService
from mlops_assets.serving.validation import InputError, Limits, RequestError, parse_feedback

log = logging.getLogger("mlops_assets.serving")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _body_timeout(seconds: float) -> InputError:
    return InputError("body", f"not received within {seconds:g} s", 408)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused with 413 as soon as it exceeds ``limits.max_body_bytes`` (declared or actually sent), and
    with 408 when it takes longer than ``limits.body_seconds`` to arrive."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError("body", f"{int(declared)} bytes; at most {limit} per request", 413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise InputError("body", f"more than {limit} bytes; at most {limit} per request", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise _body_timeout(limits.body_seconds) from None
    return b"".join(chunks)


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status)


def _check_json_content_type(value: str | None) -> None:
    """Refuse (415) a body not declared as JSON: ``text/plain`` and form bodies are what a browser sends across
    sites without asking the service first (a "simple" cross-site request)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = repr(value) if value else "none"
        raise InputError("content-type", f"{shown}; send the body as application/json", 415)


def _denied(denied: Denied) -> tuple[int, bytes]:
    return denied.status, _json({"error": denied.message, "field": "authorization"})


def _header(request: Request, name: str) -> bytes | None:
    value = request.headers.get(name)
    return None if value is None else value.encode("latin-1")


_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="mlops-assets"')


def _internal_error(where: str, err: BaseException) -> tuple[int, bytes]:
    log.error("%s failed: %s", where, err, exc_info=err)
    return 500, _json(
        {"error": f"internal error ({type(err).__name__}); the service logged it", "field": None}
    )


class _Disconnected(Exception):
    """The client went away before its request body was complete."""


async def _receive_body(scope: dict, receive: Callable[[], Awaitable[dict]], limits: Limits) -> bytes:
    """:func:`_read_body` for a plain ASGI request."""
    limit = limits.max_body_bytes
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise InputError("body", f"{int(value)} bytes; at most {limit} per request", 413)
    chunks, size = [], 0
    try:
        # asyncio.timeout: one timer handle, no task (wait_for would add one per request on the hot path).
        async with asyncio.timeout(limits.body_seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise InputError("body", f"more than {limit} bytes; at most {limit} per request", 413)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise _body_timeout(limits.body_seconds) from None


def _json(content: Any) -> bytes:
    # What JSONResponse renders.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def _predict_response(service: PredictionService, body: bytes) -> tuple[int, bytes]:
    """Status and JSON body of ``POST /predict`` for ``body``."""
    try:
        return 200, await service.predict(service.validate(body))
    except RequestError as err:
        return err.status, _json(err.to_dict())
    except NoModelError as err:
        return 503, _json({"error": f"no model is served: {err}", "field": None})
    except Exception as err:  # answered and counted as a 500 rather than dropped by the server
        return _internal_error("POST /predict", err)


_JSON_HEADER = (b"content-type", b"application/json")


class ServiceApp(Starlette):
    """Starlette, with ``POST /predict`` answered without it (see the module docstring)."""

    predict_asgi: Callable[[dict, Any, Any], Awaitable[None]] | None = None
    allowed_hosts: frozenset[str] | None = None  # Host header names accepted (None: any)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.allowed_hosts is not None and scope["type"] == "http" and not self._host_allowed(scope):
            payload = _json({"error": "this Host is not served here", "field": "host"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 421,
                    "headers": [(b"content-length", str(len(payload)).encode()), _JSON_HEADER],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        if (
            self.predict_asgi is not None
            and scope["type"] == "http"
            and scope["path"] == "/predict"
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self.predict_asgi(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _host_allowed(self, scope: dict) -> bool:
        assert self.allowed_hosts is not None
        for name, value in scope["headers"]:
            if name == b"host":
                return _host_name(value.decode("latin-1")) in self.allowed_hosts
        return False


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_name(value: str) -> str:
    """The name of a Host header, without its port: "[::1]:8000" -> "::1", "Example.org:80" -> "example.org"."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    return value.rsplit(":", 1)[0]


def create_app(
    service: PredictionService,
    *,
    auth: Auth,
    allowed_hosts: frozenset[str] | None = None,
    manage_service: bool = True,
    freeze_gc: bool = False,
) -> ServiceApp:
    """The app around ``service``, requiring ``auth``'s tokens (:meth:`Auth.insecure` for none). Requests whose
    ``Host`` header (without its port) is not in ``allowed_hosts`` get 421 (None: any; without tokens, default
    :data:`LOOPBACK_HOSTS`, so that a web page cannot reach an unauthenticated local service through a DNS name
    rebound to 127.0.0.1). With ``manage_service`` the app's lifespan starts and closes it; with ``freeze_gc``
    (what ``mlops-assets serve`` does: it owns the process) start-up objects are frozen out of the cyclic garbage
    collector."""
    metrics = service.metrics
    limits = service.options.limits
    probation_observe = service.probation.observe  # every /predict answer (one array append)
    label_budget = LabelBudget(limits.feedback_burst_labels, limits.feedback_labels_per_second)

    def guarded(
        endpoint: str, method: str, scope: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the token check (refusals are counted like any response)."""
        if not auth.enabled:
            return handler

        async def checked(request: Request) -> Response:
            denied = auth.check(_header(request, "authorization"), scope)
            if denied is None:
                return await handler(request)
            status, payload = _denied(denied)
            resp = Response(payload, status_code=status, media_type="application/json")
            if status == 401:
                resp.headers["www-authenticate"] = _WWW_AUTHENTICATE[1].decode()
            metrics.observe_request(endpoint, method, status, 0.0)
            return resp

        return checked

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            _check_json_content_type(request.headers.get("content-type"))
            body = await _read_body(request, limits)
        except InputError as err:
            status, payload = err.status, _json(err.to_dict())
        else:
            status, payload = await _predict_response(service, body)
        resp = Response(payload, status_code=status, media_type="application/json")
        seconds = time.perf_counter() - t0
        metrics.observe_request("/predict", "POST", status, seconds)
        probation_observe(status, seconds)
        return resp

    async def predict_asgi(scope: dict, receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        denied = auth.check(authorization, "predict")  # before reading the body
        try:
            if denied is not None:
                status, payload = _denied(denied)
            else:
                _check_json_content_type(content_type)
                body = await _receive_body(scope, receive, limits)
                status, payload = await _predict_response(service, body)
        except InputError as err:
            status, payload = err.status, _json(err.to_dict())
        except _Disconnected:
            return  # nobody to answer
        headers = [(b"content-length", str(len(payload)).encode()), _JSON_HEADER]
        if status == 401:
            headers.append(_WWW_AUTHENTICATE)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        seconds = time.perf_counter() - t0
        metrics.observe_request("/predict", "POST", status, seconds)
        probation_observe(status, seconds)

    async def feedback(request: Request) -> Response:
        t0 = time.perf_counter()
        resp: Response
        try:
            _check_json_content_type(request.headers.get("content-type"))
            body = await _read_body(request, limits)
            ids, labels = parse_feedback(body, limits)
            # Per token (or, without authentication, per client address); unknown or refused ids count too.
            caller = (
                _header(request, "authorization") or (request.client.host if request.client else "").encode()
            )
            wait = label_budget.take(caller, len(ids))
            if wait is not None:
                resp = JSONResponse(
                    {
                        "error": f"too many labels: this caller may send {limits.feedback_burst_labels} at once "
                        f"and {limits.feedback_labels_per_second:g} a second after; retry in {wait:.1f} s",
                        "field": "ids",
                        "retry_after_seconds": round(wait, 1),
                    },
                    status_code=429,
                    headers={"retry-after": str(max(1, math.ceil(wait)))},
                )
                metrics.observe_request("/feedback", "POST", 429, time.perf_counter() - t0)
                return resp
            n = await asyncio.get_running_loop().run_in_executor(None, service.feedback, ids, labels)
            resp = JSONResponse({"labeled": n})
        except InputError as err:
            resp = _error(err)
        except UnknownPredictionError as err:
            resp = JSONResponse(
                {"error": str(err), "field": "ids", "unknown_ids": err.ids[:100]}, status_code=404
            )
        except LabelConflictError as err:
            resp = JSONResponse(
                {"error": str(err), "field": "ids", "labeled_ids": err.ids[:100]}, status_code=409
            )
        except FutureLabelError as err:
            resp = JSONResponse(
                {"error": str(err), "field": "ids", "future_ids": err.ids[:100]}, status_code=422
            )
        except PredictionLogError as err:  # the database is away; the predictions are kept, retry later
            resp = JSONResponse({"error": str(err), "field": None}, status_code=503)
        except Exception as err:
            status, payload = _internal_error("POST /feedback", err)
            resp = Response(payload, status_code=status, media_type="application/json")
        metrics.observe_request("/feedback", "POST", resp.status_code, time.perf_counter() - t0)
        return resp

    async def health(request: Request) -> Response:
        t0 = time.perf_counter()
        h = service.health()
        resp = JSONResponse(h, status_code=503 if h["status"] == "unavailable" else 200)
        metrics.observe_request("/health", "GET", resp.status_code, time.perf_counter() - t0)
        return resp

    async def metrics_endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        resp = PlainTextResponse(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)
        metrics.observe_request("/metrics", "GET", resp.status_code, time.perf_counter() - t0)
        return resp

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_service:
            await asyncio.get_running_loop().run_in_executor(None, service.start)
        await service.batcher.start()
        # Everything loaded so far (MLflow, SQLAlchemy, pandas, the model) lives as long as the process: keep it
        # out of the cyclic collector, whose full passes over it otherwise stall requests for ~100+ ms.
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await service.batcher.stop()
            if manage_service:
                service.close()

    app = ServiceApp(
        routes=[
            Route("/predict", guarded("/predict", "POST", "predict", predict), methods=["POST"]),
            Route("/feedback", guarded("/feedback", "POST", "feedback", feedback), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", guarded("/metrics", "GET", "admin", metrics_endpoint), methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.predict_asgi = predict_asgi
    app.allowed_hosts = allowed_hosts if allowed_hosts is not None or auth.enabled else LOOPBACK_HOSTS
    return app
