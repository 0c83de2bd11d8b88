"""Is a forward pass slower in a Ray worker than in a plain process, and why? One run.

Issue 14's replica ran the same batch of 4 1.3-1.5x slower than the offline loop. This takes
the HTTP path away: the offline loop of `benchmarks/batching.py` (tiny SDXL-Lightning, 64 px,
8 steps, batch 4, one torch thread) runs, in alternating rounds,

- ``driver``: in this process (niceness 0, as the offline ceiling runs);
- ``worker``: in a Ray actor with the replica's ``num_cpus`` (as Ray starts it: its niceness,
  environment, threads), the forward pass on a worker thread as the replica runs it;
- ``worker_nice0``: the same actor after setting its niceness back to 0;

each while a ``--competitors`` count of plain-Python processes at niceness 0 (the benchmark's
closed-loop clients, the gateway, any ordinary process on a shared machine) keep the cores
partly busy (each spins ``--duty`` of every 10 ms). It records each side's images/s and what the
process sees: torch intra- and inter-op threads, the OMP/MKL variables, CPU affinity, niceness.

    flock /tmp/easel-heavy.lock timeout 600 python benchmarks/replica_env.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, _HERE)

from _common import write_result  # noqa: E402
from batching import Offline, bench_config  # noqa: E402


def _env() -> dict[str, Any]:
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LD_PRELOAD")
        },
        "affinity": sorted(os.sched_getaffinity(0)),
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
    }


class Worker:
    """The offline loop in a Ray worker, the pass on a worker thread as in a replica."""

    def __init__(self, model: str, steps: int, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        sys.path.insert(0, _HERE)  # a Ray worker: the benchmarks folder is not on its path
        from batching import Offline, bench_config

        self.offline = Offline(bench_config(model, 4, steps), model, threads)
        self.pool = ThreadPoolExecutor(max_workers=1)

    def env(self) -> dict[str, Any]:
        return _env()

    def renice(self, value: int) -> int:
        """Set every thread's niceness to `value` (Linux priorities are per thread)."""
        for tid in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), value)
        return os.getpriority(os.PRIO_PROCESS, 0)

    def run(self, images: int, batch: int, size: int, steps: int) -> dict[str, Any]:
        return self.pool.submit(self.offline.run, images, batch, size, steps).result()


def _duty(stop: Any, duty: float) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < duty * 0.01:
            pass
        time.sleep((1 - duty) * 0.01)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sdxl-lightning")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=48, help="per side and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--competitors", type=int, default=2)
    ap.add_argument("--duty", type=float, default=0.5, help="share of time each competitor spins")
    ap.add_argument("--out", default="benchmarks/results/replica_env.json")
    args = ap.parse_args(argv)

    import multiprocessing as mp

    import ray

    model = args.model
    cfg = bench_config(model, args.batch, args.steps)
    num_cpus = cfg.model(model).num_cpus
    threads = max(1, int(num_cpus))  # what the replica sets
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    hogs = [ctx.Process(target=_duty, args=(stop, args.duty), daemon=True)
            for _ in range(args.competitors)]  # fmt: skip
    sides: dict[str, list[dict[str, Any]]] = {"driver": [], "worker": [], "worker_nice0": []}
    envs: dict[str, Any] = {}
    try:
        offline = Offline(cfg, model, threads)
        envs["driver"] = _env()
        actor_cls = ray.remote(Worker).options(num_cpus=num_cpus)
        plain, nice0 = (
            actor_cls.remote(model, args.steps, threads),
            actor_cls.remote(model, args.steps, threads),
        )
        envs["worker"] = ray.get(plain.env.remote())
        ray.get(nice0.renice.remote(0))
        envs["worker_nice0"] = ray.get(nice0.env.remote())
        run = (args.images, args.batch, args.size, args.steps)
        warm = (2 * args.batch, args.batch, args.size, args.steps)
        offline.run(*warm)
        ray.get([plain.run.remote(*warm), nice0.run.remote(*warm)])
        for h in hogs:
            h.start()
        for r in range(args.rounds):
            sides["driver"].append(offline.run(*run))
            sides["worker"].append(ray.get(plain.run.remote(*run)))
            sides["worker_nice0"].append(ray.get(nice0.run.remote(*run)))
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['images'] / v[-1]['wall_s']:.2f} img/s" for k, v in sides.items()),
                flush=True)  # fmt: skip
    finally:
        stop.set()
        for h in hogs:
            if h.is_alive():
                h.join(10)
        ray.shutdown()

    def rate(side: str) -> float:
        rounds = sides[side]
        return sum(x["images"] for x in rounds) / sum(x["wall_s"] for x in rounds)

    def p50(side: str) -> float:
        calls = sorted(c for x in sides[side] for c in x["call_ms"])
        return round(calls[len(calls) // 2], 1)

    result = {
        "model": model,
        "size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "replica_num_cpus": num_cpus,
        "competitors": {"processes": args.competitors, "duty": args.duty, "niceness": 0},
        "environment": envs,
        "images_per_s": {k: round(rate(k), 2) for k in sides},
        "call_p50_ms": {k: p50(k) for k in sides},
        "worker_over_driver": round(rate("worker") / rate("driver"), 3),
        "worker_nice0_over_driver": round(rate("worker_nice0") / rate("driver"), 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end",
        "command": "python benchmarks/replica_env.py " + " ".join(argv or sys.argv[1:]),
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
