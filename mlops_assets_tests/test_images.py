"""Plots embedded in Dagster metadata stay small: a thumbnail, shrunk further until it fits the cap."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from mlops_assets.images import MAX_SIDE, png_markdown, png_thumbnail
from mlops_assets.training.plots import roc_curve_png


def _roc() -> bytes:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    return roc_curve_png(y, y * 0.5 + rng.random(400) * 0.8, title="ROC curve (holdout)")


def _size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as img:
        return img.size


def test_a_plot_becomes_a_thumbnail_never_larger_than_it_was():
    png = _roc()
    small = png_thumbnail(png)
    assert max(_size(small)) <= MAX_SIDE and len(small) < len(png)
    tiny = Image.new("RGB", (40, 30), "white")
    buf = io.BytesIO()
    tiny.save(buf, format="PNG")
    assert _size(png_thumbnail(buf.getvalue())) == (40, 30)  # never scaled up


def test_markdown_image_is_halved_until_it_fits_the_cap():
    png = _roc()
    md = png_markdown(png, "roc", max_bytes=4_000)
    assert md.startswith("![roc](data:image/png;base64,") and md.endswith(")")
    payload = md[len("![roc](data:image/png;base64,") : -1]
    assert len(payload) <= 4_000
    assert max(_size(base64.b64decode(payload))) < MAX_SIDE  # shrunk below the default thumbnail to fit
