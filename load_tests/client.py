"""One request, one record: the HTTP client the dispatchers use.

`send_request` never raises. It times the send, the response headers (first byte) and the end
of the body on the run's clock, reads easel's timing headers when they are there (an
OpenAI-Images endpoint may have none: those columns stay null), stores or hashes the image, and
classifies every failure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from load_tests.records import new_record

__all__ = ["API_PATHS", "build_payload", "endpoint_url", "image_ext", "send_request"]

API_PATHS = {"easel": "/v1/generate", "openai": "/v1/images/generations"}

_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"))
_MAX_ERROR_CHARS = 500
# Hashing and writing a large image in the event loop would delay the next scheduled sends.
_OFFLOAD_BYTES = 256 * 1024


def endpoint_url(url: str, api: str) -> str:
    """The request URL for `api` ('easel' or 'openai') on a base URL (a full path is kept)."""
    if api not in API_PATHS:
        raise ValueError(f"unknown api {api!r}; allowed: {sorted(API_PATHS)}")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    return url if url.endswith(API_PATHS[api]) else url + API_PATHS[api]


def build_payload(row: dict[str, Any], api: str) -> dict[str, Any]:
    """The JSON body for one manifest row; null fields are left out (the server's defaults)."""
    if api == "openai":
        body: dict[str, Any] = {
            "model": row["model"],
            "prompt": row["prompt"],
            "n": 1,
            "response_format": "b64_json",
        }
        if row.get("width") is not None and row.get("height") is not None:
            body["size"] = f"{row['width']}x{row['height']}"
        return body
    body = {"model": row["model"], "prompt": row["prompt"], "request_id": row["job_id"]}
    for key in ("niche", "width", "height", "steps", "seed"):
        if row.get(key) is not None:
            body[key] = row[key]
    if row.get("reference_image") is not None:
        body["reference_image"] = base64.b64encode(row["reference_image"]).decode("ascii")
    if row.get("reference_images"):
        body["reference_images"] = [
            base64.b64encode(ref).decode("ascii") for ref in row["reference_images"]
        ]
    return body


def image_ext(data: bytes) -> str | None:
    """File extension for encoded image bytes, or None when they are not an image we know."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def _float(headers: Any, name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


def _int(headers: Any, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


def _bool(headers: Any, name: str) -> bool | None:
    v = headers.get(name)
    if v is None:
        return None
    v = v.strip().lower()
    return True if v in ("true", "1", "yes") else False if v in ("false", "0", "no") else None


def _error_text(status: int, body: bytes, headers: Any) -> str:
    """'HTTP 503 overloaded: message (Retry-After: 1)' from an easel/OpenAI error body."""
    text = f"HTTP {status}"
    try:
        err = json.loads(body).get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            text += f" {code}: {err.get('message', '')}" if code else f": {err.get('message', '')}"
        elif err:
            text += f": {err}"
    except (ValueError, AttributeError):
        snippet = body[:200].decode("utf-8", "replace").strip()
        if snippet:
            text += f": {snippet}"
    if headers.get("Retry-After"):
        text += f" (Retry-After: {headers['Retry-After']})"
    return text[:_MAX_ERROR_CHARS]


def _http_class(status: int) -> str:
    if status in (429, 503):
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "http_other"


def _store(data: bytes, path: Path | None) -> str:
    if path is not None:
        path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def send_request(
    session: aiohttp.ClientSession,
    url: str,
    api: str,
    row: dict[str, Any],
    *,
    clock: Callable[[], float],
    timeout_s: float,
    images_dir: Path | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send one manifest row now; return its record (REQUEST_SCHEMA fields). Never raises.

    Args:
        url: the full endpoint URL (see `endpoint_url`).
        clock: seconds since the run start.
        images_dir: where `<job_id>.<ext>` is written; None keeps only the sha256.
        headers: extra request headers (e.g. Authorization); never written anywhere.
    """
    rec = new_record(row, scheduled_s=row["arrival_s"])
    try:
        payload = build_payload(row, api)
    except Exception as exc:  # a row the reader let through but we cannot encode
        rec.update(
            error=f"cannot build the request: {exc!r}"[:_MAX_ERROR_CHARS],
            error_class="client_error",
        )
        return rec
    sent = clock()
    rec["sent_s"] = sent
    try:
        async with session.post(
            url, json=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            rec["first_byte_s"] = clock()
            body = await resp.read()
            done = clock()
            h = resp.headers
            rec["status"] = resp.status
            rec["provider"] = h.get("X-Easel-Provider")
            rec["replica"] = h.get("X-Easel-Replica")
            rec["queue_ms"] = _float(h, "X-Easel-Queue-Ms")
            rec["inference_ms"] = _float(h, "X-Easel-Inference-Ms")
            rec["batch_size"] = _int(h, "X-Easel-Batch-Size")
            rec["cold_start"] = _bool(h, "X-Easel-Cold-Start")
    except TimeoutError:
        rec.update(error=f"no complete response within {timeout_s:g} s", error_class="timeout")
        done = clock()
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        rec.update(error=f"connection: {exc!r}"[:_MAX_ERROR_CHARS], error_class="connection")
        done = clock()
    except Exception as exc:  # every outcome is a record, never an exception
        rec.update(error=repr(exc)[:_MAX_ERROR_CHARS], error_class="client_error")
        done = clock()
    rec["done_s"] = done
    rec["latency_ms"] = (done - row["arrival_s"]) * 1000.0
    rec["service_ms"] = (done - sent) * 1000.0
    if rec["status"] is None:
        return rec
    if rec["status"] != 200:
        rec.update(
            error=_error_text(rec["status"], body, h), error_class=_http_class(rec["status"])
        )
        return rec
    if api == "openai":
        try:
            body = base64.b64decode(json.loads(body)["data"][0]["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
            rec.update(
                error=f"no b64_json image in the response: {exc!r}"[:_MAX_ERROR_CHARS],
                error_class="bad_response",
            )
            return rec
    ext = image_ext(body)
    if ext is None:
        ctype = h.get("Content-Type", "?")
        rec.update(
            error=f"200 but the body ({len(body)} bytes, {ctype}) is not an image",
            error_class="bad_response",
        )
        return rec
    path = images_dir / f"{row['job_id']}{ext}" if images_dir is not None else None
    try:
        if len(body) > _OFFLOAD_BYTES:
            rec["image_sha256"] = await asyncio.to_thread(_store, body, path)
        else:
            rec["image_sha256"] = _store(body, path)
    except OSError as exc:
        rec.update(
            error=f"cannot save the image: {exc!r}"[:_MAX_ERROR_CHARS], error_class="client_error"
        )
        return rec
    if path is not None:
        rec["image_path"] = f"{images_dir.name}/{path.name}"
    rec.update(ok=True, error=None, error_class="ok")
    return rec
