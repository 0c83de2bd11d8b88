"""Clients for closed image models behind HTTP APIs (the `http_api` backend), used by the gateway.

Two protocols, one async interface (`ImageApiClient.generate`):

- `OpenAIImagesClient`: one synchronous call, `POST {base}/v1/images/generations` (or
  `/v1/images/edits`, multipart with one `image[]` part per reference image, when references
  are given) answering base64 PNG.
- `QueueApiClient`: `POST {base}/v1/jobs` -> `{id}` (references as `image_urls`, data URIs, the
  way queue-style image APIs take them), poll `GET {base}/v1/jobs/{id}` until
  `succeeded`/`failed`, then `GET {base}/v1/jobs/{id}/result` -> PNG bytes.

Both share one pooled `httpx.AsyncClient`, one overall deadline per image (`api.timeout_s` covers
every retry, backoff and poll), and retries with exponential backoff and jitter on 429, 5xx and
connection errors, honouring `Retry-After`, at most `api.max_retries` times. The final failure is
one `VendorError` whose `status`/`code` the gateway passes on: 504 `upstream_timeout`,
503 `upstream_unavailable` (retries exhausted), 400 or 502 `upstream_rejected` (the vendor said
no: 400 when it refused the request's content, 502 when it refused us, e.g. a bad key).

The API key comes from the environment variable `api.api_key_env`; it is kept in a `_Secret`
whose repr is masked, sent only as the `Authorization` header, and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import logging
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from config import ApiConfig, ModelConfig

__all__ = [
    "ImageApiClient",
    "OpenAIImagesClient",
    "QueueApiClient",
    "VendorConfigError",
    "VendorError",
    "VendorImage",
    "make_client",
]

log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_BACKOFF_S = 30.0
_REQUEST_ID_HEADERS = ("x-vendor-request-id", "x-request-id", "request-id")


@dataclass(frozen=True)
class VendorImage:
    """One image from a vendor, with what it cost to get it."""

    png: bytes = field(repr=False)
    vendor_ms: float  # wall time from the first attempt to the image, retries and polls included
    attempts: int  # 1 when the first attempt succeeded
    vendor_request_id: str | None
    price_usd: float | None = None  # from X-Vendor-Price-Usd when the vendor sends it
    vendor_queue_ms: float | None = None  # the vendor's own queueing time, when it reports it
    simulated: bool = False  # True when the answer came from a simulated vendor


class VendorError(Exception):
    """The final failure of one `generate` call, shaped for the HTTP answer the ingress gives.

    Attributes:
        status: HTTP status to answer with (504 timeout, 503 unavailable, 400/502 rejected).
        code: "upstream_timeout", "upstream_unavailable" or "upstream_rejected".
        message: What happened, without secrets.
        retry_after: Seconds the vendor asked us to wait, when it said so.
        retryable: Whether another attempt (or another provider) might succeed.
        vendor_status: The vendor's last HTTP status; None for timeouts and connection errors.
        attempts: Attempts made.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        retryable: bool = False,
        vendor_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.retryable = retryable
        self.vendor_status = vendor_status
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions cross processes by pickling (Ray, multiprocessing): keep every field.
        args = (self.status, self.code, self.message, self.retry_after, self.retryable)
        return (type(self), (*args, self.vendor_status, self.attempts))


class VendorConfigError(ValueError):
    """A closed model that cannot be called as configured (no base URL, missing API key)."""


class _Secret:
    """Holds an API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key is not pickled; read it from the environment where needed")


class _Transient(Exception):
    """One failed attempt that may succeed on retry (429, 5xx, connection error)."""

    def __init__(self, message: str, vendor_status: int | None, retry_after: float | None = None):
        super().__init__(message)
        self.vendor_status = vendor_status
        self.retry_after = retry_after


class _Rejected(Exception):
    """The vendor refused the request (4xx other than 408/429): retrying will not help."""

    def __init__(self, message: str, vendor_status: int | None):
        super().__init__(message)
        self.vendor_status = vendor_status


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or "error"
        return f"{code}: {err.get('message', '')}"[:300]
    return resp.text[:300]


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _Transient(f"{what}: the vendor's answer is not a JSON object", None)
    return body


def _check(resp: httpx.Response, what: str) -> httpx.Response:
    """Return a 2xx response; raise _Transient or _Rejected for the rest."""
    if resp.is_success:
        return resp
    msg = f"{what}: vendor answered {resp.status_code} ({_error_text(resp)})"
    if resp.status_code in (408, 429) or resp.status_code >= 500:
        raise _Transient(msg, resp.status_code, _retry_after(resp.headers.get("retry-after")))
    raise _Rejected(msg, resp.status_code)


def _header_float(resp: httpx.Response, name: str) -> float | None:
    try:
        return float(resp.headers[name])
    except (KeyError, ValueError):
        return None


def _png(data: bytes, what: str) -> bytes:
    if not data.startswith(_PNG_MAGIC):
        # A 2xx with something that is not a PNG is the vendor's fault; another try may do.
        raise _Transient(f"{what}: the vendor's answer is not a PNG", None)
    return data


def _content_type(image: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic number."""
    if image.startswith(_PNG_MAGIC):
        return "image/png"
    if image.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _suffix(image: bytes) -> str:
    return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
        _content_type(image), "bin"
    )


@dataclass(frozen=True)
class _Request:
    prompt: str
    width: int
    height: int
    seed: int
    request_id: str
    negative_prompt: str | None
    reference_images: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True)
class _Answer:
    png: bytes = field(repr=False)
    vendor_request_id: str | None
    price_usd: float | None
    queue_ms: float | None


@dataclass
class _Progress:
    attempts: int = 0
    last: str = "no attempt finished"


class ImageApiClient(ABC):
    """Async client for one closed model; create with `make_client`, close with `aclose()`."""

    protocol: str = ""

    def __init__(
        self,
        model: ModelConfig,
        base_url: str,
        api_key: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert model.api is not None
        self.model_name = model.name
        self.api: ApiConfig = model.api
        self.base_url = base_url.rstrip("/")
        self.simulated = model.api.simulated is not None
        self._key = _Secret(api_key) if api_key else None
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        key = "set" if self._key else "none"
        return (
            f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r}, "
            f"simulated={self.simulated}, api_key={key})"
        )

    async def __aenter__(self) -> ImageApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections (after pending job cancels); reopened if used again."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=2.0)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        # One pool per event loop: connections cannot move between loops.
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.api.timeout_s, connect=min(10.0, self.api.timeout_s)),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                transport=self._transport,
            )
            self._http_loop = loop
        return self._http

    def _headers(self, request_id: str) -> dict[str, str]:
        headers = {"X-Request-Id": request_id, "User-Agent": "easel/0.1"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    async def generate(
        self,
        *,
        prompt: str,
        width: int,
        height: int,
        seed: int,
        request_id: str,
        negative_prompt: str | None = None,
        reference_images: Sequence[bytes] = (),
    ) -> VendorImage:
        """One image; raises VendorError once retries or the `timeout_s` deadline run out.

        `reference_images` (encoded PNG/JPEG/WebP) go as the vendor's protocol takes them:
        multipart `image[]` parts to `/v1/images/edits` (OpenAI), `image_urls` data URIs (queue).
        """
        if not prompt or width <= 0 or height <= 0:
            raise ValueError("generate needs a non-empty prompt and positive width and height")
        if not request_id.isascii():
            # HTTP headers are ASCII: sending it would fail inside httpx, not at the vendor.
            raise ValueError(f"request_id must be ASCII, got {request_id!r}")
        req = _Request(
            prompt, width, height, seed, request_id, negative_prompt, tuple(reference_images)
        )
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.api.timeout_s
        progress = _Progress()
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._with_retries(req, deadline, progress)
        except TimeoutError:
            raise VendorError(
                504,
                "upstream_timeout",
                f"{self.model_name}: no image within {self.api.timeout_s:g}s after "
                f"{progress.attempts} attempt(s); last: {progress.last}",
                retryable=True,
                attempts=progress.attempts,
            ) from None
        vendor_ms = (time.perf_counter() - started) * 1000
        log.debug(
            "%s %s: image after %d attempt(s), %.0f ms",
            self.model_name,
            request_id,
            progress.attempts,
            vendor_ms,
        )
        return VendorImage(
            png=answer.png,
            vendor_ms=vendor_ms,
            attempts=progress.attempts,
            vendor_request_id=answer.vendor_request_id,
            price_usd=answer.price_usd,
            vendor_queue_ms=answer.queue_ms,
            simulated=self.simulated,
        )

    async def _with_retries(self, req: _Request, deadline: float, progress: _Progress) -> _Answer:
        loop = asyncio.get_running_loop()
        jitter = random.Random(req.request_id)  # reproducible per request
        while True:
            progress.attempts += 1
            attempt = progress.attempts
            try:
                return await self._attempt(req)
            except _Rejected as exc:
                status = 400 if exc.vendor_status in (400, 413, 415, 422) else 502
                raise VendorError(
                    status,
                    "upstream_rejected",
                    f"{self.model_name}: {exc}",
                    retryable=False,
                    vendor_status=exc.vendor_status,
                    attempts=attempt,
                ) from None
            except (_Transient, httpx.HTTPError) as exc:
                if isinstance(exc, httpx.HTTPError):  # connect/read errors, per-call timeouts
                    exc = _Transient(f"connection error: {type(exc).__name__}", None)
                progress.last = str(exc)
                delay = min(_MAX_BACKOFF_S, self.api.backoff_s * 2 ** (attempt - 1))
                delay *= jitter.uniform(0.5, 1.5)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)  # the vendor's word is a floor
                give_up = None
                if attempt > self.api.max_retries:
                    give_up = f"gave up after {attempt} attempt(s)"
                elif loop.time() + delay >= deadline:
                    give_up = (
                        f"next retry ({delay:.2f}s) would pass the {self.api.timeout_s:g}s deadline"
                    )
                if give_up:
                    raise VendorError(
                        503,
                        "upstream_unavailable",
                        f"{self.model_name}: {give_up}; last: {exc}",
                        retry_after=exc.retry_after,
                        retryable=True,
                        vendor_status=exc.vendor_status,
                        attempts=attempt,
                    ) from None
                log.info(
                    "%s %s: attempt %d failed (%s); retrying in %.2fs",
                    self.model_name,
                    req.request_id,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    @abstractmethod
    async def _attempt(self, req: _Request) -> _Answer:
        """One try: the image, or _Transient / _Rejected / httpx.HTTPError."""


class OpenAIImagesClient(ImageApiClient):
    """OpenAI-images style: one POST answers the image as base64 JSON."""

    protocol = "openai_images"

    async def _attempt(self, req: _Request) -> _Answer:
        fields: dict[str, Any] = {
            "model": self.api.vendor_model,
            "prompt": req.prompt,
            "n": 1,
            "size": f"{req.width}x{req.height}",
            "response_format": "b64_json",
            "seed": req.seed,  # an extension many OpenAI-shaped vendors accept
        }
        if req.negative_prompt:
            fields["negative_prompt"] = req.negative_prompt
        http = self._client()
        headers = self._headers(req.request_id)
        if not req.reference_images:
            url = f"{self.base_url}/v1/images/generations"
            resp = await http.post(url, json=fields, headers=headers)
        else:
            # The OpenAI edits shape: several images as repeated `image[]` file parts.
            url = f"{self.base_url}/v1/images/edits"
            form = {k: str(v) for k, v in fields.items()}
            files = [
                ("image[]", (f"reference-{i}.{_suffix(img)}", img, _content_type(img)))
                for i, img in enumerate(req.reference_images)
            ]
            resp = await http.post(url, data=form, files=files, headers=headers)
        body = _json_object(_check(resp, "images"), "images")
        try:
            png = base64.b64decode(body["data"][0]["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
            raise _Transient("images: the vendor's answer has no b64_json image", None) from None
        return _Answer(
            png=_png(png, "images"),
            vendor_request_id=next(
                (resp.headers[h] for h in _REQUEST_ID_HEADERS if h in resp.headers), None
            ),
            price_usd=_header_float(resp, "x-vendor-price-usd"),
            queue_ms=_header_float(resp, "x-vendor-queue-ms"),
        )


class QueueApiClient(ImageApiClient):
    """Queue style: submit a job, poll its status, fetch the result."""

    protocol = "queue"

    async def _attempt(self, req: _Request) -> _Answer:
        http = self._client()
        headers = self._headers(req.request_id)
        body: dict[str, Any] = {
            "model": self.api.vendor_model,
            "prompt": req.prompt,
            "width": req.width,
            "height": req.height,
            "seed": req.seed,
        }
        if req.negative_prompt:
            body["negative_prompt"] = req.negative_prompt
        if req.reference_images:
            # Queue-style image APIs take reference images as URLs; data URIs need no hosting.
            body["image_urls"] = [
                f"data:{_content_type(img)};base64,{base64.b64encode(img).decode()}"
                for img in req.reference_images
            ]
        resp = await http.post(f"{self.base_url}/v1/jobs", json=body, headers=headers)
        job_id = _json_object(_check(resp, "submit"), "submit").get("id")
        if not job_id:
            raise _Transient("submit: the vendor's answer has no job id", None)
        job_id = str(job_id)
        done = False
        try:
            job = await self._poll(http, job_id, headers)
            status = job.get("status")
            if status != "succeeded":
                done = True
                err = job.get("error") or {}
                if not isinstance(err, dict):
                    err = {"message": str(err)}
                msg = f"job {job_id} {status}: {err.get('code', '')} {err.get('message', '')}"
                if status == "failed" and err.get("retryable", True):
                    raise _Transient(msg.strip(), None)
                raise _Rejected(msg.strip(), None)
            url = f"{self.base_url}/v1/jobs/{job_id}/result"
            result = _check(await http.get(url, headers=headers), "result")
            done = True
        finally:
            if not done:  # abandoned (deadline, error): free the vendor's worker, best effort
                self._spawn(self._cancel(job_id, headers))
        queue_ms = job.get("queue_ms")
        return _Answer(
            png=_png(result.content, "result"),
            vendor_request_id=job_id,
            price_usd=_header_float(result, "x-vendor-price-usd"),
            queue_ms=float(queue_ms) if isinstance(queue_ms, int | float) else None,
        )

    async def _poll(
        self, http: httpx.AsyncClient, job_id: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        url = f"{self.base_url}/v1/jobs/{job_id}"
        while True:
            job = _json_object(_check(await http.get(url, headers=headers), "poll"), "poll")
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                return job
            await asyncio.sleep(self.api.poll_interval_s)

    async def _cancel(self, job_id: str, headers: dict[str, str]) -> None:
        # The vendor may be gone; the job is abandoned either way.
        with contextlib.suppress(httpx.HTTPError):
            url = f"{self.base_url}/v1/jobs/{job_id}"
            await self._client().delete(url, headers=headers, timeout=2.0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_CLIENTS: dict[str, type[ImageApiClient]] = {
    "openai_images": OpenAIImagesClient,
    "queue": QueueApiClient,
}


def make_client(
    model: ModelConfig,
    base_url: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ImageApiClient:
    """The client for `model`'s `api.protocol`.

    Args:
        model: An `http_api` model.
        base_url: Overrides `api.base_url`.
        transport: An httpx transport, for tests.

    Raises:
        VendorConfigError: not an http_api model, no base URL, or a real API whose key
            variable is not set (a simulated vendor accepts any key or none).
    """
    if model.api is None:
        raise VendorConfigError(
            f"model {model.name!r} has no `api` section (not an http_api model)"
        )
    api = model.api
    url = base_url or api.base_url
    if not url:
        raise VendorConfigError(
            f"model {model.name!r}: no base URL; a simulated vendor's URL is written into "
            "api.base_url by the local mode that starts it (simulators.vendor.start_vendors)"
        )
    key = os.environ.get(api.api_key_env) if api.api_key_env else None
    if api.api_key_env and not key and api.simulated is None:
        raise VendorConfigError(
            f"model {model.name!r}: environment variable {api.api_key_env} (the API key) is not "
            "set or is empty"
        )
    return _CLIENTS[api.protocol](model, url, key, transport=transport)
