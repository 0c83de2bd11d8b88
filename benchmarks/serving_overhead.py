"""What serving through easel costs against a bare Ray Serve app of the same model, and what
batching gains.

Everything is measured in one run on one machine, as differences and ratios against a baseline
measured in the same run, in alternating rounds (A, B, A, B, ...) so that drift in the machine's
load hits both sides alike:

1. the bare app: one Ray Serve deployment that is its own HTTP ingress and runs the same
   pipeline (`load_pipeline` + `generate` + PNG encode) with the same `@serve.batch` settings
   (`max_batch_size`, `batch_wait_timeout_s`) and the same CPUs, on the same Ray;
2. easel: the same model through the whole federation (client -> gateway process -> provider
   app's ingress -> model deployment -> back), as `easel cluster up --local` runs it.

Figures: one request at a time, the p50 and p95 of each and easel's added p50; `--concurrency`
closed-loop clients, each side's images/s and easel's ratio to the bare app; and batching's gain:
easel with the model's `max_batch_size` against easel with `max_batch_size: 1` (images/s ratio).

Usage:
    python benchmarks/serving_overhead.py [--model sdxl-lightning] [--requests 60]
        [--rounds 3] [--concurrency 8] [--out benchmarks/results/serving_overhead.json]

Warm-up requests are excluded from every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import one_model_config, pct, summary

from config import EaselConfig

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

        def _run(self, seeds: list[int]) -> list[bytes]:
            from serve_apps.api.images import encode_png
            from serve_apps.provider.pipelines import generate

            m = self.m
            images = generate(
                self.pipe, [_PROMPT] * len(seeds), width=m.resolution.default,
                height=m.resolution.default, steps=m.steps.default, guidance=m.guidance.default,
                seeds=seeds,
            )  # fmt: skip
            return [encode_png(im) for im in images]

        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
        async def batch(self, seeds: list[int]) -> list[bytes]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self._run, seeds)

        async def __call__(self, request: Any) -> Response:  # a Starlette request
            body = await request.json()
            png = await self.batch(int(body["seed"]))
            return Response(png, media_type="image/png")

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
    seq: dict[str, list[float]] = {"bare": [], "easel": []}
    loops: dict[str, list[dict[str, Any]]] = {"bare": [], "easel": [], "easel_unbatched": []}
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
        urls = {"bare": bare_url, **{k: st.url for k, st in stacks.items()}}
        with (
            httpx.Client(base_url=urls["bare"], timeout=120) as bare,
            httpx.Client(base_url=urls["easel"], timeout=120) as easel,
        ):
            for i in range(args.warmup):
                _one(bare, args.model, i)
                _one(easel, args.model, i)
            for r in range(args.rounds):
                for i in range(per_round):
                    seq["bare"].append(_one(bare, args.model, i))
                    seq["easel"].append(_one(easel, args.model, i))
                print(f"round {r + 1}: bare p50 {pct(seq['bare'], 50):.1f} ms, easel p50 "
                      f"{pct(seq['easel'], 50):.1f} ms", flush=True)  # fmt: skip
        for r in range(args.rounds):
            for side, url in urls.items():
                asyncio.run(_closed_loop(url, args.model, args.concurrency, args.concurrency))
                loops[side].append(
                    asyncio.run(_closed_loop(url, args.model, n_loop, args.concurrency))
                )
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['images'] / v[-1]['wall_s']:.2f} img/s" for k, v in loops.items()),
                flush=True)  # fmt: skip
        for st in stacks.values():
            st.stop()
    finally:
        ray.shutdown()

    bare_s, easel_s = summary(seq["bare"]), summary(seq["easel"])
    pooled = {k: _pooled(v) for k, v in loops.items()}
    result = {
        "model": args.model,
        "resolution": m.resolution.default,
        "steps": m.steps.default,
        "max_batch_size": m.batching.max_batch_size,
        "batch_wait_timeout_s": m.batching.batch_wait_timeout_s,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "one_at_a_time": {
            "bare": bare_s,
            "easel": easel_s,
            "easel_added_p50_ms": round(easel_s["p50_ms"] - bare_s["p50_ms"], 2),
            "easel_added_p95_ms": round(easel_s["p95_ms"] - bare_s["p95_ms"], 2),
        },
        "closed_loop": pooled,
        "easel_over_bare_images_per_s": round(
            pooled["easel"]["images_per_s"] / pooled["bare"]["images_per_s"], 3
        ),
        "batching_throughput_gain": round(
            pooled["easel"]["images_per_s"] / pooled["easel_unbatched"]["images_per_s"], 3
        ),
        "command": "python benchmarks/serving_overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
