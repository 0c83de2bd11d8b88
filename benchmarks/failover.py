"""Failover when a provider's whole cluster dies: isolated providers, one killed mid-run.

Two providers serve one tiny model (`--model`, default sdxl-turbo), each its own Ray cluster
(`--isolated`, as in production), behind the gateway. Open-loop traffic at `--rate` req/s runs
for `--before` seconds, then every process of one provider's cluster is SIGKILLed, and traffic
goes on for `--after` seconds (`serve_apps.local.drill.failover_drill`). Reported, per run:
requests and failed requests (the target is 0), requests failed over, the time from the kill
until the gateway's routing view showed the provider unhealthy, the gateway's own detection time
(first failed attempt or probe to the mark), and the recovery time (until the last request the
outage slowed, beyond 3 × the p95 before it, completed).

    python benchmarks/failover.py [--runs 2] [--rate 4] [--before 10] [--after 15]
        [--out benchmarks/results/failover.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from _common import one_model_config

KEY = "failover-benchmark-admin"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sdxl-turbo")
    ap.add_argument("--providers", nargs=2, default=["lambda-sim", "runpod-sim"])
    ap.add_argument("--runs", type=int, default=2, help="drills, each on a fresh federation")
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--before", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=15.0)
    ap.add_argument("--out", default="benchmarks/results/failover.json")
    args = ap.parse_args(argv)

    from serve_apps.local.drill import failover_drill
    from serve_apps.local.stack import LocalStack

    os.environ["EASEL_ADMIN_KEY"] = KEY
    cfg = one_model_config(args.model, args.providers)
    runs = []
    for i in range(args.runs):
        victim = args.providers[i % 2]  # each provider takes a turn at dying
        with LocalStack(cfg, isolated=True, gateway_env={"EASEL_ADMIN_KEY": KEY}) as stack:
            result = failover_drill(
                stack.url, args.model, victim, lambda v=victim: stack.kill_provider(v),
                admin_key=KEY, rate=args.rate, kill_after_s=args.before, after_s=args.after,
            )  # fmt: skip
        runs.append(result.to_dict())
        print(
            f"run {i + 1}: {result.failed}/{result.requests} failed, detected after "
            f"{result.detected_s}s, recovered after {result.recovered_s}s",
            flush=True,
        )
    out = {
        "model": args.model,
        "providers": args.providers,
        "mode": "isolated (one Ray cluster per provider)",
        "rate": args.rate,
        "before_s": args.before,
        "after_s": args.after,
        "runs": runs,
        "failed_requests": sum(r["failed"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "max_detected_s": max(r["detected_s"] or float("inf") for r in runs),
        "max_recovered_s": max(r["recovered_s"] for r in runs),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "command": "python benchmarks/failover.py " + " ".join(argv or sys.argv[1:]),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
