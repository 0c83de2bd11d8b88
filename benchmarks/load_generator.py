"""How well does easel's load generator keep its schedule? Achieved rate and send lag.

Offers Poisson traffic at several rates to a trivial endpoint (load_tests.echo_server, in its
own process on 127.0.0.1, answering at once) through the real runner (Ray Data stream,
dispatcher actors, aiohttp), and reports, per rate, the achieved / offered ratio and the send
lag (sent − scheduled) percentiles from the run's own records. The figures are ratios and lags
measured in the same run, so they describe the generator on this machine, not the server.

    python benchmarks/load_generator.py                       # 50, 200, 500 req/s, 10 s each
    python benchmarks/load_generator.py --rates 50 200 500 --duration 10 --dispatchers 2

Writes a Markdown table to stdout and the figures (with the machine's load average, which
matters on a shared machine) to benchmarks/results/load_generator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from config.cli_types import positive_int

ROOT = Path(__file__).resolve().parents[1]


def _start_server(service_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "load_tests.echo_server", "--service-ms", str(service_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # "ready http://127.0.0.1:PORT"
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, line.split()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[50, 200, 500])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate (bounded)")
    p.add_argument("--dispatchers", type=positive_int, default=None, help="default: config (2)")
    p.add_argument("--service-ms", type=float, default=0.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load_generator.json"))
    args = p.parse_args()
    if args.duration * max(args.rates) > 20_000:
        p.error("keep rate x duration at most 20,000 requests")

    import ray

    from config import load_config
    from load_tests import generate_manifest, run_load, write_manifest

    cfg = load_config()
    server, url = _start_server(args.service_ms)
    rows = []
    load_before = os.getloadavg()
    try:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as tmp:
            for rate in args.rates:
                jobs = int(rate * args.duration)
                table = generate_manifest(cfg, pattern="poisson", jobs=jobs, rate=rate, seed=1)
                manifest = write_manifest(table, Path(tmp) / f"m{rate:g}.parquet")
                t0 = time.monotonic()
                res = run_load(
                    manifest,
                    url,
                    Path(tmp) / f"run{rate:g}",
                    cfg,
                    save_images=False,
                    progress=False,
                    dispatchers=args.dispatchers,
                    warmup_requests=1,
                )
                g, o = res.summary.generator, res.summary.overall
                rows.append(
                    {
                        "offered_rps_target": rate,
                        "jobs": jobs,
                        "offered_rps": g["offered_rps"],
                        "achieved_rps": g["achieved_rps"],
                        "achieved_over_offered": g["achieved_rps"] / g["offered_rps"],
                        "send_lag_p50_ms": g["send_lag_p50_ms"],
                        "send_lag_p99_ms": g["send_lag_p99_ms"],
                        "send_lag_max_ms": g["send_lag_max_ms"],
                        "client_overload": g["client_overload"],
                        "ok": o["ok"],
                        "errors": o["errors"],
                        "service_p50_ms": o["service_p50_ms"],
                        "service_p99_ms": o["service_p99_ms"],
                        "warning": g["warning"],
                        "wall_s": time.monotonic() - t0,
                    }
                )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        server.terminate()
        server.wait(10)
    load_after = os.getloadavg()

    print(
        "| offered (target) | offered (manifest) | achieved | achieved/offered | send lag p50 | "
        "p99 | max | not sent (bound) | errors | service p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        errors = sum(r["errors"].values())
        print(
            f"| {r['offered_rps_target']:g} req/s | {r['offered_rps']:.1f} | "
            f"{r['achieved_rps']:.1f} | {r['achieved_over_offered']:.3f} | "
            f"{r['send_lag_p50_ms']:.2f} ms | {r['send_lag_p99_ms']:.2f} ms | "
            f"{r['send_lag_max_ms']:.1f} ms | {r['client_overload']} | {errors} | "
            f"{r['service_p50_ms']:.1f} / {r['service_p99_ms']:.1f} ms |"
        )
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        f"({os.cpu_count()} CPUs)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python", "benchmarks/load_generator.py", *sys.argv[1:]]),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg_before": load_before,
                    "loadavg_after": load_after,
                },
                "duration_s": args.duration,
                "service_ms": args.service_ms,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
