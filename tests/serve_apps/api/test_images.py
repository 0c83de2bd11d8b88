"""Reference images are decoded defensively: strict base64, format allow-list, pixel cap first."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from serve_apps.api.errors import ApiError
from serve_apps.api.images import decode_reference_image, encode_png, png_size


def _b64(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _decode(data: str, **kw):
    kw.setdefault("max_pixels", 512 * 512)
    kw.setdefault("max_bytes", 1 << 20)
    return decode_reference_image(data, **kw)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode_to_rgb(fmt):
    img = _decode(_b64(Image.new("L", (40, 30), 128), fmt))
    assert img.mode == "RGB" and img.size == (40, 30)


def test_data_url_prefix_is_accepted():
    data = "data:image/png;base64," + _b64(Image.new("RGB", (8, 8)), "PNG")
    assert _decode(data).size == (8, 8)


def _bomb_png(side: int) -> str:
    """A valid PNG header declaring side x side pixels, with a tiny (truncated) body."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
    png += struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    png += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return base64.b64encode(png).decode()


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ("not base64!!", 400, "invalid_base64"),
        ("data:image/png,abc", 400, None),
        (base64.b64encode(b"GIF89a" + b"\x00" * 20).decode(), 415, "unsupported_image_format"),
        (base64.b64encode(b"just some text").decode(), 415, "unsupported_image_format"),
        (_bomb_png(100_000), 413, "image_too_large"),
        (_bomb_png(600), 413, "image_too_large"),
    ],
)
def test_bad_reference_images(data, status, code):
    with pytest.raises(ApiError) as info:
        _decode(data)
    assert info.value.status == status
    if code:
        assert info.value.code == code


def test_gif_is_not_in_the_allow_list():
    with pytest.raises(ApiError) as info:
        _decode(_b64(Image.new("RGB", (8, 8)), "GIF"))
    assert info.value.status == 415


def test_truncated_image_is_400():
    full = base64.b64decode(_b64(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG"))
    with pytest.raises(ApiError) as info:
        _decode(base64.b64encode(full[: len(full) // 2]).decode())
    assert info.value.status == 400


def test_encoded_size_cap_before_decoding():
    with pytest.raises(ApiError) as info:
        _decode(_b64(Image.new("RGB", (64, 64)), "PNG"), max_bytes=10)
    assert info.value.status == 413


def test_encode_png_round_trip():
    data = encode_png(Image.new("RGB", (48, 32), (1, 2, 3)))
    assert png_size(data) == (48, 32)


def test_raw_bytes_decode_and_are_capped_like_base64():
    buf = io.BytesIO()
    Image.new("RGB", (80, 64)).save(buf, format="PNG")
    assert _decode(buf.getvalue()).size == (80, 64)
    with pytest.raises(ApiError) as info:
        _decode(buf.getvalue(), max_bytes=10)
    assert (info.value.status, info.value.code) == (413, "payload_too_large")
    with pytest.raises(ApiError) as info:
        _decode(b"")
    assert info.value.status == 400


@pytest.mark.parametrize(("size", "ok"), [((64, 64), True), ((63, 200), False), ((600, 64), False)])
def test_side_and_aspect_limits_are_422(size, ok):
    data = _b64(Image.new("RGB", size), "PNG")
    if ok:
        assert _decode(data, min_side=64, max_aspect=8).size == size
        return
    with pytest.raises(ApiError) as info:
        _decode(data, min_side=64, max_aspect=8, field="reference_images[2]")
    assert (info.value.status, info.value.code) == (422, "invalid_reference_size")
    assert info.value.message.startswith(f"reference_images[2]: {size[0]}x{size[1]}")
