"""The report's tables, built once from summary.json's figures and rendered as Markdown or HTML.

Every table carries its N, and rows with a figure below the physical floor carry a flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BELOW_FLOOR",
    "Table",
    "all_tables",
    "cost_deployment_table",
    "cost_table",
    "floor_table",
    "latency_table",
    "niche_table",
    "price_table",
    "quality_table",
]

BELOW_FLOOR = "⚠ below floor"

Summary = Mapping[str, Any]


@dataclass
class Table:
    """A titled grid of already formatted cells; `flagged` marks rows the reader must see."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flagged: set[int] = field(default_factory=set)


# --- cell formatting --------------------------------------------------------------------------


def fmt_num(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return "$0"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    if abs(v) >= 0.01:
        return f"${v:.4f}"
    return f"${v:.6f}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def fmt_interval(v: float | None, lo: float | None, hi: float | None) -> str:
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{v:.1f}"
    return f"{v:.1f} [{lo:.1f}, {hi:.1f}]"


def _names(s: Summary) -> dict[str, str]:
    return {m["name"]: m["display_name"] for m in s.get("models", [])}


def _flags(row: Mapping[str, Any]) -> str:
    return "; ".join(row.get("flags") or [])


def _floor_flag(t: Table, i: int, below: list[str] | None) -> str:
    """The flag cell of row `i`, marking the row when a figure is below the physical floor."""
    if not below:
        return ""
    t.flagged.add(i)
    return f"{BELOW_FLOOR} ({', '.join(below)})"


# --- the post's tables ------------------------------------------------------------------------


def quality_table(s: Summary) -> Table:
    """Per model: FID (with KID), CLIP, human and composite scores with intervals, and N."""
    q = s.get("quality") or {}
    names = _names(s)
    t = Table(
        "quality",
        "Quality (0-100; composite with its bootstrap interval)",
        [
            "Model",
            "N images",
            "FID",
            "KID ×1000",
            "FID score",
            "CLIP text",
            "CLIP score",
            "Human score (N votes)",
            "Composite [interval]",
            "Flags",
        ],
    )
    for r in q.get("models", []):
        kid = r.get("kid_mean")
        kid_s = "n/a" if kid is None else f"{1000 * kid:.2f} ± {1000 * (r.get('kid_std') or 0):.2f}"
        human = r.get("human_score")
        human_s = "no votes" if human is None else f"{human:.1f} ({r.get('human_n') or 0})"
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                str(r.get("n", "n/a")),
                fmt_num(r.get("fid"), 1),
                kid_s,
                fmt_num(r.get("fid_score")),
                fmt_num(r.get("clip_text"), 3),
                fmt_num(r.get("clip_score")),
                human_s,
                fmt_interval(r.get("composite"), r.get("composite_lo"), r.get("composite_hi")),
                _flags(r),
            ]
        )
    t.notes.extend(q.get("notes", []))
    if not q:
        t.notes.append("No scores: the scoring stage did not run or wrote no scores.parquet.")
    return t


def cost_table(s: Summary) -> Table:
    """Per model: cost per image across its providers (weighted by the images each made)."""
    c = s.get("cost") or {}
    names = _names(s)
    t = Table(
        "cost",
        "Cost per image",
        ["Model", "Pricing", "Images (N)", "Spent", "Cost per image", "Per provider"],
    )
    deps: dict[str, list[str]] = {}
    for d in c.get("deployments", []):
        deps.setdefault(d["model"], []).append(f"{d['provider']}: {fmt_usd(d['cost_per_image'])}")
    for r in c.get("models", []):
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                "API list price" if r["pricing"] == "api" else "GPU time",
                str(r["images"]),
                fmt_usd(r.get("spent_usd")),
                fmt_usd(r["cost_per_image"]),
                "; ".join(deps.get(r["model"], [])),
            ]
        )
    if c.get("formula"):
        t.notes.append(f"Formula: {c['formula']}")
        t.notes.append(
            f"Orchestration overhead {fmt_usd(c['overhead_per_image'])} per image; platform fee "
            f"{c['platform_fee_pct']:g} %."
        )
    t.notes.extend(c.get("notes", []))
    if not c:
        t.notes.append("No cost: the serving stage wrote no usage.parquet.")
    return t


def cost_deployment_table(s: Summary) -> Table:
    """Per (model, provider): the GPU time that makes up each unit cost."""
    c = s.get("cost") or {}
    names = _names(s)
    t = Table(
        "cost-deployments",
        "Cost per deployment: where the GPU time went",
        [
            "Model",
            "Provider",
            "Replicas",
            "GPU-s",
            "Busy",
            "Idle",
            "Cold-start load",
            "Images (N)",
            "$/GPU-hour",
            "Compute per image",
            "Cost per image",
            "Spent",
            "Note",
        ],
    )
    for d in c.get("deployments", []):
        api = d["pricing"] == "api"
        alive = d["alive_s"] or 0.0

        def share(v: float, alive: float = alive) -> str:
            return f"{v:,.1f} s ({100 * v / alive:.0f} %)" if alive > 0 else f"{v:,.1f} s"

        t.rows.append(
            [
                names.get(d["model"], d["model"]),
                d["provider"],
                str(d["replicas"]),
                "API" if api else f"{d['gpu_seconds']:,.1f}",
                "" if api else share(d["busy_s"]),
                "" if api else share(d["idle_s"]),
                "" if api else share(d["load_s"]),
                str(d["images"]),
                "" if api else fmt_usd(d["price_per_gpu_hour"]),
                fmt_usd(d["compute_per_image"]),
                fmt_usd(d["cost_per_image"]),
                fmt_usd(d.get("spent_usd")),
                d.get("note") or "",
            ]
        )
    return t


def price_table(s: Summary) -> Table:
    """The prices used, with the date each was read and where."""
    c = s.get("cost") or {}
    t = Table(
        "prices",
        "Prices used",
        [
            "Provider",
            "Cloud / region",
            "GPU",
            "GPUs per replica",
            "$/GPU-hour",
            "Price date",
            "Source",
            "Simulated",
        ],
    )
    for p in c.get("prices", []):
        t.rows.append(
            [
                p["provider"],
                f"{p['cloud']} / {p['region']}",
                p["gpu"],
                str(p["gpus_per_replica"]),
                fmt_usd(p["price_per_gpu_hour"]),
                p["price_date"],
                p["price_source"] or "not given",
                "yes" if p["simulated"] else "no",
            ]
        )
    for m in c.get("api_prices", []):
        t.notes.append(
            f"{m['display_name']}: {fmt_usd(m['price_per_image'])} per image (API list "
            "price, from the config)."
        )
    return t


def latency_table(s: Summary) -> Table:
    """Per model: p50/p95/p99 of end-to-end latency, cold-start share, SLO and the floor."""
    names = _names(s)
    t = Table(
        "latency",
        "Latency (end to end, from the scheduled send time; successful requests)",
        [
            "Model",
            "Requests (N)",
            "Errors",
            "p50",
            "p95",
            "p99",
            "p95 warm",
            "Cold-start share",
            "SLO",
            "Within SLO",
            "Physical floor",
            "Flag",
        ],
    )
    for i, r in enumerate(s.get("latency") or []):
        flag = _floor_flag(t, i, r.get("below_floor"))
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                str(r["n"]),
                f"{r['errors']} ({fmt_pct(r.get('error_rate'))})",
                fmt_ms(r.get("p50_ms")),
                fmt_ms(r.get("p95_ms")),
                fmt_ms(r.get("p99_ms")),
                fmt_ms(r.get("warm_p95_ms")),
                fmt_pct(r.get("cold_start_share")),
                fmt_ms(r.get("slo_ms")),
                fmt_pct(r.get("within_slo_share")),
                fmt_ms(r.get("floor_ms")),
                flag,
            ]
        )
    load = s.get("load") or {}
    if load.get("generator_warning"):
        t.notes.append(f"Load generator: {load['generator_warning']}.")
    if load.get("rejected"):
        t.notes.append(f"{load['rejected']} manifest rows were invalid and never sent.")
    if s.get("latency"):
        t.notes.append(
            "Percentiles are read from merged HdrHistograms of the successful requests; "
            "warm-up requests (sent before the clock started) are not counted. Cold-start "
            "share: successful requests served by a replica's first batch after loading."
        )
    else:
        t.notes.append("No latency: the load-test stage did not run or wrote no requests.parquet.")
    return t


def niche_table(s: Summary) -> Table:
    """Per (niche, model): composite, its parts, p95 latency, cost per image, with N."""
    names = _names(s)
    niches = {n["name"]: n["display_name"] for n in s.get("niches", [])}
    t = Table(
        "niches",
        "Per niche",
        [
            "Niche",
            "Model",
            "N images",
            "FID score",
            "CLIP score",
            "Composite [interval]",
            "p95",
            "Requests (N)",
            "Cost per image",
            "Flags",
        ],
    )
    for r in s.get("per_niche") or []:
        t.rows.append(
            [
                niches.get(r["niche"], r["niche"]),
                names.get(r["model"], r["model"]),
                "n/a" if r.get("n") is None else str(r["n"]),
                fmt_num(r.get("fid_score")),
                fmt_num(r.get("clip_score")),
                fmt_interval(r.get("composite"), r.get("composite_lo"), r.get("composite_hi")),
                fmt_ms(r.get("p95_ms")),
                str(r.get("requests", "n/a")),
                fmt_usd(r.get("cost_per_image")),
                _flags(r),
            ]
        )
    t.notes.extend((s.get("quality") or {}).get("niche_notes", []))
    t.notes.append(
        "Cost per image per niche is the model's: its GPU time is amortised evenly over every "
        "image it made, whatever the niche (per-provider figures: summary.json cost.by_niche)."
    )
    return t


def floor_table(s: Summary) -> Table:
    """Per (model, provider): floor = steps × TFLOP/step ÷ peak, beside the measured p50/p95."""
    f = s.get("floor") or {}
    names = _names(s)
    t = Table(
        "floor",
        "Physical floor",
        [
            "Model",
            "Provider",
            "GPU (peak TFLOP/s)",
            "Steps × TFLOP/step",
            "Floor",
            "p50",
            "p95",
            "Flag",
            "Note",
        ],
    )
    for i, r in enumerate(f.get("rows", [])):
        flag = _floor_flag(t, i, r.get("below"))
        tf = r.get("tflop_per_step")
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                r["provider"],
                f"{r['gpu']} ({r['peak_tflops']:g})",
                f"{r['steps']} × {'n/a' if tf is None else f'{tf:g}'}",
                fmt_ms(r.get("floor_ms")),
                fmt_ms(r.get("p50_ms")),
                fmt_ms(r.get("p95_ms")),
                flag,
                r.get("note") or "",
            ]
        )
    if f.get("formula"):
        t.notes.append(f["formula"])
    return t


def all_tables(s: Summary) -> list[Table]:
    """Every table of the report, in reading order."""
    from easel.report.availability import availability_table

    return [
        quality_table(s),
        cost_table(s),
        latency_table(s),
        niche_table(s),
        floor_table(s),
        cost_deployment_table(s),
        price_table(s),
        availability_table(s),
    ]
