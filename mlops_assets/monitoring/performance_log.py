"""Live model performance from the prediction log: labeled predictions, scored per time partition.

The serving layer logs every prediction with its event time (the row's timestamp, or ``as_of``); ``/feedback``
attaches labels. :func:`live_performance` groups the labeled ones by the data's partitions (``partitions.freq``
applied to the event time, so the keys are the data's own) and computes the metrics the training holdout reports.
This is the plain function behind the ``model_performance`` asset; it knows nothing of Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlops_assets.data.partitions import row_keys
from mlops_assets.metrics import classification_metrics
from mlops_assets.serving.prediction_log import make_engine, predictions

if TYPE_CHECKING:
    from mlops_assets.config import MlopsConfig


def labeled_predictions(
    log_url: str,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Labeled predictions of the log at ``log_url``: id, event_time (UTC), model_name, model_version,
    prediction, probability, label; optionally one model / version and event times in ``[start, end)``."""
    cols = [
        predictions.c.id,
        predictions.c.event_time,
        predictions.c.model_name,
        predictions.c.model_version,
        predictions.c.prediction,
        predictions.c.probability,
        predictions.c.label,
    ]
    q = sa.select(*cols).where(predictions.c.label.is_not(None))
    if model_name is not None:
        q = q.where(predictions.c.model_name == model_name)
    if model_version is not None:
        q = q.where(predictions.c.model_version == str(model_version))
    if start is not None:
        q = q.where(predictions.c.event_time >= _utc(start))
    if end is not None:
        q = q.where(predictions.c.event_time < _utc(end))
    engine = make_engine(log_url)
    try:
        if not sa.inspect(engine).has_table(predictions.name):
            rows: Sequence[Any] = []
        else:
            with engine.connect() as conn:
                rows = conn.execute(q).all()
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=[c.name for c in cols])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def _utc(t: Any) -> datetime:
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def live_performance(
    cfg: MlopsConfig,
    log_url: str,
    *,
    partitions: Iterable[str] | None = None,
    model_version: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of labeled predictions per partition key (``cfg.partitions.freq`` over the event time).

    ``log_url`` is the prediction log (``Storage.prediction_log_url``); ``partitions`` limits
    the keys (a key with no labeled prediction gets ``n = 0`` and ``None`` metrics); ``model_version`` limits the
    predictions to one version. Each value holds the metrics plus ``model_versions`` (the versions that made
    those predictions, sorted).
    """
    frame = labeled_predictions(log_url, model_name=cfg.model.name, model_version=model_version)
    keys = row_keys(frame["event_time"], cfg.partitions.freq) if len(frame) else pd.Series(dtype=object)
    out: dict[str, dict[str, Any]] = {}
    wanted = list(partitions) if partitions is not None else sorted(set(keys))
    for key in wanted:
        part = frame[keys.to_numpy() == key] if len(frame) else frame
        m: dict[str, Any] = classification_metrics(
            part["label"].to_numpy(dtype=np.int64),
            part["probability"].to_numpy(dtype=np.float64),
            pred=part["prediction"].to_numpy(dtype=np.int64),
        )
        m["model_versions"] = sorted(set(part["model_version"]), key=lambda v: (len(v), v))
        out[key] = m
    return out
