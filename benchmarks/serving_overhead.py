"""What serving through easel costs, and what batching gains, on one tiny model.

Three measurements in one run, on the same machine, so the figures are ratios against a baseline
measured minutes apart rather than against numbers from elsewhere:

1. direct: the model called in-process (`load_pipeline` + `generate` + PNG encode), one request
   at a time: the floor.
2. easel: the same model through the whole stack (HTTP proxy -> ingress -> router actor ->
   model replica -> back), one request at a time. Overhead = easel - direct, at p50 and p95.
3. batching: a closed loop of `--concurrency` clients through easel, with the model's
   `max_batch_size` as configured, then with `max_batch_size: 1`; gain = images/s ratio.

Usage:
    python benchmarks/serving_overhead.py [--model sdxl-turbo] [--requests 60]
        [--concurrency 8] [--out benchmarks/results/serving_overhead.json]

Warm-up requests are excluded from every figure (the cold start is reported on its own).
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

from easel.config import EaselConfig, load_config, parse_config

_PROMPT = "studio photo of a ceramic mug on a wooden table"


def _pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[max(0, -(-int(q * len(data)) // 100) - 1)]  # nearest rank


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(_pct(ms, 50), 2),
        "p95_ms": round(_pct(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def one_model_config(model: str, max_batch_size: int | None = None) -> EaselConfig:
    """The default config cut down to `model` on its first provider (one replica)."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == model)
    m["providers"] = m["providers"][:1]
    if max_batch_size is not None:
        m["batching"]["max_batch_size"] = max_batch_size
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    return parse_config(data, f"<default config, {model} only>")


def measure_direct(cfg: EaselConfig, model: str, n: int, warmup: int) -> dict[str, Any]:
    import torch

    from serve_apps.images import encode_png
    from serve_apps.pipelines import generate, load_pipeline

    m = cfg.model(model)
    # Ray gives a worker OMP_NUM_THREADS = its whole CPUs (at least 1): the replica's torch runs
    # with that many threads, so the in-process baseline does too, or it measures threading.
    torch.set_num_threads(max(1, int(m.num_cpus)))
    t0 = time.perf_counter()
    pipe = load_pipeline(m)
    load_s = time.perf_counter() - t0
    ms = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        (img,) = generate(
            pipe,
            m,
            [_PROMPT],
            width=m.resolution.default,
            height=m.resolution.default,
            steps=m.steps.default,
            guidance=m.guidance.default,
            seeds=[i],
        )
        encode_png(img)
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1000)
    del pipe
    return {"load_s": round(load_s, 2), "torch_threads": torch.get_num_threads(), **_summary(ms)}


def measure_sequential(url: str, model: str, n: int, warmup: int) -> dict[str, Any]:
    ms, infer = [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            r = c.post("/v1/generate", json={"model": model, "prompt": _PROMPT, "seed": i})
            took = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            if i >= warmup:
                ms.append(took)
                infer.append(float(r.headers["x-easel-inference-ms"]))
    out = _summary(ms)
    out["replica_inference_p50_ms"] = round(_pct(infer, 50), 2)
    return out


async def _closed_loop(url: str, model: str, n: int, concurrency: int) -> dict[str, Any]:
    sizes: list[int] = []
    ms: list[float] = []
    counter = iter(range(n))

    async def worker(c: httpx.AsyncClient) -> None:
        for i in counter:
            t0 = time.perf_counter()
            r = await c.post("/v1/generate", json={"model": model, "prompt": _PROMPT, "seed": i})
            r.raise_for_status()
            ms.append((time.perf_counter() - t0) * 1000)
            sizes.append(int(r.headers["x-easel-batch-size"]))

    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "images": n,
        "wall_s": round(wall, 3),
        "images_per_s": round(n / wall, 3),
        "mean_batch_size": round(statistics.fmean(sizes), 2),
        **_summary(ms),
    }


def measure_throughput(url: str, model: str, n: int, concurrency: int) -> dict[str, Any]:
    asyncio.run(_closed_loop(url, model, concurrency * 2, concurrency))  # warm-up
    return asyncio.run(_closed_loop(url, model, n, concurrency))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sdxl-turbo")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/serving_overhead.json")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from serve_apps.app import APP_NAME, build_app, run_app

    cfg = one_model_config(args.model)
    direct = measure_direct(cfg, args.model, args.requests, args.warmup)
    print(f"direct in-process: {direct}", flush=True)

    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        resources={p.resource: 1.0 for p in cfg.providers},
    )
    try:
        port = 18_000 + os.getpid() % 1000
        url = run_app(cfg, host="127.0.0.1", port=port)
        easel = measure_sequential(url, args.model, args.requests, args.warmup)
        print(f"through easel:     {easel}", flush=True)
        batched = measure_throughput(url, args.model, args.requests * 2, args.concurrency)
        print(f"batched (max_batch_size={cfg.model(args.model).batching.max_batch_size}): "
              f"{batched}", flush=True)  # fmt: skip
        # Same app name and route: Serve replaces the deployment in place.
        serve.run(
            build_app(one_model_config(args.model, max_batch_size=1)),
            name=APP_NAME,
            route_prefix="/",
        )
        unbatched = measure_throughput(url, args.model, args.requests * 2, args.concurrency)
        print(f"unbatched (max_batch_size=1): {unbatched}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    result = {
        "model": args.model,
        "resolution": cfg.model(args.model).resolution.default,
        "steps": cfg.model(args.model).steps.default,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "direct": direct,
        "easel": easel,
        "overhead_p50_ms": round(easel["p50_ms"] - direct["p50_ms"], 2),
        "overhead_p95_ms": round(easel["p95_ms"] - direct["p95_ms"], 2),
        "easel_over_direct_p50": round(easel["p50_ms"] / direct["p50_ms"], 3),
        "batched": batched,
        "unbatched": unbatched,
        "batching_throughput_gain": round(batched["images_per_s"] / unbatched["images_per_s"], 3),
        "command": "python benchmarks/serving_overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
