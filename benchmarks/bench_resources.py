"""Wall time and peak memory of one `easel bench` run (issue: the default run's footprint).

Runs `easel bench ARGS...` as a child process and samples, every 0.5 s, the summed PSS
(proportional set size, so shared pages are not counted twice) of its whole process tree: the
driver, Ray's GCS and raylet, every Serve replica, dispatcher and scorer actor. Prints the wall
time, the peak and the machine's load, and writes them to benchmarks/results/bench_resources.json.

    python benchmarks/bench_resources.py -- --out /tmp/bench-default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _tree_pss(root: psutil.Process) -> tuple[int, int]:
    total, count = 0, 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
            count += 1
        except psutil.Error:  # a process that ended between listing and reading
            continue
    return total, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: easel bench args")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    cmd = [sys.executable, "-m", "easel.cli", "bench", *bench_args]
    load_before = os.getloadavg()
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    root = psutil.Process(child.pid)
    peak, peak_procs = 0, 0
    while child.poll() is None:
        try:
            pss, n = _tree_pss(root)
        except psutil.Error:
            break
        if pss > peak:
            peak, peak_procs = pss, n
        time.sleep(0.5)
    wall = time.monotonic() - t0
    result = {
        "command": " ".join(["easel", "bench", *bench_args]),
        "exit_code": child.wait(),
        "wall_s": round(wall, 1),
        "peak_tree_pss_gb": round(peak / 1e9, 2),
        "processes_at_peak": peak_procs,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench_resources.json").write_text(json.dumps(result, indent=2) + "\n")
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
