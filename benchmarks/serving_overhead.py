"""What serving through easel costs against a bare Ray Serve app of the same model, hop by hop,
and what batching gains.

Everything is measured in one run on one machine, as differences and ratios against a baseline
measured in the same run, in alternating rounds (A, B, C, ...; one request of each side in turn
one at a time) so that drift in the machine's load hits every side alike:

1. `bare`: one Ray Serve deployment that is its own HTTP ingress and runs the same pipeline
   (`load_pipeline` + `generate` + PNG encode) with the same `@serve.batch` settings
   (`max_batch_size`, `batch_wait_timeout_s`) and the same CPUs, on the same Ray;
2. `provider`: the provider's ingress route called directly (Serve's proxy -> the provider
   ingress deployment -> the model deployment);
3. `model_route`: the model's own route called directly (Serve's proxy -> the model deployment,
   `serve_apps/api/paths.py`): where the gateway sends;
4. `easel`: the whole federation (client -> gateway process -> the model's route -> back), as
   `easel cluster up --local` runs it.

Figures: one request at a time, the p50 and p95 of each and its added p50 over the bare app;
`--concurrency` closed-loop clients, each side's images/s, its mean batch size, and the ratios
pooled and by round (a round of each side back to back, so a round's ratio compares like with
like); the CPU milliseconds per image of every process on the path (psutil, before and after each
side's rounds: the client, the gateway, Serve's proxy and controller, each replica, and the whole
machine); and batching's gain: easel with the model's `max_batch_size` against easel with
`max_batch_size: 1` (images/s ratio).

Usage:
    python benchmarks/serving_overhead.py [--model sdxl-lightning] [--requests 60]
        [--rounds 3] [--concurrency 8] [--out benchmarks/results/serving_overhead.json]

Warm-up requests are excluded from every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from typing import Any

import httpx
from _common import CpuMeter, one_model_config, pct, summary, write_result

from config import EaselConfig
from serve_apps.api.paths import model_route_prefix

_PROMPT = "studio photo of a ceramic mug on a wooden table"


def bare_app(cfg: EaselConfig, model: str) -> Any:
    """A bare Ray Serve app: one deployment that is its own HTTP ingress, the same batching."""
    from ray import serve
    from starlette.responses import Response

    from serve_apps.provider.app import resolve_tiny_weights

    m = resolve_tiny_weights(cfg).model(model)

    @serve.deployment(
        max_ongoing_requests=m.max_ongoing_requests,
        max_queued_requests=m.max_queued_requests,
        ray_actor_options={"num_cpus": m.num_cpus, "num_gpus": m.num_gpus},
    )
    class Bare:
        def __init__(self, model_json: dict[str, Any]) -> None:
            from concurrent.futures import ThreadPoolExecutor

            from config import ModelConfig
            from serve_apps.provider.pipelines import load_pipeline

            self.m = ModelConfig.model_validate(model_json)
            self.pipe = load_pipeline(self.m)
            self.pool = ThreadPoolExecutor(max_workers=1)
            self.batch.set_max_batch_size(self.m.batching.max_batch_size)
            self.batch.set_batch_wait_timeout_s(self.m.batching.batch_wait_timeout_s)

        def _run(self, seeds: list[int]) -> list[tuple[bytes, int]]:
            from serve_apps.api.images import encode_png
            from serve_apps.provider.pipelines import generate

            m = self.m
            images = generate(
                self.pipe, [_PROMPT] * len(seeds), width=m.resolution.default,
                height=m.resolution.default, steps=m.steps.default, guidance=m.guidance.default,
                seeds=seeds,
            )  # fmt: skip
            return [(encode_png(im), len(seeds)) for im in images]

        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
        async def batch(self, seeds: list[int]) -> list[tuple[bytes, int]]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._run, seeds)

        async def __call__(self, request: Any) -> Response:  # a Starlette request
            body = await request.json()
            png, size = await self.batch(int(body["seed"]))
            return Response(png, media_type="image/png", headers={"X-Easel-Batch-Size": str(size)})

    return Bare.bind(m.model_dump(mode="json"))


def _one(c: httpx.Client, model: str, seed: int) -> float:
    t0 = time.perf_counter()
    r = c.post("/v1/generate", json={"model": model, "prompt": _PROMPT, "seed": seed})
    took = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return took


async def _closed_loop(url: str, model: str, n: int, concurrency: int) -> dict[str, Any]:
    sizes: list[int] = []
    ms: list[float] = []
    seeds = iter(range(n))

    async def worker(c: httpx.AsyncClient) -> None:
        for i in seeds:
            t0 = time.perf_counter()
            r = await c.post("/v1/generate", json={"model": model, "prompt": _PROMPT, "seed": i})
            r.raise_for_status()
            ms.append((time.perf_counter() - t0) * 1000)
            if "x-easel-batch-size" in r.headers:
                sizes.append(int(r.headers["x-easel-batch-size"]))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"images": n, "wall_s": wall, "sizes": sizes, "ms": ms}


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    images = sum(r["images"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    ms = [x for r in rounds for x in r["ms"]]
    sizes = [x for r in rounds for x in r["sizes"]]
    return {
        "images": images,
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3),
        "images_per_s_by_round": [round(r["images"] / r["wall_s"], 3) for r in rounds],
        "mean_batch_size": round(statistics.fmean(sizes), 2) if sizes else None,
        **summary(ms),
    }


def _hop_pids(stacks: dict[str, Any]) -> dict[str, int]:
    """The processes a request passes through (and the client's), labelled by role."""
    from _common import serve_pids

    pids = {"client": os.getpid(), **serve_pids()}
    for name, st in stacks.items():
        if st.gateway is not None:
            pids[f"{name}/gateway"] = st.gateway.pid
    return pids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sdxl-lightning")
    ap.add_argument("--requests", type=int, default=60, help="per side, over all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/serving_overhead.json")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from cluster.local import free_port
    from serve_apps.local.stack import LocalStack

    cfg = one_model_config(args.model)
    m = cfg.model(args.model)
    per_round = max(1, args.requests // args.rounds)
    n_loop = args.concurrency * max(2, per_round // 2)
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        resources={p.resource: 1000 for p in cfg.providers},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        serve.run(bare_app(cfg, args.model), name="bare", route_prefix="/bare")
        from ray.serve.context import _get_global_client

        bare_url = f"http://127.0.0.1:{_get_global_client().http_config.port}/bare"
        stacks = {
            "easel": LocalStack(cfg),
            # Both stacks share this Ray: the second one's provider apps get other names.
            "easel_unbatched": LocalStack(
                one_model_config(args.model, max_batch_size=1), app_prefix="unbatched-"
            ),
        }
        for st in stacks.values():
            st.start()
        provider = stacks["easel"].status()["providers"][0]["endpoint"]
        # Hop by hop: the bare app; the provider's ingress route called directly (Serve's
        # proxy, the provider ingress, the model deployment); the model's own route called
        # directly (Serve's proxy, the model deployment: where the gateway sends); easel, the
        # same through the gateway.
        urls = {
            "bare": bare_url,
            "provider": provider,
            "model_route": model_route_prefix(provider, args.model),
            "easel": stacks["easel"].url,
        }
        loop_urls = {**urls, "easel_unbatched": stacks["easel_unbatched"].url}
        seq: dict[str, list[float]] = {k: [] for k in urls}
        loops: dict[str, list[dict[str, Any]]] = {k: [] for k in loop_urls}
        meter = CpuMeter(_hop_pids(stacks))
        clients = {k: httpx.Client(base_url=u, timeout=120) for k, u in urls.items()}
        try:
            for i in range(args.warmup):
                for c in clients.values():
                    _one(c, args.model, i)
            for r in range(args.rounds):
                for i in range(per_round):
                    for k, c in clients.items():
                        seq[k].append(_one(c, args.model, i))
                line = ", ".join(f"{k} p50 {pct(v, 50):.1f} ms" for k, v in seq.items())
                print(f"round {r + 1}: {line}", flush=True)
        finally:
            for c in clients.values():
                c.close()
        for r in range(args.rounds):
            for side, url in loop_urls.items():
                asyncio.run(_closed_loop(url, args.model, args.concurrency, args.concurrency))
                before = meter.read()
                loops[side].append(
                    asyncio.run(_closed_loop(url, args.model, n_loop, args.concurrency))
                )
                meter.add(side, before, n_loop)
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['images'] / v[-1]['wall_s']:.2f} img/s" for k, v in loops.items()),
                flush=True)  # fmt: skip
        for st in stacks.values():
            st.stop()
    finally:
        ray.shutdown()

    seq_s = {k: summary(v) for k, v in seq.items()}
    pooled = {k: _pooled(v) for k, v in loops.items()}

    def ratio(a: str, b: str) -> dict[str, Any]:
        by_round = [
            round((x["images"] / x["wall_s"]) / (y["images"] / y["wall_s"]), 3)
            for x, y in zip(loops[a], loops[b], strict=True)
        ]
        return {
            "pooled": round(pooled[a]["images_per_s"] / pooled[b]["images_per_s"], 3),
            "by_round": by_round,
            "min": min(by_round),
            "max": max(by_round),
        }

    result = {
        "model": args.model,
        "resolution": m.resolution.default,
        "steps": m.steps.default,
        "max_batch_size": m.batching.max_batch_size,
        "batch_wait_timeout_s": m.batching.batch_wait_timeout_s,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "one_at_a_time": {
            **seq_s,
            **{
                f"{k}_added_p50_ms": round(seq_s[k]["p50_ms"] - seq_s["bare"]["p50_ms"], 2)
                for k in seq_s
                if k != "bare"
            },
            "easel_added_p95_ms": round(seq_s["easel"]["p95_ms"] - seq_s["bare"]["p95_ms"], 2),
        },
        "closed_loop": pooled,
        # CPU ms per image of each process in each side's closed-loop rounds (psutil): where
        # a request's cost goes on a CPU-bound machine. `machine` is every process's, others'
        # work included.
        "cpu_ms_per_image": meter.per_image_ms(),
        "easel_over_bare_images_per_s": ratio("easel", "bare")["pooled"],
        "ratios": {
            "easel_over_bare": ratio("easel", "bare"),
            "provider_over_bare": ratio("provider", "bare"),
            "model_route_over_bare": ratio("model_route", "bare"),
            "easel_over_model_route": ratio("easel", "model_route"),
        },
        "batching_throughput_gain": round(
            pooled["easel"]["images_per_s"] / pooled["easel_unbatched"]["images_per_s"], 3
        ),
        "command": "python benchmarks/serving_overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
