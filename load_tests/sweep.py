"""Saturation sweep: raise the offered rate step by step until the SLO or error budget breaks.

Each step is a full open-loop run at one rate (Poisson arrivals, `step_s` long) in its own
folder under the sweep folder. A step passes when every model's latency at the SLO percentile
(`cfg.slo.percentile`) is within its `slo_ms` and the share of failed requests is within
`cfg.slo.error_budget`. The sweep stops at the first failing step, and also when the generator
itself could not keep the schedule (that step says nothing about the server). The answer is the
highest rate that passed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from config import EaselConfig
from load_tests.generators import generate_manifest
from load_tests.manifest import write_manifest
from load_tests.stats import LAG_WARN_MS, RATE_WARN_RATIO, LoadSummary

__all__ = ["SweepResult", "SweepStep", "judge_step", "run_sweep"]

_MIN_JOBS = 20


@dataclass
class SweepStep:
    """One rate of the sweep and its verdict."""

    rate: float
    jobs: int
    run_dir: str
    passed: bool
    generator_limited: bool
    reasons: list[str]
    achieved_rps: float | None
    error_rate: float | None
    latency_at_slo_percentile_ms: dict[str, float | None] = field(default_factory=dict)


@dataclass
class SweepResult:
    """All steps, the highest passing rate (None if none passed) and why the sweep stopped."""

    steps: list[SweepStep]
    best_rate: float | None
    stopped_because: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_rate": self.best_rate,
            "stopped_because": self.stopped_because,
            "steps": [asdict(s) for s in self.steps],
        }


def judge_step(summary: LoadSummary, cfg: EaselConfig) -> tuple[bool, bool, list[str]]:
    """(passed, generator_limited, reasons) for one step's summary.

    Latency counts from the schedule, so a generator that sends late only makes latency look
    worse: a pass stands even with send lag. The step is generator-limited when the offered
    load was not delivered (requests not sent at the client's bound, or achieved rate below
    RATE_WARN_RATIO of offered), or when it failed while the generator lagged by a material
    part of the latency budget (send lag p99 above LAG_WARN_MS and above a tenth of the
    tightest SLO): then the failure may be the generator's.
    """
    reasons: list[str] = []
    pct = cfg.slo.percentile
    for name, d in summary.by_model.items():
        at, slo = d["latency_at_slo_percentile_ms"], d["slo_ms"]
        if at is None:
            reasons.append(f"{name}: no successful request")
        elif slo is not None and at > slo:
            reasons.append(f"{name}: p{pct:g} {at:.0f} ms > SLO {slo:.0f} ms")
    o = summary.overall
    failed = sum(v for k, v in o["errors"].items() if k != "client_overload")
    rate = failed / o["n"] if o["n"] else 0.0
    if rate > cfg.slo.error_budget:
        reasons.append(f"error rate {rate:.1%} > budget {cfg.slo.error_budget:.1%}")
    g = summary.generator
    offered, achieved = g.get("offered_rps"), g.get("achieved_rps")
    undelivered = bool(g.get("client_overload")) or bool(
        offered and achieved and achieved < RATE_WARN_RATIO * offered
    )
    slos = [d["slo_ms"] for d in summary.by_model.values() if d.get("slo_ms")]
    material = max(LAG_WARN_MS, 0.1 * min(slos)) if slos else LAG_WARN_MS
    lagging = (g.get("send_lag_p99_ms") or 0.0) > material
    limited = undelivered or (bool(reasons) and lagging)
    if limited:
        reasons.append(g.get("warning") or "the generator did not deliver the offered load")
    return not reasons, limited, reasons


def run_sweep(
    url: str,
    out_dir: str | Path,
    cfg: EaselConfig,
    *,
    start_rate: float | None = None,
    factor: float = 1.5,
    step_s: float = 10.0,
    max_steps: int = 8,
    max_rate: float | None = None,
    progress: bool = True,
    **run_kw: Any,
) -> SweepResult:
    """Run steps at start_rate, start_rate·factor, ... ; write `sweep.json` in `out_dir`.

    Args:
        start_rate: first offered rate, req/s; default cfg.traffic.rate.
        factor: each step's rate over the previous one's (> 1).
        step_s: planned length of each step (jobs = rate·step_s, at least 20).
        max_steps: most steps; max_rate: no step above this rate.
        **run_kw: passed to run_load (api, max_in_flight, save_images, dispatchers, ...).
            Warm-up requests go with the first step only.
    """
    import ray

    from load_tests.runner import run_load

    rate = start_rate or cfg.traffic.rate
    if not factor > 1 or not step_s > 0 or max_steps < 1 or not rate > 0:
        raise ValueError("need start_rate > 0, factor > 1, step_s > 0 and max_steps >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(
            address=run_kw.pop("address", None) or "local",
            include_dashboard=False,
            log_to_driver=False,
        )
    run_kw.setdefault("save_images", False)
    steps: list[SweepStep] = []
    best, why = None, f"reached max_steps ({max_steps})"
    try:
        for k in range(max_steps):
            if max_rate is not None and rate > max_rate * (1 + 1e-9):
                why = f"next rate {rate:.3g} req/s is above max_rate {max_rate:g}"
                break
            jobs = max(math.ceil(rate * step_s), _MIN_JOBS)
            step_dir = out / f"step-{k:02d}-{rate:.4g}rps"
            step_dir.mkdir(parents=True, exist_ok=True)
            table = generate_manifest(
                cfg, pattern="poisson", jobs=jobs, rate=rate, seed=cfg.traffic.seed + k
            )
            manifest = write_manifest(table, step_dir / "manifest.parquet")
            if k:
                run_kw["warmup_requests"] = 0
            res = run_load(manifest, url, step_dir, cfg, progress=progress, **run_kw)
            passed, limited, reasons = judge_step(res.summary, cfg)
            o = res.summary.overall
            steps.append(
                SweepStep(
                    rate=rate,
                    jobs=jobs,
                    run_dir=str(step_dir),
                    passed=passed,
                    generator_limited=limited,
                    reasons=reasons,
                    achieved_rps=res.summary.generator["achieved_rps"],
                    error_rate=o["error_rate"],
                    latency_at_slo_percentile_ms={
                        m: d["latency_at_slo_percentile_ms"]
                        for m, d in res.summary.by_model.items()
                    },
                )
            )
            if limited:
                why = f"the generator could not keep {rate:.4g} req/s; the server was not the limit"
                break
            if not passed:
                why = f"{rate:.4g} req/s broke the SLO: " + "; ".join(reasons)
                break
            best = rate
            rate *= factor
    finally:
        if started_ray:
            ray.shutdown()
    path = out / "sweep.json"
    result = SweepResult(steps, best, why, path)
    path.write_text(json.dumps(result.to_dict(), indent=2))
    return result
