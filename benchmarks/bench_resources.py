"""Wall time and peak memory of one `easel bench` run (issue: the default run's footprint).

Runs `easel bench ARGS...` as a child process and samples, every `--every` s (default 2), the
summed PSS (proportional set size, so shared pages are not counted twice) of its whole process
tree: the driver, Ray's GCS and raylet, every Serve replica, dispatcher and scorer actor. Prints
the wall time, the peak and the machine's load, and writes them, with the bench's own time and
its stages' (from the run folder's summary.json, when `--out` is given), to
benchmarks/results/bench_resources.json.

Reading a process's PSS walks its page tables (/proc/PID/smaps): ~20 ms of kernel time for a
process that imported torch and diffusers, ~0.3 s for the whole tree at the bench's peak. Sampled
every 0.5 s that took about half a core from a 2-core machine, and slowed the bench it measured;
the sampler's own CPU time is in the result (`sampler_cpu_s`).

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


def _label(proc: psutil.Process) -> str:
    """What a process is: its Ray actor title, or its command."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0]
    text = " ".join(cmd)
    for key in ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env",
                "serve_apps.gateway.server", "simulators", "easel.cli"):  # fmt: skip
        if key in text:
            return key
    return text[:60]


def _tree_pss(root: psutil.Process) -> tuple[int, int, list[tuple[str, int]]]:
    total, count, rows = 0, 0, []
    for proc in [root, *root.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss
        except psutil.Error:  # a process that ended between listing and reading
            continue
        total += pss
        count += 1
        rows.append((_label(proc), pss))
    return total, count, rows


def _by_kind(rows: list[tuple[str, int]]) -> list[dict[str, object]]:
    kinds: dict[str, list[int]] = {}
    for label, pss in rows:
        kinds.setdefault(label, []).append(pss)
    out = [{"process": k, "n": len(v), "pss_gb": round(sum(v) / 1e9, 3)} for k, v in kinds.items()]
    return sorted(out, key=lambda r: -float(r["pss_gb"]))  # type: ignore[arg-type]


class _Busy:
    """The machine's busy CPU time (user, nice, system, irq) between samples: how many cores the
    bench (and anything else on the machine) kept busy, over time. Steal (time a virtual CPU
    was ready but its host ran something else) is kept apart: on a shared host it is the part
    of a run's slowness that nothing in the run caused."""

    def __init__(self) -> None:
        self.last = psutil.cpu_times()
        self.total_s = self.steal_s = 0.0
        self.timeline: list[tuple[float, float]] = []

    def sample(self, at_s: float) -> None:
        now, last = psutil.cpu_times(), self.last

        def delta(*fields: str) -> float:
            return sum(getattr(now, f, 0.0) - getattr(last, f, 0.0) for f in fields)

        used = delta("user", "nice", "system", "irq", "softirq")  # guest time is inside user
        steal = delta("steal")
        elapsed = used + steal + delta("idle", "iowait")
        self.total_s += used
        self.steal_s += steal
        if elapsed > 0:
            cores = (os.cpu_count() or 1) * used / elapsed
            self.timeline.append((round(at_s, 1), round(cores, 2)))
        self.last = now


def _bench_times(bench_args: list[str]) -> dict[str, object]:
    """The bench's own wall time and its stages', from its run folder (when --out names it)."""
    if "--out" not in bench_args or bench_args.index("--out") + 1 >= len(bench_args):
        return {}
    summary = Path(bench_args[bench_args.index("--out") + 1]) / "summary.json"
    if not summary.is_file():
        return {}
    run = json.loads(summary.read_text()).get("run", {})
    return {
        "bench_wall_s": round(run.get("wall_s", 0.0), 1),
        "stages_s": {st["name"]: round(st["wall_s"], 1) for st in run.get("stages", [])},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="bench_resources", help="results file name (no .json)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between PSS samples")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: easel bench args")
    args = parser.parse_args()
    bench_args = [a for a in args.bench_args if a != "--"]
    cmd = [sys.executable, "-m", "easel.cli", "bench", *bench_args]
    load_before = os.getloadavg()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    root = psutil.Process(child.pid)
    peak, peak_procs, peak_rows, peak_at = 0, 0, [], 0.0
    busy = _Busy()
    while child.poll() is None:
        try:
            pss, n, rows = _tree_pss(root)
        except psutil.Error:
            break
        if pss > peak:
            peak, peak_procs, peak_rows, peak_at = pss, n, rows, time.monotonic() - t0
        time.sleep(args.every)
        busy.sample(time.monotonic() - t0)
    wall = time.monotonic() - t0
    sampler_cpu_s = time.process_time() - cpu0
    result = {
        "command": " ".join(["easel", "bench", *bench_args]),
        "exit_code": child.wait(),
        "wall_s": round(wall, 1),
        "peak_tree_pss_gb": round(peak / 1e9, 2),
        "processes_at_peak": peak_procs,
        "peak_at_s": round(peak_at, 1),
        "peak_by_process": _by_kind(peak_rows),
        "sample_every_s": args.every,
        "sampler_cpu_s": round(sampler_cpu_s, 1),
        "machine_busy_cpu_s": round(busy.total_s, 1),
        "machine_steal_cpu_s": round(busy.steal_s, 1),
        "cores_busy_timeline": busy.timeline,
        **_bench_times(bench_args),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
