"""Overload: how fast the gateway says "full" at 5x capacity, its memory, and how fast it recovers.

One gateway process (its own process, as in production) in front of two SIMULATED providers
(provider-shaped HTTP servers, each its own process): each has `--slots` requests in service at
a time taking `--service-ms` each and a queue of `--queue` more, reports that capacity on
`/v1/stats` as a provider app does, and answers a full queue with `503 overloaded` and
`X-Easel-Outcome: shed` after `--shed-ms` (a Serve app learns "full" from its handle's
backpressure, which takes a round trip). Open-loop load in three phases of one run:

1. before: half the providers' throughput (`slots x providers / service`);
2. overload: `--factor` (default 5) times that throughput;
3. after: half again: how long until requests succeed again (time to the first 10 successes
   in a row after the drop), and their latency against phase 1's.

Reported: per phase, answers by status, p50/p95 of the 503s and of the successes; the ratio of
the overload 503s' p95 to the bound of 100 ms; the gateway's RSS before, at the end of the
overload and after (bounded memory); how many 503s the gateway answered itself (without a round
trip, from the admission limit) against those a provider answered.

    python benchmarks/overload.py [--factor 5] [--seconds 10]
        [--out benchmarks/results/overload.json]

Run it under the shared lock (`flock /tmp/easel-heavy.lock ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import pct

from config import EaselConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
_MODEL = "overload-model"
_PROVIDERS = ("lambda-sim", "runpod-sim")


def _provider_main(port: int, slots: int, queue: int, service_ms: float, shed_ms: float) -> None:
    """`overload.py --provider PORT ...`: a SIMULATED provider with bounded slots and queue."""
    import io

    import uvicorn
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    sem = asyncio.Semaphore(slots)
    held = {"n": 0}

    async def generate(request: Any) -> Response:
        await request.body()
        if held["n"] >= slots + queue:
            await asyncio.sleep(shed_ms / 1000)  # the round trip to learn "full"
            return JSONResponse(
                {"error": {"code": "overloaded", "message": "queue full"}},
                status_code=503,
                headers={"X-Easel-Outcome": "shed", "Retry-After": "1"},
            )
        held["n"] += 1
        try:
            async with sem:
                await asyncio.sleep(service_ms / 1000)
        finally:
            held["n"] -= 1
        return Response(png, media_type="image/png", headers={"X-Easel-Replica": "sim#1"})

    async def stats(request: Any) -> JSONResponse:
        row = {"model": _MODEL, "healthy": True, "capacity": slots, "replicas_running": 1}
        return JSONResponse({"provider": "simulated", "models": [row]})

    async def ready(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    app = Starlette(
        routes=[
            Route("/v1/generate", generate, methods=["POST"]),
            # A provider's model route (serve_apps.api.paths), where the gateway sends them.
            Route("/models/{model}/v1/generate", generate, methods=["POST"]),
            Route("/v1/stats", stats),
            Route("/readyz", ready),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _config(endpoints: dict[str, str], slots: int, queue: int) -> EaselConfig:
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == "sdxl-turbo")
    m.update(name=_MODEL, providers=list(_PROVIDERS), max_ongoing_requests=slots,
             max_queued_requests=queue)  # fmt: skip
    m["autoscaling"].update(min_replicas=1, initial_replicas=1, max_replicas=1)
    m["resolution"] = {"default": 64, "min": 32, "max": 256, "multiple": 16}
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    data["routing"]["request_timeout_s"] = 30
    data["evaluation"]["anchors"]["human_anchor_model"] = _MODEL
    data["providers"] = [p for p in data["providers"] if p["name"] in _PROVIDERS]
    for p in data["providers"]:
        p["endpoint"] = endpoints[p["name"]]
    data["serve"]["tenants"] = []
    return parse_config(data, "<overload benchmark config>")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def _rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


async def _phase(
    url: str, rate: float, seconds: float, t_origin: float
) -> list[tuple[float, int, float, str]]:
    """Open loop at `rate` req/s: (sent offset s, status, latency ms, whose 503) per request."""
    out: list[tuple[float, int, float, str]] = []
    body = {"model": _MODEL, "prompt": "overload", "seed": 1}
    loop = asyncio.get_running_loop()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(at: float) -> None:
            t0 = loop.time()
            try:
                async with session.post(f"{url}/v1/generate", json=body) as r:
                    data = await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status, data = 599, b""
            who = ""
            if status == 503:
                who = "gateway" if b"every healthy upstream is at its limit" in data else "provider"
            out.append((at - t_origin, status, (loop.time() - t0) * 1000, who))

        start = loop.time()
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(asyncio.ensure_future(one(loop.time())))
        await asyncio.gather(*tasks)
    return out


def _figures(rows: list[tuple[float, int, float, str]]) -> dict[str, Any]:
    shed = [ms for _, st, ms, _ in rows if st == 503]
    ok = [ms for _, st, ms, _ in rows if st == 200]
    statuses: dict[str, int] = {}
    for _, st, _, _ in rows:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    return {
        "requests": len(rows),
        "statuses": statuses,
        "shed_by_gateway": sum(1 for *_, who in rows if who == "gateway"),
        "shed_by_provider": sum(1 for *_, who in rows if who == "provider"),
        "ok_p50_ms": round(pct(ok, 50), 2) if ok else None,
        "ok_p95_ms": round(pct(ok, 95), 2) if ok else None,
        "shed_p50_ms": round(pct(shed, 50), 2) if shed else None,
        "shed_p95_ms": round(pct(shed, 95), 2) if shed else None,
    }


async def _run(url: str, gw_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    throughput = args.slots * len(_PROVIDERS) / (args.service_ms / 1000)
    low, high = 0.5 * throughput, args.factor * throughput
    loop = asyncio.get_running_loop()
    origin = loop.time()
    rss = {"before": _rss_mb(gw_pid)}
    before = await _phase(url, low, args.seconds / 2, origin)
    overload = await _phase(url, high, args.seconds, origin)
    rss["end_of_overload"] = _rss_mb(gw_pid)
    drop = loop.time() - origin
    after = await _phase(url, low, args.seconds, origin)
    rss["after"] = _rss_mb(gw_pid)
    # Recovery: from the drop to the first of 10 successes in a row.
    recovered_s = None
    streak = 0
    for at, st, _, _ in sorted(after):
        streak = streak + 1 if st == 200 else 0
        if streak == 1:
            first = at
        if streak == 10:
            recovered_s = round(first - drop, 3)
            break
    over = _figures(overload)
    return {
        "capacity_req_per_s": throughput,
        "offered_req_per_s": {"before": low, "overload": high, "after": low},
        "phases": {"before": _figures(before), "overload": over, "after": _figures(after)},
        "overload_shed_p95_over_bound": (
            None if over["shed_p95_ms"] is None else round(over["shed_p95_ms"] / 100.0, 3)
        ),
        "recovered_s_after_drop": recovered_s,
        "gateway_rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--queue", type=int, default=4)
    ap.add_argument("--service-ms", type=float, default=200.0)
    ap.add_argument("--shed-ms", type=float, default=50.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/overload.json"))
    ap.add_argument("--provider", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.provider:
        _provider_main(args.provider, args.slots, args.queue, args.service_ms, args.shed_ms)
        return 0
    procs: list[subprocess.Popen[bytes]] = []
    try:
        endpoints = {}
        for name in _PROVIDERS:
            port = _free_port()
            cmd = [sys.executable, __file__, "--provider", str(port), "--slots", str(args.slots),
                   "--queue", str(args.queue), "--service-ms", str(args.service_ms),
                   "--shed-ms", str(args.shed_ms)]  # fmt: skip
            procs.append(subprocess.Popen(cmd))
            endpoints[name] = f"http://127.0.0.1:{port}"
        for url in endpoints.values():
            _wait_ready(url)
        cfg = _config(endpoints, args.slots, args.queue)
        folder = Path(tempfile.mkdtemp(prefix="easel-overload-"))
        (folder / "gateway.yaml").write_text(cfg.to_yaml())
        port = _free_port()
        gw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve_apps.gateway.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--config",
                str(folder / "gateway.yaml"),
            ]
        )
        procs.append(gw)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        result = asyncio.run(_run(url, gw.pid, args))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    result.update(
        {
            "benchmark": "overload",
            "command": "python benchmarks/overload.py " + " ".join(argv or sys.argv[1:]),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "provider")},
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "python": platform.python_version(),
            },
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "simulated": "providers are SIMULATED provider-shaped servers (bounded slots/queue)",
        }
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["phases"]["overload"], indent=2))
    print(
        "recovered_s_after_drop:",
        result["recovered_s_after_drop"],
        "rss:",
        result["gateway_rss_mb"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
