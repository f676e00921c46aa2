"""``mlops-assets serve``: the prediction service on uvicorn, bound to 127.0.0.1 by default."""

from __future__ import annotations

import logging
import sys
from typing import Any

SWITCH_INTERVAL = 0.0005


def build_app(config: str | None = None, options: Any = None):
    """The ASGI app for ``config`` (a path to ``mlops.yaml``, or None for ``$MLOPS_CONFIG`` / the bundled one)."""
    from mlops_assets.config import load_config
    from mlops_assets.serving.app import create_app
    from mlops_assets.serving.service import PredictionService

    cfg = load_config(config)
    return create_app(PredictionService(cfg, options=options), freeze_gc=True)


def serve_command(args: Any) -> int:
    """Run the service until interrupted; returns the exit code."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = getattr(args, "host", None) or "127.0.0.1"
    port = int(getattr(args, "port", None) or 8000)
    app = build_app(getattr(args, "config", None))
    # The event loop shares the GIL with the prediction-log writer and the champion watcher; with the default
    # 5 ms switch interval each hand-over can stall requests for up to 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # One worker process: request batching needs the requests in one place; httptools + uvloop when present.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
