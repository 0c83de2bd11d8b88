"""What serving through easel costs, and what batching gains, on one tiny model.

Everything is measured in one run on one machine, as ratios against a baseline measured in the
same run, in alternating rounds (A, B, A, B, ...) so that drift in the machine's load hits both
sides alike:

1. overhead: the model called in-process (`load_pipeline` + `generate` + PNG encode, torch
   limited to the threads Ray gives the replica) against the same model through the whole stack
   (HTTP proxy -> ingress -> router actor -> model replica -> back), one request at a time.
   Overhead = easel - direct at p50 and p95; the replica's own queue time (which includes the
   batch window a lone request waits out, `batch_wait_timeout_s`) is reported beside it.
2. batching: a closed loop of `--concurrency` clients through easel with the model's configured
   `max_batch_size`, against the same app redeployed with `max_batch_size: 1`; gain = images/s
   ratio (pooled over rounds).

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

from config import EaselConfig, ModelConfig, load_config, parse_config

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


class Direct:
    """The model in this process, as a replica would run it."""

    def __init__(self, m: ModelConfig) -> None:
        import torch

        from serve_apps.pipelines import load_pipeline

        # Ray gives a worker OMP_NUM_THREADS = its whole CPUs (at least 1), so the replica's
        # torch runs with that many threads; the baseline does too, or it measures threading.
        torch.set_num_threads(max(1, int(m.num_cpus)))
        self.threads = torch.get_num_threads()
        self.m = m
        t0 = time.perf_counter()
        self.pipe = load_pipeline(m)
        self.load_s = time.perf_counter() - t0

    def request_ms(self, seed: int) -> float:
        from serve_apps.images import encode_png
        from serve_apps.pipelines import generate

        m = self.m
        t0 = time.perf_counter()
        (img,) = generate(
            self.pipe,
            [_PROMPT],
            width=m.resolution.default,
            height=m.resolution.default,
            steps=m.steps.default,
            guidance=m.guidance.default,
            seeds=[seed],
        )
        encode_png(img)
        return (time.perf_counter() - t0) * 1000


def _through_easel(c: httpx.Client, model: str, seed: int) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    r = c.post("/v1/generate", json={"model": model, "prompt": _PROMPT, "seed": seed})
    took = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    return took, float(r.headers["x-easel-inference-ms"]), float(r.headers["x-easel-queue-ms"])


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
            sizes.append(int(r.headers["x-easel-batch-size"]))

    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"images": n, "wall_s": wall, "sizes": sizes, "ms": ms}


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    images = sum(r["images"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    ms = [x for r in rounds for x in r["ms"]]
    return {
        "images": images,
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 3),
        "images_per_s_by_round": [round(r["images"] / r["wall_s"], 3) for r in rounds],
        "mean_batch_size": round(statistics.fmean(x for r in rounds for x in r["sizes"]), 2),
        **_summary(ms),
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

    from serve_apps.app import APP_NAME, build_app, run_app

    cfg = one_model_config(args.model)
    m = cfg.model(args.model)
    direct = Direct(m)
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        resources={p.resource: 1.0 for p in cfg.providers},
    )
    per_round = max(1, args.requests // args.rounds)
    d_ms: list[float] = []
    e_ms: list[float] = []
    e_infer: list[float] = []
    e_queue: list[float] = []
    batched: list[dict[str, Any]] = []
    unbatched: list[dict[str, Any]] = []
    try:
        url = run_app(cfg, host="127.0.0.1", port=18_000 + os.getpid() % 1000)
        with httpx.Client(base_url=url, timeout=120) as c:
            for i in range(args.warmup):
                direct.request_ms(i)
                _through_easel(c, args.model, i)
            for r in range(args.rounds):
                for i in range(per_round):
                    d_ms.append(direct.request_ms(i))
                for i in range(per_round):
                    took, infer, queue = _through_easel(c, args.model, i)
                    e_ms.append(took)
                    e_infer.append(infer)
                    e_queue.append(queue)
                print(f"round {r + 1}: direct p50 {_pct(d_ms, 50):.1f} ms, easel p50 "
                      f"{_pct(e_ms, 50):.1f} ms", flush=True)  # fmt: skip
        # Batching: the same app with its max_batch_size, then with 1, in alternating rounds;
        # Serve replaces the deployment in place (same app name and route).
        n_loop = args.concurrency * max(2, per_round // 2)
        for r in range(args.rounds):
            for size, sink in ((None, batched), (1, unbatched)):
                serve.run(
                    build_app(one_model_config(args.model, max_batch_size=size)),
                    name=APP_NAME,
                    route_prefix="/",
                )
                asyncio.run(_closed_loop(url, args.model, args.concurrency, args.concurrency))
                sink.append(asyncio.run(_closed_loop(url, args.model, n_loop, args.concurrency)))
            print(f"round {r + 1}: batched {batched[-1]['images'] / batched[-1]['wall_s']:.2f} "
                  f"img/s, unbatched {unbatched[-1]['images'] / unbatched[-1]['wall_s']:.2f} "
                  "img/s", flush=True)  # fmt: skip
    finally:
        serve.shutdown()
        ray.shutdown()

    b, u = _pooled(batched), _pooled(unbatched)
    d, e = _summary(d_ms), _summary(e_ms)
    result = {
        "model": args.model,
        "resolution": m.resolution.default,
        "steps": m.steps.default,
        "max_batch_size": m.batching.max_batch_size,
        "batch_wait_timeout_s": m.batching.batch_wait_timeout_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "direct": {"load_s": round(direct.load_s, 2), "torch_threads": direct.threads, **d},
        "easel": {
            **e,
            "replica_inference_p50_ms": round(_pct(e_infer, 50), 2),
            "replica_queue_p50_ms": round(_pct(e_queue, 50), 2),
        },
        "overhead_p50_ms": round(e["p50_ms"] - d["p50_ms"], 2),
        "overhead_p95_ms": round(e["p95_ms"] - d["p95_ms"], 2),
        "easel_over_direct_p50": round(e["p50_ms"] / d["p50_ms"], 3),
        "batched": b,
        "unbatched": u,
        "batching_throughput_gain": round(b["images_per_s"] / u["images_per_s"], 3),
        "command": "python benchmarks/serving_overhead.py " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
