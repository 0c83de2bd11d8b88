"""One gateway process of this checkout against those of other checkouts, on the same echo.

A regression check for the gateway's data path: the echo upstream of `gateway_overhead.py` (its
own process), and gateway processes in front of it, one running this checkout's code and one
each other checkout's (`--other`, e.g. `git worktree add --detach DIR <commit>`), measured in
alternating rounds (A, B, A, B, ...) so that the machine's load hits both alike: the highest
rate each carries with 32 closed-loop clients, and the p50/p99 each adds at `--rate` req/s
offered open loop.

    python benchmarks/gateway_ab.py --other DIR [DIR ...] [--rounds 3] [--rate 500]
        [--out benchmarks/results/gateway_ab.json]
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
from pathlib import Path
from typing import Any

from _common import summary
from gateway_overhead import _BODY_MODEL, ROOT, _closed_loop, _echo_config, _open_loop, _wait_ready


def _gateway(checkout: Path, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A gateway process running `checkout`'s code, on a socket bound here."""
    from serve_apps.gateway.server import bind

    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cmd = [sys.executable, "-m", "serve_apps.gateway.server", "--fd", str(sock.fileno())]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.Popen(
        [*cmd, "--config", str(config)], pass_fds=(sock.fileno(),), cwd=checkout, env=env
    )
    sock.close()
    _wait_ready(url)
    return proc, url


def _commit(checkout: Path) -> str:
    """The short commit of `checkout` (uncommitted changes are not shown)."""
    return subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--other", nargs="+", required=True, help="other checkouts' roots")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1200, help="per side at 32 clients")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds at --rate per round")
    ap.add_argument("--out", default="benchmarks/results/gateway_ab.json")
    args = ap.parse_args(argv)

    from cluster.local import free_port

    others = {_commit(Path(o).resolve()): Path(o).resolve() for o in args.other}
    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks/gateway_overhead.py"), "--echo", str(port)],
        cwd=ROOT,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        echo_url = f"http://127.0.0.1:{port}"
        _wait_ready(echo_url)
        config = Path(tempfile.mkdtemp(prefix="easel-gw-ab-")) / "gateway.yaml"
        config.write_text(_echo_config(echo_url).to_yaml())
        sides: dict[str, str] = {"direct": echo_url}
        for name, checkout in {f"this@{_commit(ROOT)}": ROOT, **others}.items():
            proc, url = _gateway(checkout, config)
            procs.append(proc)
            sides[name] = url
        body = {"model": _BODY_MODEL, "prompt": "x", "seed": 1}
        rps: dict[str, list[float]] = {k: [] for k in sides}
        open_ms: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, url in sides.items():
                out = asyncio.run(_closed_loop(url, body, args.requests // args.rounds, 32))
                rps[name].append(round(out["rps"], 1))
                open_ms[name] += asyncio.run(_open_loop(url, body, args.rate, args.duration))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]} req/s" for k, v in rps.items()),
                  flush=True)  # fmt: skip
    finally:
        for p in [*procs, echo]:
            p.terminate()
            p.wait(timeout=30)
    ol = {k: summary(v) for k, v in open_ms.items()}
    result: dict[str, Any] = {
        "checkouts": {k: str(v) for k, v in {f"this@{_commit(ROOT)}": ROOT, **others}.items()},
        "rps_c32_by_round": rps,
        "open_loop": {"rate": args.rate, **ol},
        **{
            f"{k}_added_p{q}_ms_at_rate": round(ol[k][f"p{q}_ms"] - ol["direct"][f"p{q}_ms"], 3)
            for k in sides
            if k != "direct"
            for q in (50, 99)
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "command": "python benchmarks/gateway_ab.py " + " ".join(argv or sys.argv[1:]),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
