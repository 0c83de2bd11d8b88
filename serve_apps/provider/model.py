"""The model deployment: one per model a provider serves, a diffusers pipeline with batching.

`generate(request: ResolvedRequest) -> ReplicaResult` answers an `ImageResult` or an
`ErrorResult` (a record, never an exception, for anything the request or the forward pass did
wrong); only infrastructure failures (a dead replica, a full queue) reach the provider's ingress
as exceptions. The deployment is also the HTTP ingress of its own Serve application (`__call__`,
`model_route.py`): the gateway's requests reach it through Serve's proxy alone. Heavy imports
(torch, diffusers) happen inside the replica, so importing this module in the driver or the
ingress stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from config import ModelConfig, ProviderConfig, ServeConfig
from serve_apps.api.images import encode_png
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.batcher import BatchStats, ShapeBatcher, run_group
from serve_apps.provider.metrics import record_batch, replica_metrics
from serve_apps.provider.model_route import answer
from serve_apps.provider.results import ErrorResult, ImageResult, ReplicaResult
from serve_apps.provider.usage import HEARTBEAT_S, get_ledger, replica_gpus

__all__ = ["DiffusersModel"]

_log = logging.getLogger(__name__)


@serve.deployment
class DiffusersModel:
    """A diffusers pipeline; concurrent requests of one shape share a forward pass.

    Requests queue in shape buckets (`batcher.ShapeBatcher`: same width, height, steps, guidance
    and reference count) and the next forward pass starts as soon as the last one ends, with
    everything queued for its shape up to the model's `max_batch_size` (an idle replica waits at
    most `batch_wait_timeout_s` for companions). Forward passes run one at a time on the
    inference thread with the replica's torch threads (`num_cpus`, at least 1); PNG encoding runs
    in its own small pool, so the next pass never waits for it. A request's `cold_start` is true
    when the replica's first forward pass made it. The replica registers with its provider's usage
    ledger and reports every batch.
    """

    def __init__(
        self, model: dict[str, Any], provider: dict[str, Any], serve_cfg: dict[str, Any]
    ) -> None:
        self._started_s = time.time()
        t0 = time.perf_counter()
        self.cfg = ModelConfig.model_validate(model)
        self.provider = ProviderConfig.model_validate(provider)
        self.serve_cfg = ServeConfig.model_validate(serve_cfg)
        self._rng = random.Random(random.SystemRandom().getrandbits(64))
        ctx = serve.get_replica_context()
        self.replica = f"{ctx.deployment}#{ctx.replica_id.unique_id}"
        self._tags = {"model": self.cfg.name, "provider": self.provider.name}
        self._batches = 0
        self._stop = threading.Event()
        self._ledger: Any = None
        import torch

        from serve_apps.provider.pipelines import load_pipeline, prompt_token_limit

        # The replica's CPUs are its torch threads: more would fight the proxy, the ingress and
        # the other replicas for the same cores (Ray sets OMP_NUM_THREADS, torch may not follow).
        torch.set_num_threads(max(1, int(self.cfg.num_cpus)))
        self.pipe = load_pipeline(self.cfg)
        self._token_limit = prompt_token_limit(self.pipe, self.cfg)
        self._infer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-infer")
        self._encode = ThreadPoolExecutor(max_workers=2, thread_name_prefix="easel-encode")
        self._batcher: ShapeBatcher[Any] = ShapeBatcher(
            self._forward,
            max_batch_size=self.cfg.batching.max_batch_size,
            wait_s=self.cfg.batching.batch_wait_timeout_s,
            on_batch=self._on_batch,
        )
        self._register(time.perf_counter() - t0)

    def _register(self, load_s: float) -> None:
        """Register with the provider's usage ledger once loaded; start the heartbeat."""
        gpus = replica_gpus(
            self.cfg.num_gpus,
            simulated_provider=self.provider.simulated,
            gpus_per_replica=self.provider.gpus_per_replica,
        )
        try:
            self._ledger = get_ledger(self.provider.name)
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

    async def __call__(self, request: Request) -> Response:
        """HTTP: `POST .../models/<model>/v1/generate` (the gateway's route to this model)."""
        return await answer(
            request, self.cfg, self.serve_cfg, self.provider.name, self.generate, self._rng
        )

    async def generate(self, request: ResolvedRequest) -> ReplicaResult:
        """Generate one image (batched with concurrent requests of its shape); a record."""
        done = await self._batcher.submit(request)
        out, infer_ms, images, cold = done.result
        if isinstance(out, ErrorResult):
            return out
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(self._encode, encode_png, out)
        return ImageResult(png, done.queue_ms, infer_ms, images, cold, self.replica)

    async def _forward(self, requests: list[ResolvedRequest]) -> list[tuple[Any, float, int, bool]]:
        """One forward pass on the inference thread; per request (image or ErrorResult, the
        pass's ms, images it made, cold)."""
        cold = self._batches == 0
        loop = asyncio.get_running_loop()
        try:
            out, infer_s = await loop.run_in_executor(
                self._infer, run_group, self.pipe, self.cfg, self._token_limit, requests
            )
        except Exception as exc:  # a failed forward pass is this provider's fault
            _log.exception("forward pass failed")
            err = ErrorResult(500, "inference_failed", f"{type(exc).__name__}: {exc}", "error")
            return [(err, 0.0, 0, cold)] * len(requests)
        images = sum(1 for o in out if not isinstance(o, ErrorResult))
        if images:
            self._batches += 1
            self._usage(infer_s, images, cold)
        return [(o, infer_s * 1000, images, cold) for o in out]

    def _usage(self, busy_s: float, images: int, cold: bool) -> None:
        """The usage ledger and cold starts for one forward pass."""
        if self._ledger is not None:
            try:
                self._ledger.report_batch.remote(self.replica, busy_s, images)
            except Exception:
                _log.debug("usage report failed", exc_info=True)
        if cold:
            replica_metrics()["cold_starts"].inc(images, tags=self._tags)

    def _on_batch(self, stats: BatchStats) -> None:
        record_batch(stats, self.cfg.batching.max_batch_size, self._tags)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: tell the ledger the replica is gone.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        if getattr(self, "_ledger", None) is not None:
            with contextlib.suppress(Exception):
                self._ledger.goodbye.remote(self.replica)
