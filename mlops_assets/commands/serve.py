"""``mlops-assets serve [--host 127.0.0.1] [--port 8000]``: the HTTP prediction service on the champion, until
interrupted. The service itself is :mod:`mlops_assets.serving` (no Dagster)."""

from __future__ import annotations

import argparse
import logging
import sys

from mlops_assets.commands.context import load_context, require_state
from mlops_assets.config import MlopsConfig
from mlops_assets.storage import Storage


def serve(cfg: MlopsConfig, storage: Storage, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``cfg``'s champion on ``host:port`` until interrupted."""
    import uvicorn

    from mlops_assets.serving.app import create_app
    from mlops_assets.serving.server import SWITCH_INTERVAL, http_protocol
    from mlops_assets.serving.service import PredictionService

    app = create_app(PredictionService(cfg, storage=storage), freeze_gc=True)
    # The event loop shares the GIL with the prediction-log writer and the champion watcher; with the default
    # 5 ms switch interval each hand-over can stall requests for up to 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # One worker process: request batching needs the requests in one place; httptools + uvloop when present.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, http=http_protocol())


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = load_context(args.config)
    require_state(ctx.storage)
    serve(ctx.cfg, ctx.storage, host=args.host or "127.0.0.1", port=int(args.port or 8000))
    return 0
