"""compare.md and compare.json: what `easel compare` found, for people and for machines."""

from __future__ import annotations

import json
import math
from pathlib import Path

from easel.compare import Comparison, MetricRow

__all__ = ["comparison_markdown", "write_comparison"]


def _fmt(r: MetricRow, v: float | None) -> str:
    if v is None:
        return "beyond deadline" if r.metric.startswith("latency") else "n/a"
    if r.metric.startswith("latency"):
        return f"{v:,.0f} ms"
    if r.metric in ("goodput", "error_rate"):
        return f"{100 * v:.1f} %"
    if r.metric.endswith("cost_per_image"):
        return f"${v:.6f}"
    return f"{v:.1f}"


def _change(r: MetricRow) -> str:
    if r.judged == "rel":
        if r.rel is None:
            return "n/a"
        lo, hi = r.ci or [None, None]
        span = "" if lo is None or lo == hi else f" [{_pct(lo)}, {_pct(hi)}]"
        return f"{_pct(r.rel)}{span}"
    if r.diff is None:
        return "n/a"
    unit = " pts" if r.metric == "composite" else " pp"
    scale = 1 if r.metric == "composite" else 100
    span = "" if not r.ci else f" [{scale * r.ci[0]:+.1f}, {scale * r.ci[1]:+.1f}]"
    return f"{scale * r.diff:+.1f}{unit}{span}"


def _pct(v: float) -> str:
    return "+∞" if math.isinf(v) else f"{100 * v:+.0f} %"


def _tol(r: MetricRow) -> str:
    if r.judged == "rel":
        return f"{100 * r.tolerance:.0f} %"
    return f"{r.tolerance:g} pts" if r.metric == "composite" else f"{100 * r.tolerance:.1f} pp"


def comparison_markdown(c: Comparison) -> str:
    """compare.md: the verdict, the regressions, every metric, the config differences."""
    lines = ["# easel compare", "", f"- A (baseline): `{c.run_a}`", f"- B: `{c.run_b}`", ""]
    regs = c.regressions
    lines.append(
        f"**Verdict: {len(regs)} regression(s).**" if regs else "**Verdict: no regression.**"
    )
    lines.append("")
    header = "| Model | Niche | Metric | A | B | Change [interval] | Tolerance | N (A / B) | Note |"
    rule = "|---|---|---|---|---|---|---|---|---|"

    def row(r: MetricRow) -> str:
        mark = "**REGRESSION** " if r.regression else ""
        return (
            f"| {r.model} | {r.niche} | {mark}{r.metric} | {_fmt(r, r.a)} | {_fmt(r, r.b)} | "
            f"{_change(r)} | {_tol(r)} | {r.n_a} / {r.n_b} | {r.note} |"
        )

    if regs:
        lines += ["## Regressions", "", header, rule, *map(row, regs), ""]
    lines += ["## Every metric", "", header, rule, *map(row, c.rows), ""]
    lines += [
        "A metric regresses when it moves the wrong way by more than its tolerance and its "
        "interval excludes zero. Latency: p50/p95/p99 over all attempted requests (failures "
        "beyond the deadline), change relative to A, interval from both runs' distribution-free "
        "percentile intervals. Goodput (within A's SLO) and error rate: change in percentage "
        "points, Newcombe interval. Composite: change in points, interval from both runs' own "
        "bootstrap intervals. Cost per image (all held, and busy-only): computed, not sampled.",
        "",
        "## Config differences",
        "",
        *([f"- `{d}`" for d in c.config_differences] or ["- none"]),
        "",
    ]
    return "\n".join(lines)


def write_comparison(c: Comparison, out_dir: str | Path) -> tuple[Path, Path]:
    """Write compare.md and compare.json into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "compare.md", out / "compare.json"
    md.write_text(comparison_markdown(c))
    js.write_text(json.dumps(c.to_dict(), indent=2, default=str) + "\n")
    return md, js
