"""The model deployment: one per model a provider serves, a diffusers pipeline with batching.

`generate(request: ResolvedRequest) -> ReplicaResult` answers an `ImageResult` or an
`ErrorResult` (a record, never an exception, for anything the request or the forward pass did
wrong); only infrastructure failures (a dead replica, a full queue) reach the provider's ingress
as exceptions. Heavy imports (torch, diffusers) happen inside the replica, so importing this
module in the driver or the ingress stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from config import ModelConfig, ProviderConfig
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.batcher import group_by_shape, run_group
from serve_apps.provider.metrics import replica_metrics
from serve_apps.provider.results import ErrorResult, ImageResult, ReplicaResult
from serve_apps.provider.usage import HEARTBEAT_S, get_ledger, replica_gpus

__all__ = ["DiffusersModel"]

_log = logging.getLogger(__name__)


@serve.deployment
class DiffusersModel:
    """A diffusers pipeline, with concurrent requests batched by (resolution, steps, guidance).

    `@serve.batch` collects concurrent requests (up to the model's `max_batch_size`, waiting at
    most `batch_wait_timeout_s`); within a collected batch, only requests with the same width,
    height, steps and guidance share a forward pass (`batcher.group_by_shape`), each with its own
    seed. Forward passes run one at a time on a worker thread, so the replica keeps accepting
    requests meanwhile. A request's `cold_start` is true when the replica's first forward pass
    made it. The replica registers with its provider's usage ledger and reports every batch.
    """

    def __init__(self, model: dict[str, Any], provider: dict[str, Any]) -> None:
        self._started_s = time.time()
        t0 = time.perf_counter()
        self.cfg = ModelConfig.model_validate(model)
        self.provider = ProviderConfig.model_validate(provider)
        ctx = serve.get_replica_context()
        self.replica = f"{ctx.deployment}#{ctx.replica_id.unique_id}"
        self._tags = {"model": self.cfg.name, "provider": self.provider.name}
        self._batches = 0
        self._stop = threading.Event()
        self._ledger: Any = None
        from serve_apps.provider.pipelines import load_pipeline, prompt_token_limit

        self.pipe = load_pipeline(self.cfg)
        self._token_limit = prompt_token_limit(self.pipe, self.cfg)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-infer")
        self.generate_batch.set_max_batch_size(self.cfg.batching.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)
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

    async def generate(self, request: ResolvedRequest) -> ReplicaResult:
        """Generate one image (batched with concurrent requests); returns a record."""
        return await self.generate_batch((request, time.perf_counter()))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def generate_batch(
        self, items: list[tuple[ResolvedRequest, float]]
    ) -> list[ReplicaResult]:
        requests = [req for req, _ in items]
        results: list[ReplicaResult | None] = [None] * len(items)
        loop = asyncio.get_running_loop()
        for idxs in group_by_shape(requests):
            group_start = time.perf_counter()
            cold = self._batches == 0
            group = [requests[i] for i in idxs]
            try:
                out, infer_s = await loop.run_in_executor(
                    self._executor, run_group, self.pipe, self.cfg, self._token_limit, group
                )
            except Exception as exc:  # a failed forward pass is this provider's fault
                _log.exception("forward pass failed")
                for i in idxs:
                    results[i] = ErrorResult(
                        500, "inference_failed", f"{type(exc).__name__}: {exc}", "error"
                    )
                continue
            n_images = sum(1 for o in out if isinstance(o, bytes))
            queue_ms = []
            for i, o in zip(idxs, out, strict=True):
                if isinstance(o, bytes):
                    q = (group_start - items[i][1]) * 1000
                    queue_ms.append(q)
                    results[i] = ImageResult(o, q, infer_s * 1000, n_images, cold, self.replica)
                else:
                    results[i] = o
            if n_images:
                self._batches += 1
                self._record(infer_s, queue_ms, cold)
        return results  # type: ignore[return-value]

    def _record(self, busy_s: float, queue_ms: list[float], cold: bool) -> None:
        """Usage and metrics for one forward pass: one `queue_ms` per image."""
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
