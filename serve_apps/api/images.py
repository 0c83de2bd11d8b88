"""Safe image decoding and encoding for the HTTP API.

Reference images come from untrusted clients, so decoding is defensive: base64 is checked
strictly, only an allow-list of formats is opened (PIL never guesses among its ~40 decoders), and
the pixel count is checked from the header *before* any pixel is decompressed, which stops
decompression bombs (a few KB of PNG that would inflate to gigabytes).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from serve_apps.api.errors import ApiError

__all__ = [
    "ALLOWED_FORMATS",
    "decode_base64",
    "decode_reference_image",
    "encode_png",
    "png_size",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")


def decode_base64(data: str, *, field: str, max_bytes: int) -> bytes:
    """Strict base64 (a `data:image/...;base64,` prefix is accepted); 400/413 otherwise."""
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, f"{field}: a data URL must be base64 ('data:<type>;base64,...')")
    # 4 base64 chars carry 3 bytes: refuse before decoding anything too large.
    if len(data) * 3 // 4 > max_bytes:
        raise ApiError(
            413, f"{field}: larger than {max_bytes} bytes once decoded", code="payload_too_large"
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{field}: not valid base64", code="invalid_base64") from None


def decode_reference_image(
    data: str | bytes,
    *,
    max_pixels: int,
    max_bytes: int,
    field: str = "reference_image",
    min_side: int = 1,
    max_aspect: float | None = None,
) -> Image.Image:
    """Decode a reference image (base64, or raw bytes from a multipart upload) into RGB, safely.

    Args:
        data: base64 (or a base64 data URL) of a PNG, JPEG or WebP image, or its raw bytes.
        max_pixels: Largest width*height accepted; checked from the header before decoding.
        max_bytes: Largest encoded size accepted.
        field: Field name used in error messages.
        min_side: Smallest width or height accepted.
        max_aspect: Largest long-side / short-side ratio accepted (None: any).

    Raises:
        ApiError: 400 (not base64 / corrupt / empty), 413 (too large), 415 (format not
            allowed), 422 (a side or aspect ratio the model refuses).
    """
    if isinstance(data, bytes | bytearray):
        if len(data) > max_bytes:
            raise ApiError(
                413, f"{field}: {len(data)} bytes, over the limit of {max_bytes}",
                code="payload_too_large",
            )  # fmt: skip
        raw = bytes(data)
    else:
        raw = decode_base64(data, field=field, max_bytes=max_bytes)
    if not raw:
        raise ApiError(400, f"{field}: empty image", code="invalid_image")
    try:
        with warnings.catch_warnings():
            # We enforce our own, stricter pixel cap below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=list(ALLOWED_FORMATS))
    except Image.UnidentifiedImageError:
        raise ApiError(
            415,
            f"{field}: not an image in an allowed format (allowed: {', '.join(ALLOWED_FORMATS)})",
            code="unsupported_image_format",
        ) from None
    except Image.DecompressionBombError:
        raise ApiError(
            413,
            f"{field}: too many pixels (easel's cap: {max_pixels} pixels)",
            code="image_too_large",
        ) from None
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise _corrupt(field, exc) from None
    width, height = img.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise ApiError(
            413,
            f"{field}: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}",
            code="image_too_large",
        )
    if min(width, height) < min_side or (
        max_aspect is not None and max(width, height) / min(width, height) > max_aspect
    ):
        aspect = f", aspect ratio at most {max_aspect:g}:1" if max_aspect is not None else ""
        raise ApiError(
            422,
            f"{field}: {width}x{height} is not allowed (each side at least {min_side} px{aspect})",
            code="invalid_reference_size",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
        return img.convert("RGB")
    except Exception as exc:
        raise _corrupt(field, exc) from None


def _corrupt(field: str, exc: Exception) -> ApiError:
    # The decoder's own text stays out of the answer (it describes our internals, not the fix).
    return ApiError(
        400,
        f"{field}: corrupt image: it could not be decoded ({type(exc).__name__}); send a "
        "complete PNG, JPEG or WebP file",
        code="invalid_image",
    )


def encode_png(image: Image.Image, *, compress_level: int = 1) -> bytes:
    """PNG bytes of `image`; low compression since serving latency matters more than size."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes, read from the header only."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        return img.size
