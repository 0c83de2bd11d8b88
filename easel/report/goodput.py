"""Goodput in the report: per model and niche, the share of requests within the latency SLO, and
the share within it *and* above the niche's quality floor (quality-aware goodput), with intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from config import EaselConfig
from easel.report.cells import Summary, Table, display_names, fmt_pct_interval
from evaluation.goodput import quality_goodput

__all__ = ["goodput_section", "goodput_table"]

_COLUMNS = ["job_id", "model", "niche", "ok", "latency_ms", "error_class"]


def goodput_section(run_dir: Path, cfg: EaselConfig, requests: pa.Table | None) -> dict[str, Any]:
    """summary.json's `goodput`: evaluation.quality_goodput over the run's files ({} without
    requests)."""
    if requests is None or not requests.num_rows:
        return {}
    req = requests.select([c for c in _COLUMNS if c in requests.column_names]).to_pandas()
    for c in _COLUMNS:
        if c not in req:
            req[c] = None
    path = run_dir / "image_scores.parquet"
    images = pd.read_parquet(path) if path.is_file() else None
    out = quality_goodput(req, images, cfg)
    out["confidence"] = cfg.slo.confidence
    return out


def _floor(f: dict[str, float] | None) -> str:
    if f is None:
        return "per niche"
    return ", ".join(f"{k} ≥ {v:g}" for k, v in f.items()) or "none"


def goodput_table(s: Summary) -> Table:
    """Per model (all niches) and per (model, niche): goodput and quality-aware goodput."""
    g = s.get("goodput") or {}
    names = display_names(s)
    niches = {n["name"]: n["display_name"] for n in s.get("niches", [])}
    pct = int(100 * g.get("confidence", 0.95))
    t = Table(
        "goodput",
        "Goodput: within the SLO, and within it above the quality floor",
        [
            "Model",
            "Niche",
            "Requests (N)",
            f"Within SLO [{pct} % CI]",
            f"Quality-aware goodput [{pct} % CI]",
            "Failed / late / below floor / unscored",
            "Quality floor",
        ],
    )
    order = {m["name"]: i for i, m in enumerate(s.get("models", []))}
    niche_order = {n: i for i, n in enumerate(niches)}
    rows = sorted(
        g.get("rows") or [],
        key=lambda r: (
            order.get(r["model"], 99),
            r["niche"] != "all",
            niche_order.get(r["niche"], 99),
        ),
    )
    for r in rows:
        below = r.get("below_floor")
        by = r.get("below_floor_by_metric") or {}
        misses = (
            f"{r['failed']} / {r['late']} / "
            + ("n/a" if below is None else str(below))
            + (f" ({', '.join(f'{k} {v}' for k, v in by.items())})" if by else "")
            + f" / {'n/a' if r.get('unscored') is None else r['unscored']}"
        )
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                "all" if r["niche"] == "all" else niches.get(r["niche"], r["niche"]),
                str(r["n"]),
                fmt_pct_interval(r.get("latency_share"), r.get("latency_ci")),
                fmt_pct_interval(r.get("share"), r.get("ci")),
                misses,
                _floor(r.get("floor")),
            ]
        )
    if g.get("note"):
        t.notes.append(g["note"])
    if rows:
        t.notes.append(
            "Every attempted request counts: failed and never-sent ones are misses, as are late "
            "ones, images below their niche's floor (`niches[].quality_floor`) and images that "
            "could not be scored. Rejected manifest rows count for no model. Intervals: Wilson."
        )
    else:
        t.notes.append("No goodput: the load-test stage wrote no requests.parquet.")
    return t
