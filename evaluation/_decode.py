"""Decoding image bytes for scoring, with a pixel cap so a decoding bomb is an error record."""

from __future__ import annotations

import io

from PIL import Image

__all__ = ["MAX_PIXELS", "decode_image"]

# Decoding bombs: an image this large is an error record, not an out-of-memory actor.
MAX_PIXELS = 64 * 1024 * 1024


def decode_image(data: bytes) -> Image.Image:
    """The decoded image; raises on bytes that are not an image, or one over MAX_PIXELS."""
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"{img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
    img.load()
    if img.width < 1 or img.height < 1:
        raise ValueError("empty image")
    return img
