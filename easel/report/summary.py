"""summary.json: every figure of the report, built from a run folder's files.

The report's tables and plots are drawn from this one structure, so the Markdown, the HTML and
the machine-readable summary can never disagree. Missing files (a stage that failed or never ran)
leave their sections empty and say so; they never stop the summary from being written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from config import EaselConfig
from easel.cost import COST_FORMULA, deployment_costs, model_costs, niche_costs, spent_usd
from easel.report.availability import availability_section
from easel.report.floor import FLOOR_FORMULA, floor_rows
from load_tests.stats import json_safe

__all__ = ["SCHEMA_VERSION", "SWEEP_PATTERNS", "build_summary", "disclosures", "read_table"]

SCHEMA_VERSION = 1
_REQUEST_COLUMNS = ["model", "niche", "provider", "ok", "scheduled_s", "latency_ms"]
# Patterns whose offered load changes over the run: their latency-against-load curve is plotted.
SWEEP_PATTERNS = ("ramp", "diurnal", "burst")


def read_table(run_dir: Path, name: str) -> pa.Table | None:
    """`<run_dir>/<name>.parquet`, or None when the stage that writes it did not."""
    path = Path(run_dir) / f"{name}.parquet"
    return pq.read_table(path) if path.is_file() else None


def _records(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: json_safe(v) for k, v in row.items()} for row in table.to_pylist()]


def _latency_stats(d: Mapping[str, Any] | None) -> dict[str, Any]:
    """The report's latency keys from one `load_tests.summarize` entry (merged HdrHistograms)."""
    d = d or {}
    n, ok = d.get("n") or 0, d.get("ok") or 0
    return {
        "n": n,
        "ok": ok,
        "errors": n - ok,
        "errors_by_class": d.get("errors") or {},
        "error_rate": d.get("error_rate"),
        "p50_ms": d.get("latency_p50_ms"),
        "p95_ms": d.get("latency_p95_ms"),
        "p99_ms": d.get("latency_p99_ms"),
        "max_ms": d.get("latency_max_ms"),
        "warm_p95_ms": d.get("warm_latency_p95_ms"),
        "cold_starts": d.get("cold_starts") or 0,
        "cold_start_share": (d.get("cold_starts") or 0) / ok if ok else None,
        "within_slo_share": d.get("goodput"),
        "meets_slo": d.get("meets_slo"),
    }


def _by_model(table: pa.Table, cfg: EaselConfig, column: str | None = None, value: Any = None):
    """`summarize(...).by_model` over all requests, or those where `column == value`."""
    from load_tests import summarize

    if column is not None:
        table = table.filter(pc.equal(table.column(column), value))
    return summarize(table, cfg).by_model if table.num_rows else {}


# --- what was simulated or tiny ---------------------------------------------------------------


def disclosures(cfg: EaselConfig, scores: list[dict[str, Any]] | None = None) -> list[str]:
    """Plain statements, for the top of the report, of everything simulated, tiny or flagged."""
    out: list[str] = []
    sim = [p.name for p in cfg.providers if p.simulated]
    if sim:
        every = "All" if len(sim) == len(cfg.providers) else f"{len(sim)} of {len(cfg.providers)}"
        out.append(
            f"{every} providers are SIMULATED ({', '.join(sim)}): Ray resources on the machine "
            "that ran the benchmark, not cloud GPUs. Their prices are the configured per-GPU-hour "
            "list prices (dated below), applied to the local replicas' wall time."
        )
    tiny = [m for m in cfg.models if m.tiny_recipe is not None]
    if tiny:
        out.append(
            f"{len(tiny)} open model(s) are TINY random-weight builds of the real diffusers "
            f"pipeline classes ({', '.join(m.display_name for m in tiny)}): their images are "
            "noise, so their quality scores say nothing about the real models, and their latency "
            "and cost are those of the tiny builds, not comparable to published figures."
        )
    cpu = [m for m in cfg.models if m.backend == "diffusers" and m.num_gpus == 0]
    if cpu:
        out.append(
            f"{len(cpu)} self-hosted model(s) ran on CPU (num_gpus = 0) and are priced as if each "
            "replica held its provider's GPUs for the same wall time."
        )
    api = [m for m in cfg.models if m.api is not None and m.api.simulated is not None]
    if api:
        out.append(
            f"{len(api)} closed model(s) are SIMULATED vendor APIs "
            f"({', '.join(m.display_name for m in api)}): local HTTP servers with configured "
            "latency and failure rates; the real client code calls them. Their cost is the "
            "configured price per image."
        )
    synth = [n.display_name for n in cfg.niches if n.reference_dir is None]
    if synth:
        out.append(
            f"Reference images are SYNTHETIC for {len(synth)} niche(s) ({', '.join(synth)}): "
            "generated locally, not curated photographs."
        )
    if cfg.evaluation.feature_weights is None:
        out.append(
            "FID/KID use a small local feature network, not Inception-v3: not comparable to "
            "published FID."
        )
    if cfg.evaluation.clip_weights is None:
        out.append("CLIP scores use a small local CLIP, not a pretrained one.")
    if scores is not None:
        if scores and all(r.get("human_score") is None for r in scores):
            out.append(
                "No human votes: the composite is computed over FID and CLIP only and flagged."
            )
        if any(r.get("fid_flag") for r in scores):
            out.append(
                f"FID at N < {cfg.evaluation.min_fid_n} images is biased upwards; KID is shown "
                "beside it and such figures are flagged."
            )
    return out


# --- sections ---------------------------------------------------------------------------------


def _model_meta(cfg: EaselConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": m.name,
            "display_name": m.display_name,
            "kind": m.kind,
            "backend": m.backend,
            "pipeline": m.pipeline,
            "weights": m.weights,
            "tiny": m.tiny_recipe is not None,
            "simulated_api": m.api is not None and m.api.simulated is not None,
            "providers": list(m.providers),
            "steps": m.steps.default,
            "slo_ms": m.slo_ms,
            "tflop_per_step": m.tflop_per_step,
            "price_per_image": m.price_per_image,
        }
        for m in cfg.models
    ]


def _score_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One scores.parquet row (evaluation's columns) under the report's names."""
    flags = r.get("flags") or []
    if isinstance(flags, str):
        # Flags come joined with "; "; the FID flag may hold "; " itself, and it is also its own
        # column, so it is taken out whole before splitting the rest.
        fid_flag = r.get("fid_flag")
        rest = flags.replace(fid_flag, "") if fid_flag else flags
        flags = [f for f in rest.split("; ") if f.strip()]
        if fid_flag and fid_flag in r["flags"]:
            flags.append(fid_flag)
    return {
        "model": r["model"],
        "niche": None if r.get("scope") == "model" else r.get("niche"),
        "n": r.get("n"),
        "n_ref": r.get("n_ref"),
        "fid": r.get("fid"),
        "fid_flag": r.get("fid_flag"),
        "kid_mean": r.get("kid_mean"),
        "kid_std": r.get("kid_std"),
        "clip_text": r.get("clip_text"),
        "clip_ref": r.get("clip_ref"),
        "fid_score": r.get("fid_score_0_100"),
        "fid_score_lo": r.get("fid_score_lo"),
        "fid_score_hi": r.get("fid_score_hi"),
        "clip_score": r.get("clip_score_0_100"),
        "clip_score_lo": r.get("clip_score_lo"),
        "clip_score_hi": r.get("clip_score_hi"),
        "human_score": r.get("human_score_0_100"),
        "human_lo": r.get("human_lo"),
        "human_hi": r.get("human_hi"),
        "human_n": r.get("human_n_votes") or 0,
        "composite": r.get("composite"),
        "composite_lo": r.get("composite_lo"),
        "composite_hi": r.get("composite_hi"),
        "composite_components": r.get("composite_components"),
        "feature_net": r.get("feature_net"),
        "clip_net": r.get("clip_model"),
        "reference": r.get("reference"),
        "reference_synthetic": r.get("reference_synthetic"),
        "flags": flags,
    }


def _strip_common(rows: list[dict[str, Any]]) -> set[str]:
    """Remove the flags every row carries from each row; return them."""
    common = set.intersection(*(set(r["flags"]) for r in rows)) if rows else set()
    for r in rows:
        r["flags"] = [f for f in r["flags"] if f not in common]
    return common


def _quality(cfg: EaselConfig, scores: list[dict[str, Any]] | None) -> dict[str, Any]:
    if scores is None:
        return {}
    order = {m.name: i for i, m in enumerate(cfg.models)}
    per_model = sorted(
        (r for r in scores if r["niche"] is None), key=lambda r: order.get(r["model"], 99)
    )
    notes = []
    # Flags every row of a table carries are said once, under it; rows keep their own.
    niche_rows = [r for r in scores if r["niche"] is not None]
    common = _strip_common(per_model)
    niche_common = _strip_common(niche_rows)
    labels = {
        k: next((r[k] for r in scores if r.get(k)), None) for k in ("feature_net", "clip_net")
    }
    if labels["feature_net"]:
        notes.append(f"FID/KID feature network: {labels['feature_net']}.")
    if labels["clip_net"]:
        notes.append(f"CLIP model: {labels['clip_net']}.")
    notes += [f"Every row: {f}." for f in sorted(common)]
    w = cfg.evaluation.weights
    a = cfg.evaluation.anchors
    notes.append(
        f"composite = {w['fid']:g}·FID score + {w['clip']:g}·CLIP score + {w['human']:g}·human "
        "score over the components that exist (weights renormalised; a row says which it used). "
        f"Anchored 0-100 mappings: FID {a.fid_best:g} → 100 and {a.fid_worst:g} → 0; CLIP cosine "
        f"{a.clip_worst:g} → 0 and {a.clip_best:g} → 100; human: Bradley-Terry strength, "
        f"{a.human_elo_span:g} Elo across 0-100. Intervals: bootstrap over prompts "
        f"({cfg.evaluation.bootstrap} resamples). N images: images scored; KID beside FID."
    )
    return {
        "models": per_model,
        "notes": notes,
        "niche_notes": [f"Every row: {f}." for f in sorted(niche_common)],
        "labels": labels,
    }


def _cost(
    cfg: EaselConfig, usage: list[dict[str, Any]] | None, req: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if usage is None:
        return {}
    deps = deployment_costs(cfg, usage)
    per_model = model_costs(deps)
    niche_images: dict[tuple[str, str, str], int] = {}
    for r in req or []:
        if r.get("ok"):
            key = (r["model"], r["niche"], r.get("provider") or "")
            niche_images[key] = niche_images.get(key, 0) + 1
    images: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    for d in deps:
        images[d.model] += d.images
        spent[d.model] += spent_usd(d)
    return {
        "formula": COST_FORMULA,
        "overhead_per_image": cfg.cost.orchestration_overhead_per_image,
        "platform_fee_pct": cfg.cost.platform_fee_pct,
        "prices": [
            {
                "provider": p.name,
                "cloud": p.cloud,
                "region": p.region,
                "gpu": p.gpu,
                "gpus_per_replica": p.gpus_per_replica,
                "price_per_gpu_hour": p.price_per_gpu_hour,
                "price_date": p.price_date.isoformat(),
                "price_source": p.price_source,
                "simulated": p.simulated,
            }
            for p in cfg.providers
        ],
        "api_prices": [
            {"model": m.name, "display_name": m.display_name, "price_per_image": m.price_per_image}
            for m in cfg.models
            if m.backend == "http_api"
        ],
        "models": [
            {
                "model": m.name,
                "pricing": "api" if m.backend == "http_api" else "gpu",
                "images": images[m.name],
                "spent_usd": spent[m.name],
                "cost_per_image": per_model.get(m.name),
            }
            for m in cfg.models
        ],
        "deployments": [{**d.to_dict(), "spent_usd": spent_usd(d)} for d in deps],
        "by_niche": [c.to_dict() for c in niche_costs(deps, niche_images)],
        "notes": [
            "A model's cost per image is everything its deployments cost (idle ones included) "
            "over every image they made.",
            "Images (N) are the images the replicas made, warm-up requests included.",
        ],
    }


def _sweep_curve(run_dir: Path) -> dict[str, Any] | None:
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


def _window_curve(cfg: EaselConfig, req: list[dict[str, Any]]) -> dict[str, Any] | None:
    """p95 per model against offered load in time windows, for patterns that vary the load."""
    if cfg.traffic.pattern not in SWEEP_PATTERNS or not req:
        return None
    sched = np.asarray([r["scheduled_s"] for r in req if r.get("scheduled_s") is not None], float)
    if len(sched) < 20:
        return None
    span = float(sched.max() - sched.min()) or 1.0
    width = max(span / 12.0, 1.0)
    start = float(sched.min())
    offered = np.bincount(((sched - start) // width).astype(int)) / width
    per_bin: dict[str, dict[int, list[float]]] = {}
    for r in req:
        if r.get("ok") and r.get("scheduled_s") is not None:
            b = int((r["scheduled_s"] - start) // width)
            per_bin.setdefault(r["model"], {}).setdefault(b, []).append(r["latency_ms"])
    curves = {}
    for model, bins in per_bin.items():
        # Exact order statistics of the few requests in each window (no histogram needed).
        pts = [
            [float(offered[b]), float(np.percentile(v, 95))]
            for b, v in sorted(bins.items())
            if len(v) >= 3
        ]
        if len(pts) >= 2:
            curves[model] = pts
    return {
        "source": f"{width:.0f}-s windows of this run's {cfg.traffic.pattern} arrivals",
        "curves": curves,
    }


def _load_section(
    cfg: EaselConfig, manifest: pa.Table | None, overall: Any | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pattern": cfg.traffic.pattern,
        "configured_rate": cfg.traffic.rate,
        "jobs": None if manifest is None else manifest.num_rows,
    }
    if overall is not None:
        g = overall.generator
        out.update(
            offered_rate=g.get("offered_rps"),
            achieved_rate=g.get("achieved_rps"),
            send_lag_p50_ms=g.get("send_lag_p50_ms"),
            send_lag_p99_ms=g.get("send_lag_p99_ms"),
            client_overload=g.get("client_overload"),
            generator_warning=g.get("warning"),
            rejected=overall.overall.get("rejected"),
            window_s=overall.overall.get("window_s"),
        )
    return out


def build_summary(
    run_dir: str | Path,
    cfg: EaselConfig,
    *,
    run: Mapping[str, Any] | None = None,
    repro: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every figure of the report from the files in `run_dir`.

    Args:
        run_dir: the run folder (requests.parquet, usage.parquet, scores.parquet, manifest).
        cfg: the run's resolved config.
        run: how the run went (status, stages, wall time), from `easel bench`.
        repro: the reproducibility block (`collect_repro`), recorded when the run happened.
    """
    run_dir = Path(run_dir)
    manifest = read_table(run_dir, "manifest")
    req_t = read_table(run_dir, "requests")
    usage_t = read_table(run_dir, "usage")
    scores_t = read_table(run_dir, "scores")
    # Only the columns the report needs, as Python rows (the latency itself is summarised by
    # load_tests from the table, in batches).
    req = None if req_t is None else _records(req_t.select(_REQUEST_COLUMNS))
    usage = None if usage_t is None else _records(usage_t)
    scores = None if scores_t is None else [_score_row(r) for r in _records(scores_t)]

    # Latency from merged histograms: per model, per (model, provider) for the floor, per niche.
    latency: list[dict[str, Any]] = []
    overall = None
    per_mp: dict[tuple[str, str], dict[str, Any]] = {}
    per_mn: dict[tuple[str, str], dict[str, Any]] = {}
    if req_t is not None and req_t.num_rows:
        from load_tests import summarize

        overall = summarize(req_t, cfg)
        for p in cfg.providers:
            for model, d in _by_model(req_t, cfg, "provider", p.name).items():
                per_mp[(model, p.name)] = _latency_stats(d)
        for n in cfg.niches:
            for model, d in _by_model(req_t, cfg, "niche", n.name).items():
                per_mn[(model, n.name)] = _latency_stats(d)
    floors = floor_rows(cfg, per_mp)
    if overall is not None:
        for m in cfg.models:
            stats = _latency_stats(overall.by_model.get(m.name))
            mf = [f.floor_ms for f in floors if f.model == m.name and f.floor_ms is not None]
            floor_ms = min(mf) if mf else None
            below = [
                k
                for k in ("p50", "p95")
                if floor_ms is not None
                and stats[f"{k}_ms"] is not None
                and stats[f"{k}_ms"] < floor_ms
            ]
            latency.append(
                {
                    "model": m.name,
                    **stats,
                    "slo_ms": m.slo_ms,
                    "floor_ms": floor_ms,
                    "below_floor": below,
                }
            )

    cost = _cost(cfg, usage, req)
    model_unit = {r["model"]: r["cost_per_image"] for r in cost.get("models", [])}
    quality = _quality(cfg, scores)

    # Per niche: scores, latency and cost side by side.
    per_niche: list[dict[str, Any]] = []
    score_niche = {(r["model"], r["niche"]): r for r in scores or [] if r.get("niche") is not None}
    for n in cfg.niches:
        for m in cfg.models:
            s = score_niche.get((m.name, n.name), {})
            lat = per_mn.get((m.name, n.name), {})
            per_niche.append(
                {
                    "niche": n.name,
                    "model": m.name,
                    "n": s.get("n"),
                    "fid": s.get("fid"),
                    "kid_mean": s.get("kid_mean"),
                    "fid_score": s.get("fid_score"),
                    "clip_text": s.get("clip_text"),
                    "clip_score": s.get("clip_score"),
                    "human_score": s.get("human_score"),
                    "composite": s.get("composite"),
                    "composite_lo": s.get("composite_lo"),
                    "composite_hi": s.get("composite_hi"),
                    "flags": s.get("flags") or [],
                    "requests": lat.get("n", 0),
                    "p95_ms": lat.get("p95_ms"),
                    # GPU time is amortised evenly over a model's images, whatever the niche.
                    "cost_per_image": model_unit.get(m.name),
                }
            )

    ok = sum(1 for r in req or [] if r.get("ok"))
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {"name": cfg.name, "description": cfg.description, "hash": cfg.digest()},
        "run": dict(run or {}),
        "disclosures": disclosures(cfg, scores),
        "models": _model_meta(cfg),
        "niches": [
            {"name": n.name, "display_name": n.display_name, "synthetic": n.reference_dir is None}
            for n in cfg.niches
        ],
        "counts": {
            "jobs": None if manifest is None else manifest.num_rows,
            "requests": None if req is None else len(req),
            "ok": None if req is None else ok,
            "errors": None if req is None else len(req) - ok,
            "replicas": None if usage is None else len(usage),
            "models": len(cfg.models),
            "niches": len(cfg.niches),
            "providers": len(cfg.providers),
        },
        "files": {
            name: (run_dir / f"{name}.parquet").is_file()
            for name in ("manifest", "requests", "usage", "scores")
        },
        "quality": quality,
        "cost": cost,
        "latency": latency,
        "per_niche": per_niche,
        "floor": {"formula": FLOOR_FORMULA, "rows": [f.to_dict() for f in floors]},
        "load": _load_section(cfg, manifest, overall),
        "load_curve": _sweep_curve(run_dir) or _window_curve(cfg, req or []) or {},
        "availability": availability_section(run_dir),
        "repro": dict(repro or {}),
    }
