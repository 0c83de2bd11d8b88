"""What the benchmark scripts share: nearest-rank percentiles and cut-down default configs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from config import EaselConfig, load_config, parse_config

__all__ = ["CpuMeter", "one_model_config", "pct", "serve_pids", "summary", "write_result"]


def pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile: an observed value, never an interpolation."""
    data = sorted(values)
    return data[max(0, -(-int(q * len(data)) // 100) - 1)]


def summary(ms: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), digits),
        "p95_ms": round(pct(ms, 95), digits),
        "p99_ms": round(pct(ms, 99), digits),
        "mean_ms": round(statistics.fmean(ms), digits),
    }


def one_model_config(
    model: str, providers: list[str] | None = None, max_batch_size: int | None = None
) -> EaselConfig:
    """The default config cut down to `model`, on `providers` (default: its first one)."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == model)
    m["providers"] = providers or m["providers"][:1]
    if max_batch_size is not None:
        m["batching"]["max_batch_size"] = max_batch_size
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    anchors = data["evaluation"]["anchors"]
    if anchors.get("human_anchor_model") not in (None, model):
        anchors["human_anchor_model"] = model  # the one model left
    return parse_config(data, f"<default config, {model} on {m['providers']}>")


class CpuMeter:
    """CPU seconds (user + system, all threads) of named processes, read before and after a
    round: on a CPU-bound machine, where a request's cost goes, process by process.

    `machine` is the whole machine's busy CPU seconds (every core, every process: other work
    sharing the machine included), for what the named processes do not explain.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.spent: dict[str, dict[str, float]] = {}  # side -> label -> CPU seconds
        self.images: dict[str, int] = {}

    def read(self) -> dict[str, float]:
        import psutil

        out = {}
        for label, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[label] = t.user + t.system
            except psutil.Error:  # gone (a replica restarted): count nothing more for it
                out[label] = 0.0
        t = psutil.cpu_times()
        out["machine"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return out

    def add(self, side: str, before: dict[str, float], images: int) -> None:
        """Charge what every process spent since `before` to `images` of `side`."""
        after = self.read()
        spent = self.spent.setdefault(side, {})
        for label, t in after.items():
            spent[label] = spent.get(label, 0.0) + max(0.0, t - before.get(label, t))
        self.images[side] = self.images.get(side, 0) + images

    def per_image_ms(self) -> dict[str, dict[str, float]]:
        """{side: {process: CPU ms per image}}, processes that spent under 0.05 ms left out."""
        out = {}
        for side, spent in self.spent.items():
            n = max(1, self.images[side])
            ms = {k: v * 1000 / n for k, v in spent.items()}
            out[side] = {k: round(v, 2) for k, v in ms.items() if v >= 0.05}
        return out


def serve_pids() -> dict[str, int]:
    """{label: pid} of this Ray's Serve processes: `serve_proxy`, `serve_controller`, and each
    replica as `<app>/<deployment>` (the first replica of each)."""
    import ray

    out: dict[str, int] = {}
    for a in ray._private.state.actors().values():
        pid = a.get("Pid")
        if a.get("State") != "ALIVE" or not pid:
            continue
        name, cls = a.get("Name") or "", a.get("ActorClassName") or ""
        if cls == "ProxyActor":
            out["serve_proxy"] = int(pid)
        elif cls == "ServeController":
            out["serve_controller"] = int(pid)
        elif name.startswith("SERVE_REPLICA::"):
            app, dep = name.removeprefix("SERVE_REPLICA::").split("#")[:2]
            out.setdefault(f"{app}/{dep}", int(pid))
    return out


def write_result(out: str | Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result JSON to `out` (folders made as needed) and print it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
