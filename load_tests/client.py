"""One request, one record: what the dispatchers send and how a response becomes a record.

Sending happens on a dispatcher's timer loop through load_tests.http1, which does only what
must happen there: write the request bytes (`request_body`, encoded beforehand), time the send,
the response headers (first byte) and the end of the body on the run's clock, and keep the
status, a few headers (KEEP_HEADERS) and the raw body. `finish_record` runs off that loop (the
recorder thread): it parses the body (JSON and base64 for the OpenAI shape), reads easel's
timing headers when they are there (an OpenAI-Images endpoint may have none: those columns stay
null), stores or hashes the image, and classifies every failure. Neither raises: every outcome
is a record. `Client` is the two in one, for warm-ups and tests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from load_tests.http1 import Endpoint, Pool, RawResponse
from load_tests.records import new_record

__all__ = [
    "API_PATHS",
    "JSON_HEADERS",
    "KEEP_HEADERS",
    "Client",
    "build_payload",
    "endpoint_url",
    "finish_record",
    "image_ext",
    "request_body",
]

API_PATHS = {"easel": "/v1/generate", "openai": "/v1/images/generations"}

_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"))
_MAX_ERROR_CHARS = 500
# The response headers a record reads; only these are kept from a response.
KEEP_HEADERS = (
    "X-Easel-Provider",
    "X-Easel-Replica",
    "X-Easel-Queue-Ms",
    "X-Easel-Inference-Ms",
    "X-Easel-Batch-Size",
    "X-Easel-Cold-Start",
    "Content-Type",
    "Retry-After",
)
JSON_HEADERS = {"Content-Type": "application/json"}


def endpoint_url(url: str, api: str) -> str:
    """The request URL for `api` ('easel' or 'openai') on a base URL (a full path is kept)."""
    if api not in API_PATHS:
        raise ValueError(f"unknown api {api!r}; allowed: {sorted(API_PATHS)}")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    return url if url.endswith(API_PATHS[api]) else url + API_PATHS[api]


def build_payload(row: Mapping[str, Any], api: str) -> dict[str, Any]:
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


def request_body(row: Mapping[str, Any], api: str) -> bytes:
    """The encoded JSON body for one manifest row (built before its send is due)."""
    return json.dumps(build_payload(row, api), separators=(",", ":")).encode()


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


def finish_record(
    row: Mapping[str, Any],
    resp: RawResponse,
    api: str,
    images_dir: Path | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The record of one sent request (REQUEST_SCHEMA fields) from its Response. Never raises.

    Args:
        row: the manifest row's `job_id`, `row`, `model`, `niche`, `tenant`, `arrival_s`.
        resp: what `fetch` returned.
        images_dir: where `<job_id>.<ext>` is written; None keeps only the sha256.
        **fields: more record fields (e.g. `attempt`).
    """
    try:
        return _finish(row, resp, api, images_dir, fields)
    except Exception as exc:  # never lose a row to a bug here
        rec = new_record(row, scheduled_s=row["arrival_s"], sent_s=resp.sent_s, **fields)
        rec.update(error=f"client: {exc!r}"[:_MAX_ERROR_CHARS], error_class="client_error")
        return rec


def _finish(
    row: Mapping[str, Any],
    resp: RawResponse,
    api: str,
    images_dir: Path | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    rec = new_record(row, scheduled_s=row["arrival_s"], **fields)
    rec["sent_s"], rec["first_byte_s"], rec["done_s"] = resp.sent_s, resp.first_byte_s, resp.done_s
    rec["latency_ms"] = (resp.done_s - row["arrival_s"]) * 1000.0
    rec["service_ms"] = (resp.done_s - resp.sent_s) * 1000.0
    if resp.error_class is not None:
        rec.update(error=resp.error, error_class=resp.error_class)
        return rec
    h, body = resp.headers, resp.body
    rec["status"] = resp.status
    rec["provider"] = h.get("X-Easel-Provider")
    rec["replica"] = h.get("X-Easel-Replica")
    rec["queue_ms"] = _float(h, "X-Easel-Queue-Ms")
    rec["inference_ms"] = _float(h, "X-Easel-Inference-Ms")
    rec["batch_size"] = _int(h, "X-Easel-Batch-Size")
    rec["cold_start"] = _bool(h, "X-Easel-Cold-Start")
    if resp.status != 200:
        rec.update(error=_error_text(resp.status, body, h), error_class=_http_class(resp.status))
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


class Client:
    """Requests to one endpoint, one at a time as they are awaited (warm-ups, tests).

    Must be made and used on one running event loop. The dispatchers' timer loop uses the
    same pool (load_tests.http1) through callbacks instead.

    Args:
        url: the full endpoint URL (see `endpoint_url`).
        api: 'easel' or 'openai'.
        timeout_s: per-request deadline.
        headers: extra request headers (e.g. Authorization); never written anywhere.
        clock: seconds since the run start; default: since this client was made.
    """

    def __init__(
        self,
        url: str,
        api: str,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        t0 = time.monotonic()
        self.api = api
        self.clock = clock or (lambda: time.monotonic() - t0)
        self.endpoint = Endpoint.of(url, {**JSON_HEADERS, **(headers or {})})
        self.pool = Pool(
            asyncio.get_running_loop(), self.endpoint, timeout_s, self.clock, KEEP_HEADERS
        )

    async def send(
        self, row: dict[str, Any], images_dir: Path | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one manifest row now and return its record. Never raises."""
        try:
            data = self.endpoint.request(request_body(row, self.api))
        except Exception as exc:  # a row the reader let through but we cannot encode
            rec = new_record(row, scheduled_s=row["arrival_s"], **fields)
            rec.update(
                error=f"cannot build the request: {exc!r}"[:_MAX_ERROR_CHARS],
                error_class="client_error",
            )
            return rec
        return finish_record(row, await self.pool.request(data), self.api, images_dir, **fields)

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
