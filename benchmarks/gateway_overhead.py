"""What the gateway adds in front of a provider, and how much one gateway process carries.

Measured in one run, as differences and ratios against a baseline of the same run, in
alternating rounds (A, B, A, B, ...) so that drift in the machine's load hits both sides alike:

1. added latency on a real provider: a tiny model (`--model`, default sdxl-turbo) served by one
   provider app (the default local mode: Serve apps of a local Ray), called through the gateway
   (client -> gateway -> provider) and directly at the provider route the gateway sends to (the
   model's own route, `<endpoint>/models/<model>`): one request at a time, taking turns request
   by request (`--requests` each; the provider's ingress route takes turns too, for the Serve hop
   it adds), and with 32 concurrent closed-loop clients in alternating rounds. Added = gateway -
   direct, at p50 and p99. Beside it, the gateway's own time on each request
   (`X-Easel-Gateway-Ms`: its handler's time less the waits on the upstream), which a saturated
   provider's queueing noise does not blur, and the gateway process's CPU per request (psutil).
2. one gateway process against an echo upstream (a provider-shaped HTTP server, its own process,
   answering `/v1/generate` at once with a small PNG): the highest rate it carries with 32
   concurrent clients, and, at `--rate` req/s offered open-loop, the p99 it adds over the echo
   called directly.
3. for the decision between a plain ASGI gateway and one inside Ray Serve (docs/architecture.md):
   the same forwarding done by a Ray Serve deployment (Serve's HTTP proxy, then a replica that
   forwards with the same pooled client), against the same echo, one request at a time, taking
   turns with the gateway and the echo called directly.

The echo phase (2) runs first, before any Ray cluster has run on the machine: a stopped
cluster leaves the machine noisy for a while, and 2 measures tails of a few milliseconds.

    python benchmarks/gateway_overhead.py [--requests 300] [--rounds 3] [--rate 500]
        [--out benchmarks/results/gateway_overhead.json]

Run it under the shared lock on a quiet machine; the machine's load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import CpuMeter, one_model_config, pct, summary

from config import EaselConfig, load_config, parse_config
from serve_apps.api.paths import model_route_prefix

ROOT = Path(__file__).resolve().parents[1]
_BODY_MODEL = "echo-model"


# --- the echo upstream: a provider-shaped server, run as its own process ---------------------


def _echo_main(port: int) -> None:
    """`python benchmarks/gateway_overhead.py --echo PORT`: answers like a provider, at once."""
    import io

    import uvicorn
    from PIL import Image
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    headers = {
        "X-Easel-Provider": "echo", "X-Easel-Replica": "echo#1", "X-Easel-Queue-Ms": "0",
        "X-Easel-Inference-Ms": "0", "X-Easel-Batch-Size": "1", "X-Easel-Cold-Start": "false",
    }  # fmt: skip

    async def generate(request: Any) -> Response:
        await request.body()
        return Response(png, media_type="image/png", headers=headers)

    async def stats(request: Any) -> JSONResponse:
        model = {"model": _BODY_MODEL, "healthy": True, "capacity": 1000, "replicas_running": 1}
        return JSONResponse({"provider": "echo", "models": [model]})

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
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")  # fmt: skip


def _echo_config(endpoint: str) -> EaselConfig:
    """A config whose one model is served by one provider at the echo's endpoint."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == "sdxl-turbo")
    m.update(name=_BODY_MODEL, providers=["lambda-sim"])
    m["resolution"] = {"default": 64, "min": 32, "max": 256, "multiple": 16}
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    data["providers"] = [p for p in data["providers"] if p["name"] == "lambda-sim"]
    data["providers"][0]["endpoint"] = endpoint
    data["evaluation"]["anchors"]["human_anchor_model"] = None  # the one model is the echo's
    return parse_config(data, "<gateway_overhead echo config>")


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


def _start_gateway(cfg: EaselConfig, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from serve_apps.gateway.server import bind

    path = folder / "gateway.yaml"
    path.write_text(cfg.to_yaml())
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cmd = [sys.executable, "-m", "serve_apps.gateway.server", "--fd", str(sock.fileno())]
    proc = subprocess.Popen([*cmd, "--config", str(path)], pass_fds=(sock.fileno(),))
    sock.close()
    _wait_ready(url)
    return proc, url


# --- load -------------------------------------------------------------------------------------

_OWN = "X-Easel-Gateway-Ms"  # the gateway's own time on a request: its handler less upstream waits


async def _closed_loop(url: str, body: dict[str, Any], n: int, concurrency: int) -> dict[str, Any]:
    ms: list[float] = []
    own: list[float] = []
    left = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def worker() -> None:
            for _ in left:
                t0 = time.perf_counter()
                async with s.post(f"{url}/v1/generate", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
                    if _OWN in r.headers:
                        own.append(float(r.headers[_OWN]))
                ms.append((time.perf_counter() - t0) * 1000)

        for _ in range(concurrency):  # warm the pool: one connection per client
            async with s.post(f"{url}/v1/generate", json=body) as r:
                await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"ms": ms, "own_ms": own, "wall_s": wall, "rps": len(ms) / wall}


async def _open_loop(url: str, body: dict[str, Any], rate: float, duration_s: float) -> list[float]:
    """Latency from each request's scheduled time (no coordinated omission)."""
    ms: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one(at: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, at - loop.time()))
            async with s.post(f"{url}/v1/generate", json=body) as r:
                await r.read()
                errors += r.status != 200
            ms.append((loop.time() - at) * 1000)

        start = loop.time() + 0.1
        await asyncio.gather(*(one(start + i / rate) for i in range(int(rate * duration_s))))
    if errors:
        raise RuntimeError(f"{url}: {errors} failed requests at {rate} req/s")
    return ms


async def _interleaved(sides: dict[str, str], body: dict[str, Any], n: int) -> dict[str, list]:
    """One request at a time, taking turns between the sides request by request; also the
    gateway's own times (`gateway_own`) from its responses' header."""
    ms: dict[str, list[float]] = {k: [] for k in sides}
    own: list[float] = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 10):
            for name, url in sides.items():
                t0 = time.perf_counter()
                async with s.post(f"{url}/v1/generate", json={**body, "seed": i}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
                    if i >= 10 and _OWN in r.headers:
                        own.append(float(r.headers[_OWN]))
                if i >= 10:  # the first ten of each side warm up
                    ms[name].append((time.perf_counter() - t0) * 1000)
    return {**ms, "gateway_own": own}


def _one_at_a_time(sides: dict[str, str], body: dict[str, Any], n: int) -> dict[str, Any]:
    ms = asyncio.run(_interleaved(sides, body, n))
    base = summary(ms["direct"])
    out: dict[str, Any] = {k: summary(v) for k, v in ms.items() if v}
    for k in sides:
        if k != "direct":
            out[f"{k}_added_p50_ms"] = round(out[k]["p50_ms"] - base["p50_ms"], 3)
            out[f"{k}_added_p99_ms"] = round(out[k]["p99_ms"] - base["p99_ms"], 3)
            out[f"{k}_added_p50_ci95_ms"] = _p50_diff_ci(ms[k], ms["direct"])
    return out


def _alternate(
    sides: dict[str, str], body: dict[str, Any], n: int, rounds: int, conc: int
) -> dict[str, Any]:
    """Closed-loop rounds alternating between the sides; pooled latencies and rates per side."""
    pooled: dict[str, list[float]] = {k: [] for k in sides}
    rps: dict[str, list[float]] = {k: [] for k in sides}
    own: list[float] = []
    for r in range(rounds):
        for name, url in sides.items():
            out = asyncio.run(_closed_loop(url, body, max(conc, n // rounds), conc))
            pooled[name] += out["ms"]
            own += out["own_ms"]
            rps[name].append(round(out["rps"], 1))
        line = ", ".join(f"{k} p50 {pct(v, 50):.2f} ms" for k, v in pooled.items())
        print(f"  round {r + 1} at {conc}: {line}", flush=True)
    res: dict[str, Any] = {k: {**summary(v), "rps_by_round": rps[k]} for k, v in pooled.items()}
    if own:
        res["gateway_own"] = summary(own)
    if "gateway" in pooled and "direct" in pooled:
        res["gateway_added_p50_ci95_ms"] = _p50_diff_ci(pooled["gateway"], pooled["direct"])
    return res


def _p50_diff_ci(a: list[float], b: list[float], n: int = 2000) -> list[float]:
    """A bootstrap 95 % interval of p50(a) - p50(b): how finely these samples resolve it."""
    import random

    rng = random.Random(0)
    diffs = sorted(
        pct(rng.choices(a, k=len(a)), 50) - pct(rng.choices(b, k=len(b)), 50) for _ in range(n)
    )
    return [round(diffs[int(0.025 * n)], 3), round(diffs[int(0.975 * n) - 1], 3)]


# --- the Serve forwarder, for the decision ----------------------------------------------------


def _serve_forwarder(upstream: str, port: int) -> str:
    """A Ray Serve app forwarding `/v1/generate` to `upstream`, as a Serve-based gateway would."""
    import ray
    from ray import serve
    from starlette.responses import Response

    @serve.deployment(max_ongoing_requests=1000)
    class Forwarder:
        def __init__(self, upstream: str) -> None:
            self.url = f"{upstream}/v1/generate"
            self.session: Any = None

        async def __call__(self, request: Any) -> Response:
            if self.session is None:
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            body = await request.body()
            json_type = {"content-type": "application/json"}
            async with self.session.post(self.url, data=body, headers=json_type) as r:
                data = await r.read()
                provider = {"X-Easel-Provider": r.headers["X-Easel-Provider"]}
                return Response(data, media_type="image/png", headers=provider)

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Forwarder.bind(upstream), name="forwarder", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def _echo_phase(
    result: dict[str, Any], sides: dict[str, str], ebody: dict[str, Any], args: argparse.Namespace
) -> None:
    """Phase 2: one gateway process against the echo: the most it carries at 32 clients, and
    the p99 it adds at `--rate` req/s open-loop."""
    res = _alternate(sides, ebody, args.requests * 4, args.rounds, 32)
    result["echo_c32"] = res
    open_loop: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for k, u in sides.items():
            open_loop[k] += asyncio.run(_open_loop(u, ebody, args.rate, args.duration))
    ol = {k: summary(v) for k, v in open_loop.items()}
    result["echo_open_loop"] = {
        "rate": args.rate,
        **ol,
        "added_p50_ms": round(ol["gateway"]["p50_ms"] - ol["direct"]["p50_ms"], 3),
        "added_p99_ms": round(ol["gateway"]["p99_ms"] - ol["direct"]["p99_ms"], 3),
    }
    result["gateway_max_rps_c32"] = round(statistics.fmean(res["gateway"]["rps_by_round"]), 1)
    print(f"echo: gateway {result['gateway_max_rps_c32']} req/s at 32 clients; at "
          f"{args.rate:g} req/s added p99 {result['echo_open_loop']['added_p99_ms']} ms",
          flush=True)  # fmt: skip


def _provider_phase(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Phase 1: a real provider, through the gateway and directly at the route it sends to."""
    from serve_apps.local.stack import LocalStack

    # A real provider, through the gateway and directly at the route the gateway sends to
    # (the model's own route, serve_apps.api.paths); beside them the provider's ingress route,
    # whose difference to the model route is the Serve hop the gateway no longer takes.
    cfg = one_model_config(args.model)
    body = {"model": args.model, "prompt": "studio photo of a ceramic mug", "seed": 1}
    with LocalStack(cfg) as stack:
        endpoint = stack.status()["providers"][0]["endpoint"]
        assert stack.gateway is not None
        meter = CpuMeter({"gateway": stack.gateway.pid})
        sides = {
            "direct": model_route_prefix(endpoint, args.model),
            "gateway": stack.url,
            "provider_ingress": endpoint,
        }
        before = meter.read()
        result["provider_c1"] = _one_at_a_time(sides, body, args.requests)
        meter.add("c1", before, args.requests + 10)
        print(f"provider, one at a time: added p50 "
              f"{result['provider_c1']['gateway_added_p50_ms']} ms", flush=True)  # fmt: skip
        sides = {"direct": sides["direct"], "gateway": stack.url}
        before = meter.read()
        n32 = max(128 * args.rounds, args.requests)
        res = _alternate(sides, body, n32, args.rounds, 32)
        meter.add("c32", before, n32 + 32 * args.rounds)
        result["provider_c32"] = {
            **res,
            "gateway_added_p50_ms": round(res["gateway"]["p50_ms"] - res["direct"]["p50_ms"], 3),
            "gateway_added_p99_ms": round(res["gateway"]["p99_ms"] - res["direct"]["p99_ms"], 3),
        }
        # The gateway process's CPU per request it forwarded (its probes included).
        cpu = meter.per_image_ms()
        result["gateway_cpu_ms_per_request"] = {k: v.get("gateway") for k, v in cpu.items()}
        print(f"provider at 32: added p50 {result['provider_c32']['gateway_added_p50_ms']} ms",
              flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="sdxl-turbo")
    ap.add_argument("--requests", type=int, default=300, help="per side and concurrency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=500.0, help="offered req/s on the echo")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds at --rate, per side")
    ap.add_argument(
        "--phases",
        nargs="+",
        choices=["echo", "provider", "serve"],
        default=["echo", "provider", "serve"],
        help="which of phases 2, 1 and 3 to run (default all; `--phases echo` takes ~2 min)",
    )
    ap.add_argument("--out", default="benchmarks/results/gateway_overhead.json")
    args = ap.parse_args(argv)
    if args.echo is not None:
        _echo_main(args.echo)
        return 0

    from cluster.local import free_port

    result: dict[str, Any] = {"model": args.model}
    folder = Path(tempfile.mkdtemp(prefix="easel-gw-bench-"))
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, __file__, "--echo", str(echo_port)], cwd=ROOT)
    gateway = None
    try:
        echo_url = f"http://127.0.0.1:{echo_port}"
        _wait_ready(echo_url)
        gateway, gw_url = _start_gateway(_echo_config(echo_url), folder)
        ebody = {"model": _BODY_MODEL, "prompt": "x", "seed": 1}
        # 2 first: on a machine that no Ray cluster has run on yet. Measured after phase 1, both
        # sides' p99 at 500 req/s rose several-fold (the direct echo's too) for a while after
        # the provider's cluster stopped, and the difference swung with it.
        if "echo" in args.phases:
            _echo_phase(result, {"direct": echo_url, "gateway": gw_url}, ebody, args)
        if "provider" in args.phases:
            _provider_phase(result, args)
        if "serve" in args.phases:
            # 3. the same forwarding inside Ray Serve, one client at a time, against the echo.
            # This client now holds what phase 1 imported (Ray, torch): freeze it, or each full
            # collection pass over it lands on whichever side is being timed.
            gc.collect()
            gc.freeze()
            serve_url = _serve_forwarder(echo_url, free_port())
            sides = {"direct": echo_url, "gateway": gw_url, "serve_forwarder": serve_url}
            result["echo_c1"] = _one_at_a_time(sides, ebody, args.requests)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        echo.terminate()
        echo.wait(timeout=30)
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    result["command"] = "python benchmarks/gateway_overhead.py " + " ".join(argv or sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "added" in k or "rps" in k}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
