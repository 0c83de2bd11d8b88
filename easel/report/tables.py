"""The report's tables, built once from summary.json's figures and rendered as Markdown or HTML.

Every table carries its N, and rows with a figure below the physical floor carry a flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from easel.report.cells import (
    BEYOND,
    Summary,
    Table,
    display_names,
    fmt_interval,
    fmt_ms,
    fmt_ms_interval,
    fmt_num,
    fmt_pct,
    fmt_pct_interval,
    fmt_usd,
)
from easel.report.conditioning import identity_table
from easel.report.goodput import goodput_table
from easel.report.models_table import models_table
from easel.report.traffic import traffic_table

__all__ = [
    "BELOW_FLOOR",
    "Table",
    "all_pct",
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


def flags_cell(row: Mapping[str, Any]) -> str:
    return "; ".join(row.get("flags") or [])


def _floor_flag(t: Table, i: int, below: list[str] | None) -> str:
    """The flag cell of row `i`, marking the row when a figure is below the physical floor."""
    if not below:
        return ""
    t.flagged.add(i)
    return f"{BELOW_FLOOR} ({', '.join(below)})"


# --- the post's tables ------------------------------------------------------------------------


def quality_table(s: Summary) -> Table:
    """Per model: FID with its N and reference N (or n/a), KID, CLIP, human and composite scores
    with intervals."""
    q = s.get("quality") or {}
    names = display_names(s)
    t = Table(
        "quality",
        "Quality (0-100; composite with its bootstrap interval)",
        [
            "Model",
            "N images",
            "N ref",
            "FID",
            "KID ×1000 (subset)",
            "FID score",
            "CLIP text",
            "CLIPScore",
            "CLIP score",
            "Human score (N votes)",
            "Composite [interval]",
            "Flags",
        ],
    )
    for r in q.get("models", []):
        kid = r.get("kid_mean")
        kid_s = (
            "n/a"
            if kid is None
            else f"{1000 * kid:.2f} ± {1000 * (r.get('kid_std') or 0):.2f} "
            f"({r.get('kid_subset_size') or '?'})"
        )
        human = r.get("human_score")
        human_s = "no votes" if human is None else f"{human:.1f} ({r.get('human_n') or 0})"
        if human is not None and not r.get("human_anchored"):
            human_s += ", unanchored"
        t.rows.append(
            [
                names.get(r["model"], r["model"]),
                str(r.get("n", "n/a")),
                str(r.get("n_ref", "n/a")),
                "n/a (N too small)" if r.get("fid_na") else fmt_num(r.get("fid"), 1),
                kid_s,
                fmt_num(r.get("fid_score")),
                fmt_num(r.get("clip_text"), 3),
                fmt_num(r.get("clipscore"), 1),
                fmt_num(r.get("clip_score")),
                human_s,
                fmt_interval(r.get("composite"), r.get("composite_lo"), r.get("composite_hi")),
                flags_cell(r),
            ]
        )
    t.notes.extend(q.get("notes", []))
    if q:
        t.notes.append(
            "FID needs more images than feature dimensions in both sets (N and N ref); below that "
            "it is n/a and KID (an unbiased MMD; its subset size in brackets) is the figure to "
            "read. CLIPScore: torchmetrics' max(100 · mean image↔prompt cosine, 0)."
        )
    if not q:
        t.notes.append("No scores: the scoring stage did not run or wrote no scores.parquet.")
    return t


def cost_table(s: Summary) -> Table:
    """Per model: cost per image across its providers (weighted by the images each made)."""
    c = s.get("cost") or {}
    names = display_names(s)
    t = Table(
        "cost",
        "Cost per image",
        [
            "Model",
            "Pricing",
            "Images (N)",
            "Spent",
            "Cost per image (all held)",
            "Busy-only",
            "Idle share",
            "Per provider",
        ],
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
                fmt_usd(r.get("busy_cost_per_image")),
                "API" if r["pricing"] == "api" else fmt_pct(r.get("idle_share"), 0),
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
    names = display_names(s)
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


def all_pct(r: Mapping[str, Any], p: int, *, interval: bool = False) -> str:
    """An all-requests percentile cell: the latency, or 'beyond deadline' when it falls among
    failures; with `interval`, its distribution-free interval beside it."""
    cell = BEYOND if r.get(f"all_p{p}_beyond") else fmt_ms(r.get(f"all_p{p}_ms"))
    ci = r.get(f"all_p{p}_ci_ms")
    if interval and ci and not r.get(f"all_p{p}_beyond"):
        cell += " " + fmt_ms_interval(ci[0], ci[1], r.get(f"all_p{p}_ci_beyond"))
    return cell


def latency_table(s: Summary) -> Table:
    """Per model: success rate, p50/p95/p99 over all requests (failures beyond the deadline) with
    the p95's interval, the success-only p95 beside them, cold starts, SLO, goodput, the floor."""
    names = display_names(s)
    t = Table(
        "latency",
        "Latency (end to end, from the scheduled send time; all requests, failures beyond the "
        "deadline)",
        [
            "Model",
            "Requests (N)",
            "Success rate [CI]",
            "p50",
            "p95 [CI]",
            "p99",
            "p95 successes only",
            "p95 warm",
            "Cold-start share",
            "SLO",
            "Within SLO [CI]",
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
                fmt_pct_interval(r.get("success_rate"), r.get("success_rate_ci")),
                all_pct(r, 50),
                all_pct(r, 95, interval=True),
                all_pct(r, 99),
                fmt_ms(r.get("p95_ms")),
                fmt_ms(r.get("warm_p95_ms")),
                fmt_pct(r.get("cold_start_share")),
                fmt_ms(r.get("slo_ms")),
                fmt_pct_interval(r.get("within_slo_share"), r.get("within_slo_ci")),
                fmt_ms(r.get("floor_ms")),
                flag,
            ]
        )
    load = s.get("load") or {}
    if load.get("generator_warning"):
        t.notes.append(f"Load generator: {load['generator_warning']}.")
    if load.get("rejected"):
        t.notes.append(
            f"{load['rejected']} manifest rows were invalid and never sent (reasons under "
            "Traffic); they count for no model."
        )
    if s.get("latency"):
        t.notes.append(
            "p50, p95 and p99 rank every attempted request: a failed, timed-out or never-sent "
            f"request ranks above every success ('{BEYOND}' when the percentile falls among "
            "them), so failing fast can never shorten the tail. The success-only p95 is shown "
            "beside it, never alone. [CI]: 95 % distribution-free interval from order "
            "statistics ('…': too few requests to bound that side; '✗': among failures); "
            "success rate and within-SLO share: Wilson intervals."
        )
        t.notes.append(
            "Percentiles are read from merged HdrHistograms; warm-up requests (sent before the "
            "clock started) are not counted. Cold-start share: successful requests served by a "
            "replica's first batch after loading."
        )
    else:
        t.notes.append("No latency: the load-test stage did not run or wrote no requests.parquet.")
    return t


def niche_table(s: Summary) -> Table:
    """Per (niche, model): composite, its parts, p95 latency, cost per image, with N."""
    names = display_names(s)
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
            "Requests (N)",
            "Success rate",
            "p95 (all requests)",
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
                str(r.get("requests", "n/a")),
                fmt_pct(r.get("success_rate")),
                all_pct(r, 95),
                fmt_usd(r.get("cost_per_image")),
                flags_cell(r),
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
    names = display_names(s)
    t = Table(
        "floor",
        "Physical floor",
        [
            "Model",
            "Provider",
            "GPU (peak TFLOP/s)",
            "Steps × TFLOP/step",
            "Floor",
            "p50 (successes)",
            "p95 (successes)",
            "Success rate",
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
                fmt_pct(r.get("success_rate")),
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
        models_table(s),
        quality_table(s),
        cost_table(s),
        latency_table(s),
        goodput_table(s),
        niche_table(s),
        identity_table(s),
        floor_table(s),
        cost_deployment_table(s),
        price_table(s),
        traffic_table(s),
        availability_table(s),
    ]
