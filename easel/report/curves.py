"""Latency against offered load: from a saturation sweep, or from time windows of one run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from config import EaselConfig
from load_tests.intervals import nearest_rank

__all__ = ["SWEEP_PATTERNS", "sweep_curve", "window_curve"]

# Patterns whose offered load changes over the run: their latency-against-load curve is plotted.
SWEEP_PATTERNS = ("ramp", "diurnal", "burst")


def sweep_curve(run_dir: Path) -> dict[str, Any] | None:
    """Latency at the SLO percentile against offered rate, from a saturation sweep's sweep.json."""
    for path in (run_dir / "sweep" / "sweep.json", run_dir / "sweep.json"):
        if path.is_file():
            steps = json.loads(path.read_text()).get("steps", [])
            curves: dict[str, list[list[float]]] = {}
            for st in steps:
                for model, ms in (st.get("latency_at_slo_percentile_ms") or {}).items():
                    if ms is not None:
                        curves.setdefault(model, []).append([float(st["rate"]), float(ms)])
            return {"source": f"saturation sweep ({path.relative_to(run_dir)})", "curves": curves}
    return None


def window_curve(cfg: EaselConfig, req: list[dict[str, Any]]) -> dict[str, Any] | None:
    """p95 per model against offered load in time windows, for patterns that vary the load.

    Each window's p95 is over all its attempted requests, failures ranked beyond the deadline; a
    window whose p95 falls among its failures has no latency to plot and is counted apart.
    """
    if cfg.traffic.pattern not in SWEEP_PATTERNS or not req:
        return None
    tried = [
        r for r in req if r.get("error_class") != "rejected" and r.get("scheduled_s") is not None
    ]
    sched = np.asarray([r["scheduled_s"] for r in tried], float)
    if len(sched) < 20:
        return None
    span = float(sched.max() - sched.min()) or 1.0
    width = max(span / 12.0, 1.0)
    start = float(sched.min())
    offered = np.bincount(((sched - start) // width).astype(int)) / width
    per_bin: dict[str, dict[int, list[float]]] = {}
    for r in tried:
        b = int((r["scheduled_s"] - start) // width)
        value = r["latency_ms"] if r.get("ok") and r.get("latency_ms") is not None else math.inf
        per_bin.setdefault(r["model"], {}).setdefault(b, []).append(value)
    curves: dict[str, list[list[float]]] = {}
    beyond = 0
    for model, bins in per_bin.items():
        pts = []
        for b, v in sorted(bins.items()):
            if len(v) < 3:
                continue
            # Exact order statistics of the few requests in each window (no histogram needed).
            p95 = sorted(v)[nearest_rank(len(v), 95) - 1]
            if math.isinf(p95):
                beyond += 1
            else:
                pts.append([float(offered[b]), float(p95)])
        if len(pts) >= 2:
            curves[model] = pts
    source = f"{width:.0f}-s windows of this run's {cfg.traffic.pattern} arrivals, all requests"
    if beyond:
        source += f"; {beyond} window(s) whose p95 fell among failed requests are not drawn"
    return {"source": source, "curves": curves, "windows_beyond_deadline": beyond}
