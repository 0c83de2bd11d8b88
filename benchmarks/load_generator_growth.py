"""Does the load runner's memory stay flat as the manifest grows? Peak RSS at 10k, 100k, 1M rows.

Runs the real `easel load` (its own process) on Poisson manifests of each size at one rate
(--rate, default 1,000 req/s: a high speed-up, so a million rows take 17 minutes; at 2,000 the
echo server, one Python process on the same 2 cores, fell behind after 100k rows) against
load_tests.echo_server in its own process, without images, and samples the resident memory of
every process of its tree every 0.2 s: the driver, the dispatcher actors, Ray Data's split
coordinator and the read/prescan tasks. The claim is about the driver and the dispatchers: their
peak RSS must not grow with the manifest (within 10 % from the smallest to the largest), since
neither ever holds the manifest. The generator's own figures (achieved/offered, send lag) are
reported beside them, so a run that fell behind is visible.

    python benchmarks/load_generator_growth.py                       # 10k, 100k, 1M rows
    python benchmarks/load_generator_growth.py --sizes 2000 20000 --rate 1000 --name growth_small

Writes the table to stdout, the figures to benchmarks/results/<name>.json and the plot to
benchmarks/results/<name>.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _loadgen import (
    RESULTS,
    easel_load,
    generator_row,
    git_commit,
    machine,
    start_echo,
    stop,
    write_result,
)

from config import load_config
from load_tests import generate_manifest, write_manifest

_ROLES = ("driver", "dispatcher", "coordinator", "reader")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=90)
    sizes = [r["rows"] for r in rows]
    for role, style in zip(_ROLES, ("o-", "s-", "^--", "v:"), strict=True):
        ys = [r["peak_rss_mb"][role] for r in rows]
        if any(y is not None for y in ys):
            ax.plot(sizes, ys, style, label=role)
    ax.set_xscale("log")
    ax.set_xlabel("manifest rows")
    ax.set_ylabel("peak RSS, MB")
    ax.set_ylim(bottom=0)
    ax.set_title("easel load: peak memory per process", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--rate", type=float, default=1_000.0)
    p.add_argument("--name", default="load_generator_growth", help="results file name")
    args = p.parse_args()
    if max(args.sizes) > 2_000_000 or max(args.sizes) / args.rate > 1_200:
        p.error("keep sizes at most 2,000,000 rows and 20 minutes of traffic each")
    cfg = load_config()
    before = machine()
    t0 = time.monotonic()
    rows = []
    server, url = start_echo()
    try:
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                table = generate_manifest(cfg, pattern="poisson", jobs=n, rate=args.rate, seed=1)
                manifest = write_manifest(table, Path(tmp) / "m.parquet")
                del table
                res = easel_load(manifest, url, Path(tmp) / "run", ["--no-images", "--warmup", "1"])
                row = generator_row(res)
                attempt = res["load"]["attempts"][-1]
                row["driver_peak_rss_self_mb"] = round(attempt["driver_peak_rss_bytes"] / 2**20, 1)
                row["prescan_peak_rss_mb"] = round(attempt["prescan_peak_rss_bytes"] / 2**20, 1)
                row["dispatcher_max_queued"] = max(d["max_queued"] for d in attempt["dispatchers"])
                # The driver's own figures after each step of the run: which one raised its peak.
                row["driver_memory_mb"] = [
                    {
                        "after": m["after"],
                        "rss_mb": round(m["rss_bytes"] / 2**20, 1),
                        "peak_mb": round(m["peak_bytes"] / 2**20, 1),
                        "unix_s": m.get("unix_s"),
                    }
                    for m in attempt.get("driver_memory", [])
                ]
                rows.append(row)
                print(
                    f"{n:>9} rows: driver {row['peak_rss_mb']['driver']} MB, dispatcher "
                    f"{row['peak_rss_mb']['dispatcher']} MB, coordinator "
                    f"{row['peak_rss_mb']['coordinator']} MB; achieved/offered "
                    f"{row['achieved_over_offered']:.3f}, lag p99 {row['send_lag_p99_ms']} ms, "
                    f"{row['wall_s']} s",
                    flush=True,
                )
                steps = ", ".join(
                    f"{m['after']} {m['rss_mb']}/{m['peak_mb']}" for m in row["driver_memory_mb"]
                )
                print(f"{'':>9}       driver MB (now/peak) after: {steps}", flush=True)
    finally:
        stop(server)
    growth = {}
    for role in ("driver", "dispatcher"):
        first, last = rows[0]["peak_rss_mb"][role], rows[-1]["peak_rss_mb"][role]
        growth[role] = round(last / first - 1, 4) if first and last else None
    print("\n| rows | driver MB | dispatcher MB | coordinator MB | achieved/offered | lag p99 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        m = r["peak_rss_mb"]
        print(
            f"| {r['rows']:,} | {m['driver']} | {m['dispatcher']} | {m['coordinator']} | "
            f"{r['achieved_over_offered']:.3f} | {r['send_lag_p99_ms']:.2f} ms |"
        )
    print(f"growth from {rows[0]['rows']:,} to {rows[-1]['rows']:,} rows: {growth}")
    png = RESULTS / f"{args.name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _plot(rows, png)
    out = {
        "command": " ".join(["python", "benchmarks/load_generator_growth.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": before,
        "machine_after": machine(),
        "rate": args.rate,
        "rows": rows,
        "growth_first_to_last": growth,
        "plot": str(png.relative_to(RESULTS.parents[1])),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    print(f"wrote {write_result(args.name, out)} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
