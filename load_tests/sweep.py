"""Saturation sweep: raise the offered rate step by step until the SLO or error budget breaks.

Each step is a full open-loop run at one rate (Poisson arrivals, `step_s` long, and long enough
that every model expects `cfg.slo.min_requests` requests) in its own folder under the sweep
folder. Its verdict reads intervals, not point estimates, so twenty requests can never decide it:

- pass: every model has at least `min_requests` requests, the one-sided upper bound of its
  latency at the SLO percentile (all requests, failures beyond the deadline) is within `slo_ms`,
  and the upper bound of the failed share is within `cfg.slo.error_budget`;
- fail: some model's lower bound is above its SLO (or its percentile falls among failures), or
  the failed share's lower bound is above the budget;
- inconclusive: anything else (the SLO lies inside an interval, or N is too small). The step is
  run again at the same rate with twice the requests, up to `max_extend` times.

Bounds are at `cfg.slo.confidence` (one-sided). The sweep stops at the first failing (or still
inconclusive) step, and also when the generator itself could not keep the schedule (that step
says nothing about the server). The answer is the highest rate that passed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from config import EaselConfig
from load_tests.generators import generate_manifest
from load_tests.intervals import min_n_for_upper_bound, wilson_interval
from load_tests.manifest import write_manifest
from load_tests.stats import LAG_WARN_MS, RATE_WARN_RATIO, LoadSummary

__all__ = ["StepVerdict", "SweepResult", "SweepStep", "judge_step", "min_requests", "run_sweep"]


@dataclass(frozen=True)
class StepVerdict:
    """One step's verdict: 'pass', 'fail' or 'inconclusive', and why."""

    verdict: str
    generator_limited: bool
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


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
    verdict: str = "pass"
    latency_at_slo_percentile_ms: dict[str, float | None] = field(default_factory=dict)
    latency_at_slo_percentile_ci_ms: dict[str, list[float | None]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)


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


def min_requests(cfg: EaselConfig) -> int:
    """Requests per model a step needs: `slo.min_requests`, and enough for an upper bound at all.

    Fewer than min_n_for_upper_bound requests (59 for p95 at 95 %) cannot bound the percentile
    from above, so no step that small could ever pass.
    """
    return max(cfg.slo.min_requests, min_n_for_upper_bound(cfg.slo.percentile, cfg.slo.confidence))


def _model_verdict(name: str, d: dict[str, Any], pct: float, need: int) -> tuple[str, str | None]:
    """('pass' | 'fail' | 'inconclusive', reason) for one model's figures."""
    slo, n = d.get("slo_ms"), d.get("n") or 0
    lo, hi = d.get("latency_at_slo_bounds_ms") or (None, None)
    lo_beyond, hi_beyond = d.get("latency_at_slo_bounds_beyond") or (False, False)
    if n == 0:
        return "fail", f"{name}: no request"
    if slo is None:
        return "inconclusive", f"{name}: no SLO in the config"
    if lo_beyond or (lo is not None and lo > slo):
        shown = "beyond the deadline" if lo_beyond else f"{lo:.0f} ms"
        return "fail", f"{name}: p{pct:g} lower bound {shown} > SLO {slo:.0f} ms"
    if n < need:
        return "inconclusive", f"{name}: N={n} below the {need} requests a verdict needs"
    if hi_beyond or hi is None or hi > slo:
        shown = "unbounded" if hi is None or hi_beyond else f"{hi:.0f} ms"
        point = _ms(
            d.get("latency_at_slo_percentile_ms"), d.get("latency_at_slo_percentile_beyond")
        )
        return "inconclusive", (
            f"{name}: p{pct:g} upper bound {shown} not within SLO {slo:.0f} ms (point {point})"
        )
    return "pass", None


def _ms(v: float | None, beyond: bool | None) -> str:
    return "beyond the deadline" if beyond else ("n/a" if v is None else f"{v:.0f} ms")


def judge_step(summary: LoadSummary, cfg: EaselConfig) -> StepVerdict:
    """The verdict of one step's summary (see the module docstring for the rules).

    Latency counts from the schedule, so a generator that sends late only makes latency look
    worse: a pass stands even with send lag. The step is generator-limited when the offered
    load was not delivered (requests not sent at the client's bound, or achieved rate below
    RATE_WARN_RATIO of offered), or when it failed while the generator lagged by a material
    part of the latency budget (send lag p99 above LAG_WARN_MS and above a tenth of the
    tightest SLO): then the failure may be the generator's.
    """
    reasons: list[str] = []
    pct, conf, need = cfg.slo.percentile, cfg.slo.confidence, min_requests(cfg)
    verdicts = []
    for name, d in summary.by_model.items():
        v, why = _model_verdict(name, d, pct, need)
        verdicts.append(v)
        if why:
            reasons.append(why)
    o = summary.overall
    failed = sum(v for k, v in o["errors"].items() if k != "client_overload")
    n = o["n"] or 0
    # One-sided bounds at `conf` are the two-sided Wilson interval at 2·conf − 1.
    ci = wilson_interval(failed, n, 2 * conf - 1)
    budget = cfg.slo.error_budget
    if ci is None:
        verdicts.append("fail")
        reasons.append("no request")
    elif ci[0] > budget:
        verdicts.append("fail")
        reasons.append(
            f"error rate {failed / n:.1%} (lower bound {ci[0]:.1%}) > budget {budget:.1%}"
        )
    elif ci[1] > budget:
        verdicts.append("inconclusive")
        reasons.append(
            f"error rate {failed / n:.1%}: upper bound {ci[1]:.1%} not within budget {budget:.1%}"
        )
    verdict = (
        "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    )
    g = summary.generator
    offered, achieved = g.get("offered_rps"), g.get("achieved_rps")
    undelivered = bool(g.get("client_overload")) or bool(
        offered and achieved and achieved < RATE_WARN_RATIO * offered
    )
    slos = [d["slo_ms"] for d in summary.by_model.values() if d.get("slo_ms")]
    material = max(LAG_WARN_MS, 0.1 * min(slos)) if slos else LAG_WARN_MS
    lagging = (g.get("send_lag_p99_ms") or 0.0) > material
    limited = undelivered or (verdict != "pass" and lagging)
    if limited:
        reasons.append(g.get("warning") or "the generator did not deliver the offered load")
        if verdict == "pass":
            verdict = "inconclusive"
    return StepVerdict(verdict, limited, reasons)


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
    max_extend: int = 2,
    progress: bool = True,
    **run_kw: Any,
) -> SweepResult:
    """Run steps at start_rate, start_rate·factor, ... ; write `sweep.json` in `out_dir`.

    Args:
        start_rate: first offered rate, req/s; default cfg.traffic.rate.
        factor: each step's rate over the previous one's (> 1).
        step_s: planned length of each step (jobs = rate·step_s, and at least enough that the
            model with the smallest share expects `min_requests(cfg)` requests).
        max_steps: most rates; max_rate: no step above this rate.
        max_extend: how many times an inconclusive step is run again with twice the requests.
        **run_kw: passed to run_load (api, max_in_flight, save_images, dispatchers, ...).
            Warm-up requests go with the first step only.
    """
    import ray

    from load_tests.runner import run_load

    rate = start_rate or cfg.traffic.rate
    if not factor > 1 or not step_s > 0 or max_steps < 1 or not rate > 0 or max_extend < 0:
        raise ValueError(
            "need start_rate > 0, factor > 1, step_s > 0, max_steps >= 1 and max_extend >= 0"
        )
    base_jobs = math.ceil(min_requests(cfg) / _smallest_share(cfg))
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
            jobs = max(math.ceil(rate * step_s), base_jobs)
            for extend in range(max_extend + 1):
                step_dir = out / (
                    f"step-{k:02d}-{rate:.4g}rps" + (f"-x{2**extend}" if extend else "")
                )
                step_dir.mkdir(parents=True, exist_ok=True)
                table = generate_manifest(
                    cfg, pattern="poisson", jobs=jobs, rate=rate, seed=cfg.traffic.seed + k
                )
                manifest = write_manifest(table, step_dir / "manifest.parquet")
                if steps:
                    run_kw["warmup_requests"] = 0
                res = run_load(manifest, url, step_dir, cfg, progress=progress, **run_kw)
                v = judge_step(res.summary, cfg)
                steps.append(_step(rate, jobs, step_dir, v, res.summary))
                if v.verdict != "inconclusive" or v.generator_limited:
                    break
                jobs *= 2  # more requests narrow the intervals
            if v.generator_limited:
                why = f"the generator could not keep {rate:.4g} req/s; the server was not the limit"
                break
            if v.verdict == "fail":
                why = f"{rate:.4g} req/s broke the SLO: " + "; ".join(v.reasons)
                break
            if v.verdict == "inconclusive":
                why = (
                    f"{rate:.4g} req/s stayed inconclusive after {jobs} requests (raise "
                    "--step-s or max_extend): " + "; ".join(v.reasons)
                )
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


def _smallest_share(cfg: EaselConfig) -> float:
    """The smallest share of traffic any model gets from the config's mix."""
    mix = cfg.traffic.model_mix
    if mix:
        total = sum(mix.values())
        shares = [v / total for v in mix.values() if v > 0]
        return min(shares) if shares else 1.0
    return 1.0 / len(cfg.models)


def _step(rate: float, jobs: int, step_dir: Path, v: StepVerdict, s: LoadSummary) -> SweepStep:
    return SweepStep(
        rate=rate,
        jobs=jobs,
        run_dir=str(step_dir),
        passed=v.passed,
        generator_limited=v.generator_limited,
        reasons=v.reasons,
        achieved_rps=s.generator["achieved_rps"],
        error_rate=s.overall["error_rate"],
        verdict=v.verdict,
        latency_at_slo_percentile_ms={
            m: d["latency_at_slo_percentile_ms"] for m, d in s.by_model.items()
        },
        latency_at_slo_percentile_ci_ms={
            m: d["latency_at_slo_percentile_ci_ms"] for m, d in s.by_model.items()
        },
        requests={m: d["n"] for m, d in s.by_model.items()},
    )
