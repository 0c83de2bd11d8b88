"""Does batching fill? A served replica against the same pipeline called in-process, one run.

Issue 14's check, on one machine, all sides in one run and in alternating rounds (so drift in
the machine's load hits every side alike):

1. ``offline``: the offline ceiling. The model's pipeline loaded in this process and called in
   a loop at ``--batch`` images per call (`pipelines.generate`, PNG encoding included, as a
   replica must do it), with ``--threads`` torch threads: what one replica could do at best.
   ``offline_batch1``: the same at one image per call; ``offline_busy_neighbour``: the same
   loop while another process keeps the other core busy (how much sharing the machine alone
   slows a forward pass).
2. ``provider``: ``--concurrency`` closed-loop clients straight to the provider app's endpoint
   (Serve proxy -> provider ingress -> model deployment), the model's batching settings with
   ``max_batch_size = --batch``.
3. ``gateway``: the same clients through the gateway process in front of it.
4. ``unbatched``: the provider app of a second stack with ``max_batch_size: 1``.

Figures: images/s of each side and the ratios ``provider / offline`` (target >= 0.9),
``gateway / offline`` and ``provider / unbatched`` (target >= 1.8); the mean batch size and the
replica's forward-pass time per batch (from the ``X-Easel-*`` headers) beside the in-process
time of the same batch, which says where a replica loses its speed.

Usage:
    python benchmarks/batching.py [--model sdxl-lightning] [--steps 8] [--size 64] [--batch 4]
        [--concurrency 16] [--images 160] [--rounds 3] [--out benchmarks/results/batching.json]

Warm-up requests and calls are excluded from every figure. Run it under the machine's heavy
lock: ``flock /tmp/easel-heavy.lock timeout 900 python benchmarks/batching.py``.
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

from _common import write_result

from config import EaselConfig, load_config, parse_config

_PROMPT = "studio photo of a ceramic mug on a wooden table"


def bench_config(model: str, max_batch_size: int, steps: int) -> EaselConfig:
    """The default config cut down to `model` on its first provider, one replica."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == model)
    m["providers"] = m["providers"][:1]
    m["batching"]["max_batch_size"] = max_batch_size
    m["steps"]["max"] = max(m["steps"]["max"], steps)
    m["max_ongoing_requests"] = max(m["max_ongoing_requests"], 2 * max_batch_size)
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    anchors = data.get("evaluation", {}).get("anchors") or {}
    if anchors.get("human_anchor_model") not in (None, model):
        anchors["human_anchor_model"] = model  # the anchor must be a model of the config
    return parse_config(data, f"<default config, {model} only, max_batch_size {max_batch_size}>")


def _pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[max(0, -(-int(q * len(data)) // 100) - 1)]  # nearest rank


class Offline:
    """The model's pipeline in this process: the ceiling a replica is measured against."""

    def __init__(self, cfg: EaselConfig, model: str, threads: int) -> None:
        import torch

        from serve_apps.provider.app import resolve_tiny_weights
        from serve_apps.provider.pipelines import load_pipeline

        torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.model = resolve_tiny_weights(cfg).model(model)
        self.pipe = load_pipeline(self.model)

    def run(self, images: int, batch: int, size: int, steps: int) -> dict[str, Any]:
        from serve_apps.api.images import encode_png
        from serve_apps.provider.pipelines import generate

        calls: list[float] = []
        done = 0
        t0 = time.perf_counter()
        while done < images:
            n = min(batch, images - done)
            c0 = time.perf_counter()
            out = generate(
                self.pipe, [_PROMPT] * n, width=size, height=size, steps=steps,
                guidance=self.model.guidance.default, seeds=list(range(done, done + n)),
            )  # fmt: skip
            calls.append((time.perf_counter() - c0) * 1000)
            for im in out:
                encode_png(im)
            done += n
        return {"images": images, "wall_s": time.perf_counter() - t0, "call_ms": calls}


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def offline_beside_a_busy_core(offline: Offline, images: int, batch: int, size: int,
                               steps: int) -> dict[str, Any]:  # fmt: skip
    """The offline loop while another process keeps the other core busy with plain Python:
    how much the forward pass itself slows when it shares the machine (as in a replica)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    hog = ctx.Process(target=_spin, args=(stop,), daemon=True)
    hog.start()
    try:
        return offline.run(images, batch, size, steps)
    finally:
        stop.set()
        hog.join(10)


async def closed_loop(
    url: str, model: str, images: int, concurrency: int, size: int, steps: int
) -> dict[str, Any]:
    """`concurrency` clients, each sending its next request when its last one is answered."""
    import aiohttp

    sizes: list[int] = []
    infer: list[float] = []
    queue: list[float] = []
    ms: list[float] = []
    errors: list[str] = []
    seeds = iter(range(images))

    async def worker(s: aiohttp.ClientSession) -> None:
        for seed in seeds:
            body = {"model": model, "prompt": _PROMPT, "seed": seed, "width": size,
                    "height": size, "steps": steps}  # fmt: skip
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/generate", json=body) as r:
                await r.read()
                if r.status != 200:
                    errors.append(f"{r.status}")
                    continue
                ms.append((time.perf_counter() - t0) * 1000)
                sizes.append(int(r.headers.get("x-easel-batch-size", 0)))
                infer.append(float(r.headers.get("x-easel-inference-ms", 0)))
                queue.append(float(r.headers.get("x-easel-queue-ms", 0)))

    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"images": len(ms), "wall_s": wall, "sizes": sizes, "infer_ms": infer,
            "queue_ms": queue, "ms": ms, "errors": errors}  # fmt: skip


def _pooled(rounds: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    images = sum(r["images"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    out: dict[str, Any] = {
        "images": images,
        "wall_s": round(wall, 3),
        "images_per_s": round(images / wall, 2),
        "images_per_s_by_round": [round(r["images"] / r["wall_s"], 2) for r in rounds],
    }
    if "call_ms" in rounds[0]:
        calls = [x for r in rounds for x in r["call_ms"]]
        out["call_p50_ms"] = round(_pct(calls, 50), 1)
        return out
    sizes = [x for r in rounds for x in r["sizes"]]
    ms = [x for r in rounds for x in r["ms"]]
    infer = [x for r in rounds for x in r["infer_ms"]]
    queue = [x for r in rounds for x in r["queue_ms"]]
    full = [i for s, i in zip(sizes, infer, strict=True) if s == batch]
    out.update(
        {
            "errors": sum(len(r["errors"]) for r in rounds),
            "mean_batch_size": round(statistics.fmean(sizes), 2) if sizes else None,
            "share_in_full_batches": round(sum(s == batch for s in sizes) / len(sizes), 3)
            if sizes
            else None,
            "full_batch_inference_p50_ms": round(_pct(full, 50), 1) if full else None,
            "replica_queue_p50_ms": round(_pct(queue, 50), 1) if queue else None,
            "latency_p50_ms": round(_pct(ms, 50), 1) if ms else None,
            "latency_p95_ms": round(_pct(ms, 95), 1) if ms else None,
        }
    )
    return out


def _replica_pid(app: str, deployment: str) -> int | None:
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    for a in ray._private.state.actors().values():  # the GCS's table, no dashboard needed
        if a.get("State") == "ALIVE" and (a.get("Name") or "").startswith(prefix):
            return int(a["Pid"])
    return None


def _cpu_seconds() -> dict[int, tuple[str, float]]:
    """{pid: (what it is, user+system CPU seconds)} of every process on the machine."""
    import psutil

    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])[:80] or p.name()
            out[p.pid] = (cmd, sum(p.cpu_times()[:2]))
        except psutil.Error:
            continue
    return out


def _cpu_table(before: dict[int, tuple[str, float]], wall_s: float) -> list[dict[str, Any]]:
    """Each process's share of one core during the profiled round, busiest first."""
    after = _cpu_seconds()
    rows = []
    for pid, (cmd, cpu) in after.items():
        used = cpu - before.get(pid, (cmd, 0.0))[1]
        if used / wall_s >= 0.01:
            label = "this driver (clients)" if pid == os.getpid() else cmd
            rows.append({"pid": pid, "process": label, "cores": round(used / wall_s, 3)})
    return sorted(rows, key=lambda r: -r["cores"])


def _spy_summary(raw: Path, seconds: float, rate: int) -> dict[str, Any]:
    """py-spy's raw (collapsed) GIL-holding stacks: samples per thread and top own frames."""
    threads: dict[str, int] = {}
    frames: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        parts = stack.split(";")
        thread = next((x for x in parts if x.startswith("thread ")), "thread ?")
        threads[thread] = threads.get(thread, 0) + int(n)
        frames[parts[-1]] = frames.get(parts[-1], 0) + int(n)
    total = seconds * rate

    def share(d: dict[str, int], k: int) -> list[list[Any]]:
        top = sorted(d.items(), key=lambda kv: -kv[1])[:k]
        return [[name[:110], round(v / total, 3)] for name, v in top]

    return {"gil_share_by_thread": share(threads, 8), "gil_share_by_frame": share(frames, 15)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sdxl-lightning")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="max_batch_size, and the offline batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the offline loop")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--images", type=int, default=160, help="per side and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--no-gateway", action="store_true", help="leave out the gateway side")
    ap.add_argument("--no-unbatched", action="store_true", help="leave out max_batch_size 1")
    ap.add_argument("--profile", type=Path, default=None,
                    help="folder: py-spy (GIL holders) of the replica and every process's CPU "
                    "during the first provider round")  # fmt: skip
    ap.add_argument("--out", default="benchmarks/results/batching.json")
    args = ap.parse_args(argv)

    import ray

    from serve_apps.local.stack import LocalStack

    cfg = bench_config(args.model, args.batch, args.steps)
    offline = Offline(cfg, args.model, args.threads)
    stacks = {"provider": LocalStack(cfg)}
    if not args.no_unbatched:
        stacks["unbatched"] = LocalStack(
            bench_config(args.model, 1, args.steps), app_prefix="unbatched-"
        )
    started = time.perf_counter()
    for st in stacks.values():
        st.start()
    print(f"stacks up in {time.perf_counter() - started:.1f}s", flush=True)
    prov = cfg.model(args.model).providers[0]
    urls = {"provider": stacks["provider"].providers.endpoints[prov]}
    if not args.no_gateway:
        urls["gateway"] = stacks["provider"].url
    if "unbatched" in stacks:
        urls["unbatched"] = stacks["unbatched"].providers.endpoints[prov]
    profile: dict[str, Any] | None = None
    sides: dict[str, list[dict[str, Any]]] = {
        "offline": [],
        "offline_batch1": [],
        "offline_busy_neighbour": [],
    }
    sides.update({k: [] for k in urls})
    loop_args = (args.model, args.images, args.concurrency, args.size, args.steps)
    try:
        offline.run(args.batch * 2, args.batch, args.size, args.steps)
        for url in urls.values():
            asyncio.run(closed_loop(url, args.model, args.warmup, args.concurrency,
                                    args.size, args.steps))  # fmt: skip
        for r in range(args.rounds):
            sides["offline"].append(offline.run(args.images, args.batch, args.size, args.steps))
            sides["offline_batch1"].append(
                offline.run(max(8, args.images // 4), 1, args.size, args.steps)
            )
            busy = offline_beside_a_busy_core(
                offline, args.images // 2, args.batch, args.size, args.steps
            )
            sides["offline_busy_neighbour"].append(busy)
            for side, url in urls.items():
                spy = None
                if args.profile and r == 0 and side == "provider":
                    spy, spy_s, cpu_before = _start_profile(args.profile, prov, args.model)
                sides[side].append(asyncio.run(closed_loop(url, *loop_args)))
                if spy is not None:
                    profile = _end_profile(args.profile, spy, spy_s, cpu_before,
                                           sides[side][-1]["wall_s"])  # fmt: skip
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['images'] / v[-1]['wall_s']:.1f} img/s" for k, v in sides.items()),
                flush=True)  # fmt: skip
    finally:
        for st in reversed(list(stacks.values())):
            st.stop()
        ray.shutdown()

    pooled = {k: _pooled(v, args.batch) for k, v in sides.items()}
    ceiling = pooled["offline"]["images_per_s"]

    def ratio(a: str, b: str) -> float | None:
        if a not in pooled or b not in pooled:
            return None
        return round(pooled[a]["images_per_s"] / pooled[b]["images_per_s"], 3)

    result = {
        "model": args.model,
        "size": args.size,
        "steps": args.steps,
        "max_batch_size": args.batch,
        "batch_wait_timeout_s": cfg.model(args.model).batching.batch_wait_timeout_s,
        "concurrency": args.concurrency,
        "offline_torch_threads": offline.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "sides": pooled,
        "offline_ceiling_images_per_s": ceiling,
        "provider_over_offline": ratio("provider", "offline"),
        "gateway_over_offline": ratio("gateway", "offline"),
        "provider_over_unbatched": ratio("provider", "unbatched"),
        "gateway_over_unbatched": ratio("gateway", "unbatched"),
        "offline_batch_over_batch1": ratio("offline", "offline_batch1"),
        "offline_busy_neighbour_over_offline": ratio("offline_busy_neighbour", "offline"),
        "targets": {"provider_over_offline": 0.9, "provider_over_unbatched": 1.8},
        "profile": profile,
        "command": "python benchmarks/batching.py " + " ".join(argv or sys.argv[1:]),
    }
    write_result(args.out, result)
    return 0


_SPY_RATE = 100


def _start_profile(folder: Path, provider: str, model: str) -> tuple[Any, float, Any]:
    import shutil
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    pid = _replica_pid(f"provider-{provider}", f"{model}--{provider}")
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    seconds = 5.0  # within one round of the provider side
    spy = None
    if pid is not None and Path(spy_bin).exists():
        spy = subprocess.Popen(
            [spy_bin, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(_SPY_RATE),
             "--gil", "--threads", "--nonblocking", "-f", "raw", "-o",
             str(folder / "replica_gil.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return spy, seconds, (_cpu_seconds(), time.perf_counter())


def _end_profile(folder: Path, spy: Any, seconds: float, cpu: Any, wall_s: float) -> dict:
    before, t0 = cpu
    table = _cpu_table(before, time.perf_counter() - t0)
    out: dict[str, Any] = {"cpu_cores_by_process": table[:12]}
    if spy is not None:
        spy.wait(timeout=60)
        raw = folder / "replica_gil.txt"
        if raw.exists():
            out["replica_py_spy"] = _spy_summary(raw, seconds, _SPY_RATE)
    (folder / "profile.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main())
