"""Shared by the load-generator benchmarks: the echo server, `easel load` as a child process,
and a sampler of the resident memory of its whole process tree.

Each benchmark runs the real CLI (`python -m easel.cli load ...`) in its own process, so what is
measured is what a user runs: the driver, its Ray, the dispatcher actors, Ray Data's split
coordinator and read tasks. The sampler reads every process of that tree every 0.2 s and keeps
each one's peak RSS and its CPU time (user + system, as last read), grouped by role.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit(path: Path = ROOT) -> str:
    """`<commit>` of the tree at `path`, with `+dirty` when it has uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def child_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (for child processes)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_echo(*args: str) -> tuple[subprocess.Popen, str]:
    """`python -m load_tests.echo_server ARGS` in its own process; (process, url)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "load_tests.echo_server", *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # "ready http://127.0.0.1:PORT"
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, line.split()[1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def role(proc: psutil.Process, root_pid: int) -> str:
    """driver, dispatcher, coordinator (Ray Data's split coordinator), reader, ray, other."""
    if proc.pid == root_pid:
        return "driver"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    if "ray::Dispatcher" in cmd:
        return "dispatcher"
    if "SplitCoordinator" in cmd:
        return "coordinator"
    if "ReadManifest" in cmd or "ray::prescan" in cmd:
        return "reader"
    if any(k in cmd for k in ("raylet", "gcs_server", "ray/dashboard", "log_monitor", "ray::")):
        return "ray"
    return "other"


class Sampler(threading.Thread):
    """Peak RSS and CPU time per process of a process tree, sampled every `every_s` until
    `stop()`. A process's CPU time is its last reading: up to `every_s` of it before it exited
    is missed."""

    def __init__(self, root_pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.every_s = root_pid, every_s
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (role, peak rss)
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds, last read
        self.peak_at: dict[int, float] = {}  # pid -> seconds from the start to its peak
        self._t0 = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    times = p.cpu_times()
                except psutil.Error:
                    continue
                self.cpu[p.pid] = times.user + times.system
                kind = role(p, self.root_pid)  # a worker takes its actor's name after it starts
                old = self.peaks.get(p.pid)
                if old is not None and old[0] not in ("ray", "other"):
                    kind = old[0]
                if old is None or rss > old[1]:
                    self.peak_at[p.pid] = time.monotonic() - self._t0
                self.peaks[p.pid] = (kind, max(rss, old[1] if old else 0))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak_mb(self, kind: str) -> float | None:
        """The largest peak RSS among processes of one role, MB (None: no such process)."""
        values = [rss for k, rss in self.peaks.values() if k == kind]
        return round(max(values) / 2**20, 1) if values else None

    def peak_at_s(self, kind: str) -> float | None:
        """Seconds from the start to the peak of `peak_mb(kind)` (None: no such process)."""
        best = max(((rss, pid) for pid, (k, rss) in self.peaks.items() if k == kind), default=None)
        return round(self.peak_at[best[1]], 1) if best else None

    def cpu_s(self, kind: str) -> float | None:
        """CPU seconds used by the processes of one role, summed (None: no such process)."""
        values = [self.cpu.get(pid, 0.0) for pid, (k, _) in self.peaks.items() if k == kind]
        return round(sum(values), 1) if values else None


def easel_load(
    manifest: Path, url: str, out: Path, args: Sequence[str] = (), sample: bool = True
) -> dict[str, Any]:
    """Run `easel load` as a child process; its summary, load.json, wall time and memory peaks.

    Raises:
        RuntimeError: easel load failed (its stderr tail is in the message).
    """
    cmd = [sys.executable, "-m", "easel.cli", "load", "--manifest", str(manifest), "--url", url]
    cmd += ["--out", str(out), "--no-progress", *args]
    t0 = time.monotonic()
    child = subprocess.Popen(
        cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    sampler = Sampler(child.pid)
    if sample:
        sampler.start()
    _, err = child.communicate()
    wall = time.monotonic() - t0
    if sample:
        sampler.stop()
    if child.returncode != 0:
        raise RuntimeError(f"easel load failed ({child.returncode}): {err[-2000:]}")
    summary = json.loads((out / "load_summary.json").read_text())
    log = json.loads((out / "load.json").read_text())
    roles = ("driver", "dispatcher", "coordinator", "reader")
    peaks = {k: sampler.peak_mb(k) for k in roles}
    return {
        "summary": summary,
        "load": log,
        "wall_s": round(wall, 1),
        "peak_rss_mb": peaks,
        "peak_at_s": {k: sampler.peak_at_s(k) for k in roles},
        "cpu_s": {k: sampler.cpu_s(k) for k in roles},
    }


def generator_row(res: dict[str, Any]) -> dict[str, Any]:
    """The generator's figures of one run (from load_summary.json and load.json)."""
    g, o = res["summary"]["generator"], res["summary"]["overall"]
    disp = res["load"]["attempts"][-1]["dispatchers"]
    offered, achieved = g["offered_rps"], g["achieved_rps"]
    return {
        "rows": o["rows"],
        "offered_rps": offered,
        "achieved_rps": achieved,
        "achieved_over_offered": achieved / offered if offered and achieved else None,
        "sent": g["sent"],
        "not_sent": o["rows"] - o["rejected"] - g["sent"],
        "client_overload": g["client_overload"],
        "send_lag_p50_ms": g["send_lag_p50_ms"],
        "send_lag_p99_ms": g["send_lag_p99_ms"],
        "send_lag_max_ms": g["send_lag_max_ms"],
        "ok": o["ok"],
        "errors": o["errors"],
        "max_open": max(d["max_in_flight"] for d in disp),
        "connections_opened": sum(d["connections_opened"] for d in disp),
        "wall_s": res["wall_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "peak_at_s": res.get("peak_at_s"),
        "cpu_s": res.get("cpu_s"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
