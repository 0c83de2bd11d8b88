"""The HTTP app of the SIMULATED closed image-API vendor (how to start it: `simulators.vendor`).

It speaks both protocols the real clients in `serve_apps.vendors.clients` use:

- OpenAI-images style: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits`
  (multipart: one `image` or several `image[]` file parts, PNG/JPEG/WebP, as OpenAI's edits
  endpoint takes them), answering `{"data": [{"b64_json": ...}]}`.
- Queue style: `POST /v1/jobs` (references as `image_urls`: http(s) URLs or base64 data URIs,
  the way queue-style image APIs take them) -> 202 `{id}`, `GET /v1/jobs/{id}` (status,
  queue_ms, service_ms, error), `GET /v1/jobs/{id}/result` (the PNG), `DELETE /v1/jobs/{id}`
  (cancel).

What a load test can feel: a log-normal service time fitted to p50/p95, a FIFO queue in front of
`concurrency` workers (queueing delay is real waiting), a share of 500s drawn per arrival from the
seed (the same arrivals fail on every run), optional 429s with `Retry-After` when more than
`max_queue` jobs wait, and a price per image in `X-Vendor-Price-Usd`. Every response carries
`X-Simulated-Vendor: true`; timings come as `X-Vendor-Queue-Ms` and `X-Vendor-Service-Ms`.

Control routes: `POST /_sim/config` (partial settings, applied live: `{"failure_rate": 1.0}`),
`POST /_sim/reset` (start-up settings, zeroed counters) and `GET /_sim/stats`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import io
import logging
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NoReturn

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config import LatencyDistribution, ModelConfig

__all__ = ["VendorSettings", "build_app", "render_png"]

log = logging.getLogger(__name__)

_Z95 = 1.6448536269514722  # standard normal quantile at 0.95
_MAX_JOBS_KEPT = 10_000  # finished jobs remembered for status/result look-ups
_Authorization = Annotated[str | None, Header()]


class VendorSettings(BaseModel):
    """What the simulated vendor does; every field can be changed live via `POST /_sim/config`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="simulated", min_length=1, description="Shown in logs and stats.")
    vendor_model: str = Field(default="", description="Model name it serves; '' accepts any.")
    latency: LatencyDistribution = Field(description="Log-normal service time (p50, p95).")
    concurrency: int = Field(default=4, ge=1, le=10_000, description="Jobs worked at once.")
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="Share answered with 500.")
    seed: int = Field(default=0, ge=0, description="Seeds service times and failure draws.")
    price_usd: float = Field(default=0.0, ge=0, le=100, description="Billed per image.")
    max_queue: int | None = Field(
        default=None, ge=0, le=1_000_000, description="Waiting jobs beyond which it answers 429."
    )
    retry_after_s: float = Field(
        default=1.0, ge=0, le=3_600, description="Retry-After on 429 (fractions allowed here)."
    )
    fail_next: int = Field(
        default=0, ge=0, le=1_000_000, description="The next N generation requests fail."
    )
    fail_status: Literal[429, 500, 502, 503, 504] = Field(
        default=503, description="Status the `fail_next` requests get."
    )
    job_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="Jobs that end 'failed' after being worked."
    )
    require_key_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="When set, a Bearer key with this SHA-256 is required (else 401); by "
        "default any key or none is accepted.",
    )
    max_side: int = Field(default=4096, ge=8, le=16_384, description="Largest width or height.")

    @classmethod
    def from_model(cls, model: ModelConfig) -> VendorSettings:
        """Settings from a closed model's `api.simulated` section and its price per image."""
        if model.api is None or model.api.simulated is None:
            raise ValueError(f"model {model.name!r} has no `api.simulated` section")
        sim = model.api.simulated
        return cls(
            name=model.name,
            vendor_model=model.api.vendor_model,
            latency=sim.latency,
            concurrency=sim.concurrency,
            failure_rate=sim.failure_rate,
            seed=sim.seed,
            price_usd=model.price_per_image or 0.0,
            max_queue=sim.max_queue,
        )


class _WorkQueue:
    """FIFO admission to `concurrency` workers; the limit can change while jobs wait."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def depth(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    async def acquire(self) -> None:
        if self.busy < self.concurrency and not self._waiters:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # woken and cancelled in the same tick: hand the slot on
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.busy -= 1
        self._wake()

    def resize(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.busy < self.concurrency:
            fut = self._waiters.popleft()
            if not fut.done():
                self.busy += 1
                fut.set_result(None)


@dataclass
class _Job:
    id: str
    prompt: str
    width: int
    height: int
    seed: int
    service_ms: float
    fail_job: bool
    arrived: float = field(default_factory=time.perf_counter)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    status: str = "queued"
    queue_ms: float | None = None
    worked_ms: float | None = None
    png: bytes | None = field(default=None, repr=False)
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Refusal(Exception):
    """A request answered with an error status instead of an image."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by its inputs (deterministic failure draws)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def render_png(width: int, height: int, prompt: str, seed: int) -> bytes:
    """A small deterministic PNG: a flat colour derived from (prompt, seed)."""
    from PIL import Image

    rgb = hashlib.blake2b(f"{prompt}\0{seed}".encode(), digest_size=3).digest()
    buf = io.BytesIO()
    Image.new("RGB", (width, height), tuple(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _Vendor:
    """The vendor's state: settings, the work queue, the jobs and the counters."""

    def __init__(self, settings: VendorSettings) -> None:
        self.initial = settings
        self.settings = settings
        self.queue = _WorkQueue(settings.concurrency)
        self.jobs: collections.OrderedDict[str, _Job] = collections.OrderedDict()
        self.outstanding = 0  # admitted, not yet finished (in service or waiting)
        self.reset()

    def reset(self) -> None:
        self._apply(self.initial)
        self._reseed()
        self.stats: collections.Counter[str] = collections.Counter()
        self.billed_usd = 0.0

    def _reseed(self) -> None:
        self._rng = random.Random(self.settings.seed)
        self._arrivals = 0

    def _apply(self, settings: VendorSettings) -> None:
        self.settings = settings
        self.queue.resize(settings.concurrency)

    def configure(self, patch: dict[str, Any]) -> VendorSettings:
        new = VendorSettings.model_validate({**self.settings.model_dump(), **patch})
        reseed = new.seed != self.settings.seed
        self._apply(new)
        if reseed:
            self._reseed()
        log.warning("simulated vendor %s reconfigured: %s", new.name, sorted(patch))
        return new

    def check_key(self, authorization: str | None) -> None:
        want = self.settings.require_key_sha256
        key = (authorization or "").removeprefix("Bearer ").strip()
        if want is not None and hashlib.sha256(key.encode()).hexdigest() != want:
            self.reject(401, "invalid_api_key", "missing or wrong API key")

    def check_model(self, model: str) -> None:
        want = self.settings.vendor_model
        if want and model != want:
            self.reject(404, "model_not_found", f"unknown model {model!r}; serving {want!r}")

    def reject(self, status: int, code: str, message: str) -> NoReturn:
        self.stats["rejected_4xx"] += 1
        raise _Refusal(status, code, message)

    def admit(self, prompt: str, width: int, height: int, seed: int) -> _Job:
        """Decide one generation request's fate at arrival; raises _Refusal for an error reply."""
        s = self.settings
        self.stats["requests"] += 1
        n = self._arrivals  # failures are drawn per arrival index: the same ones fail every run
        self._arrivals += 1
        if not prompt.strip():
            self.reject(400, "invalid_request", "prompt must not be empty")
        if not (8 <= width <= s.max_side and 8 <= height <= s.max_side):
            self.reject(400, "invalid_size", f"width and height must lie in 8..{s.max_side}")
        if s.fail_next > 0:
            self.settings = s.model_copy(update={"fail_next": s.fail_next - 1})
            self._fail(s.fail_status, "injected failure (fail_next)")
        if _unit(s.seed, "fail", n) < s.failure_rate:
            self._fail(500, "simulated failure (failure_rate)")
        waiting = self.outstanding - self.queue.concurrency
        if s.max_queue is not None and waiting >= s.max_queue:
            self._fail(429, f"queue full ({waiting} waiting)")
        sigma = (math.log(s.latency.p95_ms) - math.log(s.latency.p50_ms)) / _Z95
        self.outstanding += 1
        return _Job(
            id=f"simjob-{uuid.uuid4().hex[:16]}",
            prompt=prompt,
            width=width,
            height=height,
            seed=seed,
            service_ms=math.exp(self._rng.gauss(math.log(s.latency.p50_ms), sigma)),
            fail_job=_unit(s.seed, "job", n) < s.job_failure_rate,
        )

    def _fail(self, status: int, why: str) -> NoReturn:
        if status == 429:
            self.stats["rejected_429"] += 1
            raise _Refusal(429, "rate_limited", why, retry_after=self.settings.retry_after_s)
        self.stats["failures"] += 1
        raise _Refusal(status, "simulated_failure", why)

    async def work(self, job: _Job) -> None:
        """Wait for a worker, hold it for the service time, then finish the job."""
        try:
            await self.queue.acquire()
            try:
                started = time.perf_counter()
                job.started_at = time.time()
                job.queue_ms = (started - job.arrived) * 1000
                job.status = "running"
                await asyncio.sleep(job.service_ms / 1000)
                job.worked_ms = (time.perf_counter() - started) * 1000
                job.finished_at = time.time()
            finally:
                self.queue.release()
        finally:
            self.outstanding -= 1
        if job.fail_job:
            self.stats["jobs_failed"] += 1
            job.status = "failed"
            job.error = {"code": "simulated_job_failure", "message": "failed", "retryable": True}
            return
        job.png = render_png(job.width, job.height, job.prompt, job.seed)
        job.status = "succeeded"
        self.stats["succeeded"] += 1
        self.billed_usd += self.settings.price_usd

    def remember(self, job: _Job) -> None:
        self.jobs[job.id] = job
        while len(self.jobs) > _MAX_JOBS_KEPT:
            old_id, old = next(iter(self.jobs.items()))
            if old.status in ("queued", "running"):
                break  # never forget live work
            del self.jobs[old_id]

    def find(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise _Refusal(404, "job_not_found", f"no job {job_id!r}")
        return job

    def snapshot(self) -> dict[str, Any]:
        counters = ("requests", "succeeded", "failures", "rejected_429", "rejected_4xx")
        counters += ("jobs_failed", "jobs_cancelled", "reference_images")
        return {
            "name": self.settings.name,
            "simulated": True,
            **{c: self.stats[c] for c in counters},
            "queue_depth": self.queue.depth,
            "in_service": self.queue.busy,
            "billed_usd": round(self.billed_usd, 6),
            "settings": self.settings.model_dump(mode="json"),
        }

    def headers(self, job: _Job) -> dict[str, str]:
        # Service-Target is the drawn service time, Service the time the worker was held.
        h = {"X-Vendor-Request-Id": job.id, "X-Vendor-Service-Target-Ms": f"{job.service_ms:.3f}"}
        if job.queue_ms is not None:
            h["X-Vendor-Queue-Ms"] = f"{job.queue_ms:.3f}"
        if job.worked_ms is not None:
            h["X-Vendor-Service-Ms"] = f"{job.worked_ms:.3f}"
        if job.status == "succeeded":
            h["X-Vendor-Price-Usd"] = f"{self.settings.price_usd:.6f}"
        return h


class _ImagesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI-shaped vendors ignore fields they lack
    model: str = ""
    prompt: str = Field(max_length=32_000)
    n: int = 1
    size: str = "1024x1024"
    response_format: str = "b64_json"
    seed: int = 0
    negative_prompt: str | None = None


class _JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = ""
    prompt: str = Field(max_length=32_000)
    width: int
    height: int
    seed: int = 0
    negative_prompt: str | None = None
    image_urls: list[str] | None = Field(
        default=None, description="Reference images: data URIs (base64) or http(s) URLs."
    )


_MAX_REFERENCES = 16  # OpenAI's edits endpoint takes up to 16 images
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


def _check_image_url(vendor: _Vendor, i: int, url: str) -> None:
    """A reference URL a queue-style vendor would fetch: http(s), or a base64 image data URI.

    The simulated vendor fetches nothing (it reaches no network), so an http(s) URL is taken
    on trust; a data URI must be a non-empty base64 image of an accepted type.
    """
    if url.startswith(("http://", "https://")):
        return
    head, sep, data = url.partition(",")
    ctype = head.removeprefix("data:").split(";")[0].lower()
    if not url.startswith("data:") or not sep or ";base64" not in head:
        vendor.reject(400, "invalid_request", f"image_urls[{i}]: not an http(s) or data: URL")
    if ctype not in _IMAGE_TYPES:
        vendor.reject(400, "invalid_request", f"image_urls[{i}]: type {ctype!r}; {_IMAGE_TYPES}")
    try:
        if not base64.b64decode(data, validate=True):
            raise ValueError("empty")
    except (ValueError, binascii.Error):
        vendor.reject(400, "invalid_request", f"image_urls[{i}]: not non-empty base64")


class _SimulatedHeader:
    """ASGI middleware: every response says it comes from a simulated vendor."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-simulated-vendor", b"true")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_marked)


def _validation_message(errors: list[Any]) -> str:
    """'field: what was wrong; ...', as a vendor's 400 would say it."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Any:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    body = {"error": {"code": code, "message": message, "simulated": True}}
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(settings: VendorSettings) -> FastAPI:
    """The FastAPI app of one simulated vendor (both protocols plus the `/_sim` control routes)."""
    vendor = _Vendor(settings)
    app = FastAPI(title=f"SIMULATED vendor {settings.name}", docs_url=None, redoc_url=None)
    app.add_middleware(_SimulatedHeader)
    app.state.vendor = vendor
    background: set[asyncio.Task[None]] = set()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> Any:
        vendor.stats["rejected_4xx"] += 1
        return _error(400, "invalid_request", _validation_message(list(exc.errors())))

    @app.exception_handler(_Refusal)
    async def _refused(_: Request, exc: _Refusal) -> Any:
        return _error(exc.status, exc.code, exc.message, exc.retry_after)

    async def sync_generate(body: _ImagesBody, authorization: str | None) -> Any:
        vendor.check_key(authorization)
        vendor.check_model(body.model)
        size = re.fullmatch(r"(\d{1,5})x(\d{1,5})", body.size)
        if body.n != 1 or body.response_format != "b64_json" or size is None:
            vendor.reject(400, "invalid_request", "needs n=1, response_format=b64_json, size=WxH")
        job = vendor.admit(body.prompt, int(size[1]), int(size[2]), body.seed)
        await vendor.work(job)
        if job.status != "succeeded" or job.png is None:
            raise _Refusal(500, "simulated_job_failure", f"job {job.id} failed")
        b64 = base64.b64encode(job.png).decode()
        out = {"created": int(time.time()), "data": [{"b64_json": b64}], "simulated": True}
        return JSONResponse(out, headers=vendor.headers(job))

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "service": "easel SIMULATED vendor (a local stand-in for a closed image API)",
            "simulated": True,
            "name": vendor.settings.name,
            "protocols": ["openai_images", "queue"],
        }

    @app.post("/v1/images/generations")
    async def generations(body: _ImagesBody, authorization: _Authorization = None) -> Any:
        return await sync_generate(body, authorization)

    @app.post("/v1/images/edits")
    async def edits(
        prompt: Annotated[str, Form()],
        image: Annotated[list[UploadFile] | None, File()] = None,
        images: Annotated[list[UploadFile] | None, File(alias="image[]")] = None,
        model: Annotated[str, Form()] = "",
        size: Annotated[str, Form()] = "1024x1024",
        n: Annotated[int, Form()] = 1,
        response_format: Annotated[str, Form()] = "b64_json",
        seed: Annotated[int, Form()] = 0,
        authorization: _Authorization = None,
    ) -> Any:
        parts = [*(image or []), *(images or [])]
        if not parts:
            vendor.reject(400, "invalid_request", "an edit needs 'image' or 'image[]' file parts")
        if len(parts) > _MAX_REFERENCES:
            vendor.reject(400, "invalid_request", f"at most {_MAX_REFERENCES} images")
        for i, part in enumerate(parts):
            ctype = (part.content_type or "").split(";")[0].strip().lower()
            if ctype not in _IMAGE_TYPES:
                vendor.reject(
                    400, "invalid_request", f"image {i}: type {ctype!r}; send {_IMAGE_TYPES}"
                )
            if not await part.read():
                vendor.reject(400, "invalid_request", f"image {i}: the reference image is empty")
        vendor.stats["reference_images"] += len(parts)
        body = _ImagesBody(
            model=model, prompt=prompt, size=size, n=n, response_format=response_format, seed=seed
        )
        return await sync_generate(body, authorization)

    @app.post("/v1/jobs", status_code=202)
    async def submit(body: _JobBody, authorization: _Authorization = None) -> Any:
        vendor.check_key(authorization)
        vendor.check_model(body.model)
        urls = body.image_urls or []
        if len(urls) > _MAX_REFERENCES:
            vendor.reject(400, "invalid_request", f"image_urls: at most {_MAX_REFERENCES}")
        for i, url in enumerate(urls):
            _check_image_url(vendor, i, url)
        vendor.stats["reference_images"] += len(urls)
        job = vendor.admit(body.prompt, body.width, body.height, body.seed)
        vendor.remember(job)
        job.task = asyncio.create_task(vendor.work(job))
        background.add(job.task)
        job.task.add_done_callback(background.discard)
        out = {"id": job.id, "status": job.status, "simulated": True}
        return JSONResponse(out, status_code=202, headers=vendor.headers(job))

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str) -> Any:
        job = vendor.find(job_id)
        out = {"id": job.id, "status": job.status, "queue_ms": job.queue_ms}
        out |= {"service_ms": job.worked_ms, "error": job.error, "simulated": True}
        out |= {"created_at": job.created_at, "started_at": job.started_at}
        out |= {"finished_at": job.finished_at}
        return JSONResponse(out, headers=vendor.headers(job))

    @app.get("/v1/jobs/{job_id}/result")
    async def job_result(job_id: str) -> Any:
        job = vendor.find(job_id)
        if job.status != "succeeded" or job.png is None:
            raise _Refusal(409, "not_ready", f"job {job_id} is {job.status}")
        return Response(job.png, media_type="image/png", headers=vendor.headers(job))

    @app.delete("/v1/jobs/{job_id}")
    async def job_cancel(job_id: str) -> Any:
        job = vendor.find(job_id)
        if job.status in ("queued", "running") and job.task is not None:
            job.task.cancel()
            job.status = "cancelled"
            vendor.stats["jobs_cancelled"] += 1
        return {"id": job.id, "status": job.status, "simulated": True}

    @app.get("/_sim/stats")
    async def sim_stats() -> dict[str, Any]:
        return vendor.snapshot()

    @app.post("/_sim/config")
    async def sim_config(request: Request) -> Any:
        try:
            patch = await request.json()
            if not isinstance(patch, dict):
                raise ValueError("the body must be a JSON object of settings")
            return vendor.configure(patch).model_dump(mode="json")
        except (ValueError, ValidationError) as exc:
            return _error(422, "invalid_settings", str(exc))

    @app.post("/_sim/reset")
    async def sim_reset() -> dict[str, Any]:
        vendor.reset()
        return vendor.snapshot()

    return app
