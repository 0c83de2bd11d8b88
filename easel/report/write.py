"""Write a run folder's report: summary.json, report.md, report.html and plots/."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import EaselConfig, load_config
from easel.report.html import render_html
from easel.report.markdown import render_markdown, table_markdown
from easel.report.plots import (
    QualityCostPoint,
    latency_cdf_png,
    latency_vs_load_png,
    quality_vs_cost_png,
)
from easel.report.summary import build_summary, read_table
from easel.report.tables import cost_table, latency_table, quality_table

__all__ = ["ReportFiles", "headline_text", "load_run_config", "write_report"]


@dataclass
class ReportFiles:
    """What `write_report` wrote, and the summary it wrote it from."""

    summary_json: Path
    report_md: Path
    report_html: Path
    plots: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def load_run_config(run_dir: str | Path) -> EaselConfig:
    """The resolved config a run saved (`<run_dir>/config.yaml`); ConfigError if absent or bad."""
    return load_config(Path(run_dir) / "config.yaml")


def _previous(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _plots(run_dir: Path, s: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    names = {m["name"]: m["display_name"] for m in s.get("models", [])}
    # One colour per model, the same in every plot, in config order.
    colors = {names[m]: f"C{i % 10}" for i, m in enumerate(names)}
    out = []
    req = read_table(run_dir, "requests")
    if req is not None and req.num_rows:
        lat: dict[str, list[float]] = {names[m]: [] for m in names}
        attempted: dict[str, int] = {}
        cols = [c for c in ("model", "ok", "latency_ms", "error_class") if c in req.column_names]
        for r in req.select(cols).to_pylist():
            if r.get("error_class") == "rejected":
                continue
            label = names.get(r["model"], r["model"])
            attempted[label] = attempted.get(label, 0) + 1
            if r["ok"] and r["latency_ms"] is not None:
                lat.setdefault(label, []).append(r["latency_ms"])
        png = latency_cdf_png(lat, colors, attempted)
        if png:
            out.append(
                ("latency_cdf", "Latency CDF per model (all requests: failures never arrive)", png)
            )
    cost = {r["model"]: r["cost_per_image"] for r in (s.get("cost") or {}).get("models", [])}
    points = [
        QualityCostPoint(
            label=names.get(r["model"], r["model"]),
            cost=cost[r["model"]],
            quality=r["composite"],
            quality_lo=r.get("composite_lo"),
            quality_hi=r.get("composite_hi"),
            color=colors.get(names.get(r["model"], r["model"])),
        )
        for r in (s.get("quality") or {}).get("models", [])
        if cost.get(r["model"]) is not None and r.get("composite") is not None
    ]
    png = quality_vs_cost_png(points)
    if png:
        out.append(
            ("quality_vs_cost", "Composite quality against cost per image, Pareto front", png)
        )
    lc = s.get("load_curve") or {}
    curves = {names.get(k, k): [tuple(p) for p in v] for k, v in (lc.get("curves") or {}).items()}
    png = latency_vs_load_png(curves, source=lc.get("source", ""), colors=colors)
    if png:
        out.append(("latency_vs_load", "Latency against offered load", png))
    return out


def write_report(
    run_dir: str | Path,
    cfg: EaselConfig | None = None,
    *,
    run: Mapping[str, Any] | None = None,
    repro: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """(Re)write summary.json, report.md, report.html and plots/ in `run_dir`.

    Args:
        run_dir: the run folder.
        cfg: its config; None reads `<run_dir>/config.yaml`.
        run: how the run went (from `easel bench`); None keeps what summary.json recorded.
        repro: the reproducibility block; None keeps what summary.json recorded.
    """
    run_dir = Path(run_dir)
    cfg = cfg or load_run_config(run_dir)
    prev = _previous(run_dir)
    summary = build_summary(
        run_dir,
        cfg,
        run=run if run is not None else prev.get("run"),
        repro=repro if repro is not None else prev.get("repro"),
    )
    plots = _plots(run_dir, summary)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    paths = []
    for key, _title, png in plots:
        p = plot_dir / f"{key}.png"
        p.write_bytes(png)
        paths.append(p)
    summary["plots"] = [{"key": k, "title": t, "file": f"plots/{k}.png"} for k, t, _ in plots]
    files = ReportFiles(
        summary_json=run_dir / "summary.json",
        report_md=run_dir / "report.md",
        report_html=run_dir / "report.html",
        plots=paths,
        summary=summary,
    )
    files.summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    files.report_md.write_text(
        render_markdown(summary, [(k, t, f"plots/{k}.png") for k, t, _ in plots])
    )
    files.report_html.write_text(render_html(summary, plots))
    return files


def headline_text(summary: Mapping[str, Any]) -> str:
    """The three headline tables (quality, cost, latency) as Markdown, for the terminal."""
    return "\n\n".join(
        table_markdown(t)
        for t in (quality_table(summary), cost_table(summary), latency_table(summary))
    )
