"""Plots small enough to embed: a PNG shrunk to a thumbnail and written as a Markdown image with a ``data:`` URI.

Dagster has no image metadata type; its UI renders Markdown metadata, images included, so a plot shows beside the
numbers it explains. Metadata lives in the event log (every materialization, every check result), so each image is
capped: at most ``max_side`` pixels a side, 64 colours, and ``max_bytes`` once encoded (halved until it fits).
"""

from __future__ import annotations

import base64
import io

# A thumbnail of a 500 px plot: legible in the UI's metadata panel, ~15-40 kB in the event log.
MAX_SIDE = 480
MAX_BYTES = 64_000


def png_thumbnail(png: bytes, *, max_side: int = MAX_SIDE) -> bytes:
    """``png`` scaled down (never up) to fit ``max_side`` pixels a side, in a 64-colour palette."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        img.thumbnail((max_side, max_side))
        small = img.convert("RGB").quantize(colors=64)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_markdown(png: bytes, alt: str, *, max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES) -> str:
    """``png`` as a Markdown image (``![alt](data:image/png;base64,...)``) of at most ``max_bytes`` characters of
    base64: the thumbnail is halved in size until it fits."""
    side = max_side
    while True:
        encoded = base64.b64encode(png_thumbnail(png, max_side=side)).decode("ascii")
        if len(encoded) <= max_bytes or side <= 64:
            return f"![{alt}](data:image/png;base64,{encoded})"
        side //= 2
