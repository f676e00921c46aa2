"""``mlops-assets serve [--host 127.0.0.1] [--port 8000] [--workers N] [--insecure-local] [--tls-cert F --tls-key F]``: the HTTP
prediction service on the champion, until interrupted. The service itself is :mod:`mlops_assets.serving` (no
Dagster).

Tokens come from ``MLOPS_SERVE_TOKENS`` (:mod:`mlops_assets.serving.auth`); without it, random tokens are generated,
printed once and required. ``--insecure-local`` turns authentication off, on a loopback address only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.commands.context import load_context, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage

if TYPE_CHECKING:
    from mlops_assets.serving.auth import Auth


def service_auth(host: str, insecure_local: bool, env: Mapping[str, str]) -> Auth:
    """What the service requires: ``--insecure-local`` (loopback only) turns it off; else the tokens of
    ``MLOPS_SERVE_TOKENS``, or random ones printed once."""
    from mlops_assets.serving.auth import Auth, check_insecure_host

    if insecure_local:
        check_insecure_host(host)
        return Auth.insecure()
    auth = Auth.from_env(env)
    if auth.generated:
        print(auth.announce(), flush=True)  # once, on the console, never through logging
    return auth


def serve(
    cfg: MlopsConfig,
    storage: Storage,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    auth: Auth,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    allowed_hosts: list[str] | None = None,
    workers: int = 1,
    config_file: Path | None = None,
) -> None:
    """Serve ``cfg``'s champion on ``host:port`` until interrupted, requiring ``auth``; HTTPS with ``tls_cert``
    and ``tls_key`` (PEM files); only requests naming one of ``allowed_hosts`` in their Host header (default: any
    with tokens, loopback names without).

    With ``workers`` > 1, that many processes (uvicorn's supervisor, which restarts one that dies) share the
    socket, each with its own service on the champion loaded from ``config_file``: each batches its own requests,
    hot-swaps and watches a new champion on its own (of several services, one rolls back; see
    :mod:`mlops_assets.serving.probation`), and answers ``/metrics`` with its own counts."""
    import uvicorn

    from mlops_assets.serving.app import create_app
    from mlops_assets.serving.server import SWITCH_INTERVAL, WORKER_ENV, http_protocol
    from mlops_assets.serving.service import PredictionService

    hosts = frozenset(h.lower() for h in allowed_hosts) if allowed_hosts else None
    server: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "http": http_protocol(),
        "ssl_certfile": tls_cert,
        "ssl_keyfile": tls_key,
    }
    if workers > 1:
        import json

        from mlops_assets.serving.auth import ENV_VAR

        if config_file is None:
            raise ValueError("serve(workers > 1) needs the config file the workers load")
        os.environ[WORKER_ENV] = json.dumps(
            {
                "config": str(Path(config_file).resolve()),
                "allowed_hosts": sorted(hosts) if hosts else None,
                "insecure": not auth.enabled,
            }
        )
        if auth.enabled:
            # Generated tokens too: every worker requires the same ones.
            os.environ[ENV_VAR] = auth.env_value()
        uvicorn.run("mlops_assets.serving.server:worker_app", factory=True, workers=workers, **server)
        return
    app = create_app(PredictionService(cfg, storage=storage), auth=auth, allowed_hosts=hosts, freeze_gc=True)
    # The event loop shares the GIL with the prediction-log writer and the champion watcher; with the default
    # 5 ms switch interval each hand-over can stall requests for up to 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # One process (the default): a batch gathers the requests of one process only; httptools + uvloop when present.
    uvicorn.run(app, **server)


def main(args: argparse.Namespace) -> int:
    from mlops_assets.serving.auth import ENV_VAR, Auth, AuthConfigError, check_insecure_host

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or "127.0.0.1"
    if args.workers < 1:
        print(f"mlops-assets serve: --workers {args.workers}: at least 1", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("mlops-assets serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            print(f"mlops-assets serve: {flag} {path}: no such file", file=sys.stderr)
            return 2
    try:
        if args.insecure_local:
            check_insecure_host(host)  # refused before anything is loaded
        else:
            Auth.from_env({ENV_VAR: os.environ.get(ENV_VAR, "")})  # a malformed setting, likewise
    except AuthConfigError as err:
        print(f"mlops-assets serve: {err}", file=sys.stderr)
        return 2
    ctx = load_context(args.config)
    require_state(ctx.storage)
    auth = service_auth(host, args.insecure_local, os.environ)  # generated tokens are printed only now
    serve(
        ctx.cfg,
        ctx.storage,
        host=host,
        port=int(args.port or 8000),
        auth=auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        allowed_hosts=args.allowed_host,
        workers=args.workers,
        config_file=ctx.config_file,
    )
    return 0
