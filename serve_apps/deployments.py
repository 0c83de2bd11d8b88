"""Model deployments: one per (model, provider), diffusers pipelines or closed HTTP APIs.

Both answer `generate(request: dict) -> dict` with a *record*, never an exception, for anything
the request or the vendor did wrong: `{"ok": True, "png", "queue_ms", "inference_ms",
"batch_size", "cold_start", "replica", "provider"}` or `{"ok": False, "status", "code",
"message", "outcome", "retry_after"}` where `outcome` tells the router whether the provider is at
fault (`error`, `timeout`, `shed`) or the request was (`client_error`). Only infrastructure
failures (a dead replica, a full queue) reach the ingress as exceptions.

Heavy imports (torch, diffusers, httpx clients) happen inside the replicas, so importing this
module in the driver or the ingress stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from config import ModelConfig, ProviderConfig
from serve_apps.metrics import replica_metrics
from serve_apps.usage import HEARTBEAT_S, get_ledger, replica_gpus

__all__ = ["DiffusersModel", "HttpApiModel", "approximate_tokens"]

_log = logging.getLogger(__name__)
_WORDS = re.compile(r"\w+|[^\w\s]")


def _error(
    status: int, code: str, message: str, outcome: str, retry_after: float | None = None
) -> dict[str, Any]:
    return {
        "ok": False,
        "status": status,
        "code": code,
        "message": message,
        "outcome": outcome,
        "retry_after": retry_after,
    }


def approximate_tokens(prompt: str) -> int:
    """Tokens of a prompt for a closed model, whose tokenizer is the vendor's secret.

    Words and punctuation marks, counted separately: a lower bound on any BPE tokenizer's
    count, so easel never refuses a prompt the vendor would take (the vendor's own 400 passes
    through for one it refuses).
    """
    return len(_WORDS.findall(prompt))


def _vendor_error(exc: Any) -> dict[str, Any]:
    """A `VendorError` as a record: the vendor's fault fails over, the request's does not.

    Keeps the client's status and code (`upstream_timeout` 504, `upstream_unavailable` 503,
    `upstream_rejected` 400/502); a vendor that kept answering 429 is overload (`shed`).
    """
    status = int(exc.status)
    code = exc.code or "upstream_error"
    message = f"vendor: {exc.message}"
    if exc.vendor_status == 429:
        return _error(503, code, message, "shed", exc.retry_after or 1.0)
    if status == 504:
        return _error(504, code, message, "timeout")
    if status >= 500:  # unavailable, or it refused *us* (a bad key): another provider may work
        return _error(status, code, message, "error", exc.retry_after)
    # It refused this request's content: the caller's to fix, no other provider will differ.
    return _error(status, code, message, "client_error")


class _ReplicaBase:
    """What both backends share: identity, the usage ledger, heartbeat, metrics."""

    def _start(self, model: dict[str, Any], provider: dict[str, Any]) -> None:
        self._started_s = time.time()
        self._t0 = time.perf_counter()
        self.cfg = ModelConfig.model_validate(model)
        self.provider = ProviderConfig.model_validate(provider)
        ctx = serve.get_replica_context()
        self.replica = f"{ctx.deployment}#{ctx.replica_id.unique_id}"
        self._tags = {"model": self.cfg.name, "provider": self.provider.name}
        self._batches = 0
        self._stop = threading.Event()
        self._ledger = None

    def _ready(self) -> None:
        """Register with the usage ledger once loaded; start the heartbeat."""
        load_s = time.perf_counter() - self._t0
        gpus = replica_gpus(
            self.cfg.num_gpus,
            simulated_provider=self.provider.simulated,
            gpus_per_replica=self.provider.gpus_per_replica,
            api=self.cfg.backend == "http_api",
        )
        try:
            self._ledger = get_ledger()
            self._ledger.register.remote(
                self.replica, self.cfg.name, self.provider.name, gpus, self._started_s, load_s
            )
        except Exception:  # costing must never stop serving
            _log.exception("could not register with the usage ledger")
        threading.Thread(target=self._beat, name="easel-heartbeat", daemon=True).start()
        _log.info("%s ready in %.2fs", self.replica, load_s)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self._ledger is not None:
                try:
                    self._ledger.heartbeat.remote(self.replica)
                except Exception:
                    _log.debug("heartbeat failed", exc_info=True)

    def _record(self, busy_s: float, queue_ms: list[float], cold: bool) -> None:
        """Usage and metrics for one forward pass (or vendor call): one `queue_ms` per image."""
        images = len(queue_ms)
        if self._ledger is not None:
            try:
                self._ledger.report_batch.remote(self.replica, busy_s, images)
            except Exception:
                _log.debug("usage report failed", exc_info=True)
        m = replica_metrics()
        for q in queue_ms:
            m["queue"].observe(q, tags=self._tags)
        m["inference"].observe(busy_s * 1000, tags=self._tags)
        m["batch_size"].observe(images, tags=self._tags)
        if cold:
            m["cold_starts"].inc(images, tags=self._tags)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: tell the ledger the replica is gone.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        if getattr(self, "_ledger", None) is not None:
            with contextlib.suppress(Exception):
                self._ledger.goodbye.remote(self.replica)


@serve.deployment
class DiffusersModel(_ReplicaBase):
    """A diffusers pipeline, with concurrent requests batched by (resolution, steps, guidance).

    `@serve.batch` collects concurrent requests (up to the model's `max_batch_size`, waiting at
    most `batch_wait_timeout_s`); within a collected batch, only requests with the same width,
    height, steps and guidance share a forward pass, each with its own seed. Forward passes run
    one at a time on a worker thread, so the replica keeps accepting requests meanwhile.
    A request's `cold_start` is true when it was served by the replica's first forward pass.
    """

    def __init__(self, model: dict[str, Any], provider: dict[str, Any]) -> None:
        self._start(model, provider)
        from serve_apps.pipelines import load_pipeline, prompt_token_limit

        self.pipe = load_pipeline(self.cfg)
        self._token_limit = prompt_token_limit(self.pipe, self.cfg)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-infer")
        self.generate_batch.set_max_batch_size(self.cfg.batching.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)
        self._ready()

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Generate one image (batched with concurrent requests); returns a record."""
        return await self.generate_batch((request, time.perf_counter()))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def generate_batch(self, items: list[tuple[dict[str, Any], float]]) -> list[dict]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (req, _) in enumerate(items):
            groups[(req["width"], req["height"], req["steps"], req["guidance"])].append(i)
        results: list[dict[str, Any] | None] = [None] * len(items)
        loop = asyncio.get_running_loop()
        for idxs in groups.values():
            group_start = time.perf_counter()
            reqs = [items[i][0] for i in idxs]
            cold = self._batches == 0
            try:
                out, infer_s = await loop.run_in_executor(self._executor, self._infer, reqs)
            except Exception as exc:  # a failed forward pass is this provider's fault
                _log.exception("forward pass failed")
                for i in idxs:
                    results[i] = _error(
                        500, "inference_failed", f"{type(exc).__name__}: {exc}", "error"
                    )
                continue
            n_images = sum(1 for o in out if isinstance(o, bytes))
            queue_ms = []
            for i, o in zip(idxs, out, strict=True):
                if isinstance(o, bytes):
                    q = (group_start - items[i][1]) * 1000
                    queue_ms.append(q)
                    results[i] = {
                        "ok": True,
                        "png": o,
                        "queue_ms": q,
                        "inference_ms": infer_s * 1000,
                        "batch_size": n_images,
                        "cold_start": cold,
                        "replica": self.replica,
                        "provider": self.provider.name,
                    }
                else:
                    results[i] = o
            if n_images:
                self._batches += 1
                self._record(infer_s, queue_ms, cold)
        return results  # type: ignore[return-value]

    def _infer(self, reqs: list[dict[str, Any]]) -> tuple[list[bytes | dict], float]:
        """Check prompt lengths, run one forward pass for the rest, encode PNGs (worker thread).

        Token counting runs here, on the one inference thread, because fast tokenizers are not
        safe to call from two threads at once and the pipeline uses the same tokenizer.
        """
        from serve_apps.images import encode_png
        from serve_apps.pipelines import count_prompt_tokens, generate

        out: list[bytes | dict | None] = [None] * len(reqs)
        run = []
        limit = self._token_limit
        for i, r in enumerate(reqs):
            n = count_prompt_tokens(self.pipe, self.cfg, r["prompt"])
            if n > limit:
                out[i] = _error(
                    422,
                    "prompt_too_long",
                    f"prompt: {n} tokens for model {self.cfg.name!r}, above its limit of "
                    f"{limit} (prompts are never truncated)",
                    "client_error",
                )
            else:
                run.append(i)
        infer_s = 0.0
        if run:
            first = reqs[run[0]]
            t0 = time.perf_counter()
            images = generate(
                self.pipe,
                [reqs[i]["prompt"] for i in run],
                width=first["width"],
                height=first["height"],
                steps=first["steps"],
                guidance=first["guidance"],
                seeds=[reqs[i]["seed"] for i in run],
                negative_prompts=[reqs[i].get("negative_prompt") for i in run],
            )
            infer_s = time.perf_counter() - t0
            for i, img in zip(run, images, strict=True):
                out[i] = encode_png(img)
        return out, infer_s  # type: ignore[return-value]


@serve.deployment
class HttpApiModel(_ReplicaBase):
    """A closed model behind a vendor's HTTP API (a simulated vendor when the config says so).

    One request is one vendor call (the client retries retryable vendor errors itself);
    `inference_ms` is the vendor's time, `queue_ms` the rest (network, retries, queueing).
    """

    def __init__(self, model: dict[str, Any], provider: dict[str, Any]) -> None:
        self._start(model, provider)
        from serve_apps.http_api import make_client
        from serve_apps.simulated_vendor import vendor_base_url

        # A simulated model's vendor is one shared detached actor per model (started here on
        # first use); a real one is its configured base_url.
        self.client = make_client(self.cfg, vendor_base_url(self.cfg))
        self._ready()

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Call the vendor once (with the client's retries); returns a record."""
        from serve_apps.http_api import VendorError

        n_tokens = approximate_tokens(request["prompt"])
        if n_tokens > self.cfg.max_prompt_tokens:
            return _error(
                422,
                "prompt_too_long",
                f"prompt: about {n_tokens} tokens for model {self.cfg.name!r}, above its limit "
                f"of {self.cfg.max_prompt_tokens} (prompts are never truncated)",
                "client_error",
            )
        cold = self._batches == 0
        self._batches += 1
        t0 = time.perf_counter()
        try:
            img = await self.client.generate(
                prompt=request["prompt"],
                width=request["width"],
                height=request["height"],
                seed=request["seed"],
                request_id=request["request_id"],
                negative_prompt=request.get("negative_prompt"),
                reference_image=request.get("reference_png"),
            )
        except VendorError as exc:
            return _vendor_error(exc)
        except TimeoutError as exc:
            return _error(504, "upstream_timeout", f"vendor timed out: {exc}", "timeout")
        wall_ms = (time.perf_counter() - t0) * 1000
        vendor_ms = float(getattr(img, "vendor_ms", wall_ms) or 0.0)
        queue_ms = max(0.0, wall_ms - vendor_ms)
        self._record(vendor_ms / 1000, [queue_ms], cold)
        return {
            "ok": True,
            "png": img.png,
            "queue_ms": queue_ms,
            "inference_ms": vendor_ms,
            "batch_size": 1,
            "cold_start": cold,
            "replica": self.replica,
            "provider": self.provider.name,
            "vendor_attempts": getattr(img, "attempts", 1),
            "vendor_request_id": getattr(img, "vendor_request_id", None),
        }
