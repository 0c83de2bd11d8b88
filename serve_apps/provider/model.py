"""The model deployments: a diffusers pipeline with batching, alone or with its provider's others.

`generate(request: ResolvedRequest) -> ReplicaResult` answers an `ImageResult` or an
`ErrorResult` (a record, never an exception, for anything the request or the forward pass did
wrong); only infrastructure failures (a dead replica, a full queue) reach the provider's ingress
as exceptions. Heavy imports (torch, diffusers) happen inside the replica, so importing this
module in the driver or the ingress stays cheap.

- `DiffusersModel`: one model per replica process (every deployment outside local mode).
- `SharedDiffusersModels`: local mode's tiny CPU builds (`serve.share_tiny_replicas`): one
  replica process holds several models of one provider, each with its own pipeline, batcher,
  inference thread and usage-ledger row (`<model>--<provider>#<replica id>`), so the process
  imports torch and diffusers once instead of once per model (most of a tiny replica's memory).

Either deployment is also the HTTP ingress of its own Serve application (`__call__`,
`model_route.py`): the gateway's generate requests reach it through Serve's proxy alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
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
from serve_apps.provider.model_route import answer, route_model, unknown_route
from serve_apps.provider.results import ErrorResult, ImageResult, ReplicaResult
from serve_apps.provider.usage import HEARTBEAT_S, get_ledger, replica_gpus

__all__ = [
    "REPLICA_NICENESS",
    "DiffusersModel",
    "ModelServer",
    "SharedDiffusersModels",
    "serving_priority",
]

_log = logging.getLogger(__name__)
# Ray starts every worker at niceness 15, which puts a replica's forward pass behind every
# ordinary process on the machine (the load generator's clients, the gateway, anyone's shell):
# on 2 shared cores the same batch ran 1.3-1.5x slower in a replica than in a plain process
# (docs/performance.md, "Where the forward pass lost its speed"). A replica is the serving
# process, so it runs at an ordinary process's priority; Serve's proxy and the provider ingress
# stay where Ray (and `ingress.INGRESS_NICE`) put them.
REPLICA_NICENESS = 0


def serving_priority(value: int = REPLICA_NICENESS) -> int | None:
    """Set every thread of this process (Linux priorities are per thread) to niceness `value`;
    threads started later inherit it from their creator. Returns the niceness, or None when this
    process may not raise its priority (no CAP_SYS_NICE): then it stays as Ray started it."""
    try:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.setpriority(os.PRIO_PROCESS, int(tid), value)
    except (OSError, ValueError) as exc:
        _log.warning("replica stays at niceness %d: %s", os.getpriority(os.PRIO_PROCESS, 0), exc)
        return None
    return os.getpriority(os.PRIO_PROCESS, 0)


def _this_thread_serving_priority() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REPLICA_NICENESS)


class ModelServer:
    """One model's pipeline in a replica; concurrent requests of one shape share a forward pass.

    Requests queue in shape buckets (`batcher.ShapeBatcher`: same width, height, steps, guidance
    and reference count) and the next forward pass starts as soon as the last one ends, with
    everything queued for its shape up to the model's `max_batch_size` (an idle replica waits at
    most `batch_wait_timeout_s` for companions). Forward passes run one at a time on the
    inference thread with the replica's torch threads (`num_cpus`, at least 1); PNG encoding runs
    in its own small pool, so the next pass never waits for it. A request's `cold_start` is true
    when the model's first forward pass made it. The model registers with its provider's usage
    ledger as `replica` and reports every batch.
    """

    def __init__(self, model: dict[str, Any], provider: dict[str, Any], replica: str) -> None:
        self._started_s = time.time()
        t0 = time.perf_counter()
        self.cfg = ModelConfig.model_validate(model)
        self.provider = ProviderConfig.model_validate(provider)
        self.replica = replica
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
        # Each pool's threads take the serving priority themselves: whichever thread creates
        # them (Serve's event loop, a gRPC thread) may still be at Ray's niceness.
        self._infer = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="easel-infer",
            initializer=_this_thread_serving_priority,
        )
        self._encode = ThreadPoolExecutor(
            max_workers=2,
            thread_name_prefix="easel-encode",
            initializer=_this_thread_serving_priority,
        )
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

    def close(self) -> None:
        """Stop the heartbeat and tell the ledger the model's replica is gone."""
        self._stop.set()
        if self._ledger is not None:
            with contextlib.suppress(Exception):
                self._ledger.goodbye.remote(self.replica)


def _seed_rng() -> random.Random:
    # Seeds for requests that name none; one generator per replica, seeded from the OS.
    return random.Random(random.SystemRandom().getrandbits(64))


def _replica_id() -> tuple[str, str]:
    ctx = serve.get_replica_context()
    return ctx.deployment, ctx.replica_id.unique_id


@serve.deployment
class DiffusersModel:
    """A diffusers pipeline, one model per replica process (`ModelServer` does the work)."""

    def __init__(
        self, model: dict[str, Any], provider: dict[str, Any], serve_cfg: dict[str, Any]
    ) -> None:
        serving_priority()
        deployment, uid = _replica_id()
        self.server = ModelServer(model, provider, f"{deployment}#{uid}")
        self.serve_cfg = ServeConfig.model_validate(serve_cfg)
        self._rng = _seed_rng()

    async def __call__(self, request: Request) -> Response:
        """HTTP: `POST .../models/<model>/v1/generate` (the gateway's route to this model)."""
        s = self.server
        return await answer(request, s.cfg, self.serve_cfg, s.provider.name, s.generate, self._rng)

    async def generate(self, request: ResolvedRequest) -> ReplicaResult:
        """Generate one image (batched with concurrent requests of its shape); a record."""
        return await self.server.generate(request)

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: tell the ledger the replica is gone.
        server = getattr(self, "server", None)
        if server is not None:
            server.close()


@serve.deployment
class SharedDiffusersModels:
    """Several tiny models of one provider in one replica process (local mode only).

    Each model is a `ModelServer` of its own, registered in the usage ledger under the replica id
    it would have had alone (`<model>--<provider>#<replica id>`), so costs, cold starts and
    metrics stay per model; `generate` hands a request to its model's server. What they share is
    the process: one torch and diffusers import, and the replica's cores.
    """

    def __init__(
        self, models: list[dict[str, Any]], provider: dict[str, Any], serve_cfg: dict[str, Any]
    ) -> None:
        from serve_apps.provider.app import deployment_name

        serving_priority()
        _deployment, uid = _replica_id()
        prov = str(provider["name"])
        self.servers = {
            str(m["name"]): ModelServer(m, provider, f"{deployment_name(m['name'], prov)}#{uid}")
            for m in models
        }
        self.serve_cfg = ServeConfig.model_validate(serve_cfg)
        self._rng = _seed_rng()

    async def __call__(self, request: Request) -> Response:
        """HTTP: `POST .../models/<model>/v1/generate` for any of its models: the application is
        mounted at `<provider>/models`, so the model is the path's segment before `/v1/generate`."""
        model = route_model(request.url.path)
        s = self.servers.get(model or "")
        if s is None:
            return unknown_route(request.url.path, sorted(self.servers))
        return await answer(request, s.cfg, self.serve_cfg, s.provider.name, s.generate, self._rng)

    async def generate(self, request: ResolvedRequest) -> ReplicaResult:
        """Generate one image with the request's model; a record (404 for a model not here)."""
        server = self.servers.get(request.model)
        if server is None:
            return ErrorResult(
                404, "model_not_found", f"model {request.model!r} is not served here", "error"
            )
        return await server.generate(request)

    def __del__(self) -> None:
        for server in getattr(self, "servers", {}).values():
            server.close()
