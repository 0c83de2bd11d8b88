"""Does easel's load generator keep its schedule? Send lag, achieved rate, open requests.

Each scenario runs the real `easel load` (its own process: driver, Ray, Ray Data's
streaming_split, dispatcher actors) against load_tests.echo_server, a trivial endpoint in its
own process whose behaviour is known, and reads the figures from the run's own records. They are
ratios and lags measured in the same run, so they describe the generator on this machine, not
the server.

- schedule: Poisson traffic at each of --rates (default 50, 200, 500, 1000 req/s) for
  --duration s to an endpoint that answers at once: achieved/offered, send lag p50/p99/max.
- saturated: 40 req/s, 600 rows, into a server that serves 8 at once, 3 s each (it completes
  2.7 req/s): every row must still be sent on time (open loop), so requests pile up open.
- open: --open-rows requests (default 19,000) at --open-rate req/s to a server that holds each
  one 30 s, through ONE dispatcher: how many it holds open, and the memory each open request
  costs there (its RSS at the most open requests minus its RSS at the start, per request).
- priorities: the schedule at --priority-rate (1,000 req/s) with each dispatcher priority
  (ray: Ray's worker niceness 15; normal: 0; high: -10; realtime: SCHED_RR), in --rounds
  alternating rounds so that the machine's drift hits each alike.

    python benchmarks/load_generator.py                      # all four
    python benchmarks/load_generator.py --scenario schedule --rates 1000 --duration 10
    python benchmarks/load_generator.py --scenario schedule saturated open

Writes a Markdown table per scenario to stdout and the figures, with the machine's load
average, to benchmarks/results/load_generator.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _loadgen import easel_load, generator_row, git_commit, machine, start_echo, stop, write_result

from config import load_config
from load_tests import generate_manifest, write_manifest


def _manifest(tmp: Path, name: str, jobs: int, rate: float) -> Path:
    cfg = load_config()
    table = generate_manifest(cfg, pattern="poisson", jobs=jobs, rate=rate, seed=1)
    return write_manifest(table, tmp / f"{name}.parquet")


def schedule(tmp: Path, rates: list[float], duration: float, args: list[str]) -> list[dict]:
    server, url = start_echo()
    rows = []
    try:
        for rate in rates:
            m = _manifest(tmp, f"s{rate:g}", int(rate * duration), rate)
            res = easel_load(m, url, tmp / f"s{rate:g}", ["--no-images", "--warmup", "1", *args])
            rows.append({"target_rps": rate, **generator_row(res)})
    finally:
        stop(server)
    return rows


def saturated(tmp: Path, args: list[str]) -> dict[str, Any]:
    server, url = start_echo("--service-ms", "3000", "--concurrency", "8")
    try:
        m = _manifest(tmp, "sat", 600, 40.0)
        res = easel_load(m, url, tmp / "sat", ["--no-images", "--warmup", "0", *args])
    finally:
        stop(server)
    return {"target_rps": 40.0, "service_ms": 3000, "concurrency": 8, **generator_row(res)}


def open_requests(tmp: Path, n: int, rate: float, args: list[str]) -> dict[str, Any]:
    server, url = start_echo("--service-ms", "30000")
    try:
        m = _manifest(tmp, "open", n, rate)
        extra = ["--no-images", "--warmup", "0", "--dispatchers", "1", "--timeout", "90", *args]
        res = easel_load(m, url, tmp / "open", extra)
    finally:
        stop(server)
    row = generator_row(res)
    [d] = res["load"]["attempts"][-1]["dispatchers"]
    grown = d["rss_at_most_open_bytes"] - d["rss_at_start_bytes"]
    row.update(
        bound=d["bound"],
        bound_by=d["bound_by"],
        most_open_sampled=d["most_open_sampled"],
        rss_at_start_mb=round(d["rss_at_start_bytes"] / 2**20, 1),
        rss_at_most_open_mb=round(d["rss_at_most_open_bytes"] / 2**20, 1),
        bytes_per_open_request=round(grown / d["most_open_sampled"])
        if d["most_open_sampled"]
        else None,
    )
    return row


def priorities(tmp: Path, rate: float, duration: float, rounds: int) -> list[dict]:
    server, url = start_echo()
    m = _manifest(tmp, "prio", int(rate * duration), rate)
    rows = []
    try:
        for k in range(rounds):
            for prio in ("ray", "normal", "high", "realtime"):
                out = tmp / f"prio-{prio}-{k}"
                args = ["--no-images", "--warmup", "1", "--priority", prio]
                res = easel_load(m, url, out, args)
                disp = res["load"]["attempts"][-1]["dispatchers"]
                rows.append(
                    {
                        "target_rps": rate,
                        "priority": prio,
                        "round": k,
                        "niceness": sorted({d["niceness"] for d in disp}),
                        "scheduler": sorted({d["scheduler"] for d in disp}),
                        "warnings": [d["warning"] for d in disp if d["warning"]],
                        **generator_row(res),
                    }
                )
    finally:
        stop(server)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(rows: list[dict]) -> str:
    out = [
        "| offered (target) | achieved / offered | send lag p50 | p99 | max | not sent | "
        "errors | max open | connections | CPU s: dispatcher, coordinator, driver |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        errors = sum(r["errors"].values())
        cpu = r.get("cpu_s") or {}
        cpu_s = ", ".join(_fmt(cpu.get(k), ".1f") for k in ("dispatcher", "coordinator", "driver"))
        out.append(
            f"| {r['target_rps']:g} req/s ({_fmt(r['offered_rps'], '.1f')}) | "
            f"{_fmt(r['achieved_over_offered'], '.3f')} | {_fmt(r['send_lag_p50_ms'], '.2f')} ms | "
            f"{_fmt(r['send_lag_p99_ms'], '.2f')} ms | {_fmt(r['send_lag_max_ms'], '.1f')} ms | "
            f"{r['not_sent']} | {errors} | {r['max_open']} | {r['connections_opened']} | {cpu_s} |"
        )
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scenario",
        nargs="+",
        choices=("all", "schedule", "saturated", "open", "priorities"),
        default=["all"],
    )
    p.add_argument("--rates", type=float, nargs="+", default=[50, 200, 500, 1000])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate (bounded)")
    p.add_argument("--open-rows", type=int, default=19_000)
    p.add_argument("--open-rate", type=float, default=1_000.0)
    p.add_argument(
        "--priority", choices=("auto", "ray", "normal", "high", "realtime"), default=None
    )
    p.add_argument("--priority-rate", type=float, default=1_000.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--name", default="load_generator", help="results file name (no .json)")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temp dir)")
    args = p.parse_args()
    if args.duration * max(args.rates) > 20_000 or args.open_rows > 50_000:
        p.error("keep rate x duration and --open-rows at most 20,000 and 50,000 requests")
    extra = ["--priority", args.priority] if args.priority else []
    before = machine()
    out: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/load_generator.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": before,
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = args.keep or Path(tmp)
        tmp_path.mkdir(parents=True, exist_ok=True)
        if {"all", "schedule"} & set(args.scenario):
            out["schedule"] = schedule(tmp_path, args.rates, args.duration, extra)
            print("schedule (echo server, answers at once):\n" + _table(out["schedule"]) + "\n")
        if {"all", "saturated"} & set(args.scenario):
            out["saturated"] = saturated(tmp_path, extra)
            print(
                "saturated (600 rows at 40 req/s; server: 8 at once, 3 s each):\n"
                + _table([out["saturated"]])
                + "\n"
            )
        if {"all", "open"} & set(args.scenario):
            o = out["open"] = open_requests(tmp_path, args.open_rows, args.open_rate, extra)
            print(
                f"open requests (one dispatcher, server holds each 30 s): "
                f"{o['most_open_sampled']} open at once (max {o['max_open']}; bound "
                f"{o['bound']}, set by {o['bound_by']}), RSS {o['rss_at_start_mb']} MB -> "
                f"{o['rss_at_most_open_mb']} MB: {o['bytes_per_open_request']} bytes per open "
                "request\n"
            )
        if {"all", "priorities"} & set(args.scenario):
            out["priorities"] = priorities(tmp_path, args.priority_rate, args.duration, args.rounds)
            print("| priority | round | niceness | send lag p50 | p99 | max | achieved/offered |")
            print("|---|---|---|---|---|---|---|")
            for r in out["priorities"]:
                print(
                    f"| {r['priority']} | {r['round']} | {r['niceness']} {r['scheduler']} | "
                    f"{r['send_lag_p50_ms']:.2f} ms | {r['send_lag_p99_ms']:.2f} ms | "
                    f"{r['send_lag_max_ms']:.1f} ms | {r['achieved_over_offered']:.3f} |"
                )
    out["machine_after"] = machine()
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"load average before {before['loadavg']}, after {out['machine_after']['loadavg']}")
    print(f"wrote {write_result(args.name, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
