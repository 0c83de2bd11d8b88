"""summary.json: every figure of the report, built from a run folder's files.

The report's tables and plots are drawn from this one structure, so the Markdown, the HTML and
the machine-readable summary can never disagree. Missing files (a stage that failed or never ran)
leave their sections empty and say so; they never stop the summary from being written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from config import EaselConfig
from easel.report.availability import availability_section
from easel.report.conditioning import (
    conditioning_disclosures,
    conditioning_section,
    read_score_meta,
    reference_set_hashes,
)
from easel.report.cost_section import cost_section
from easel.report.curves import SWEEP_PATTERNS, sweep_curve, window_curve
from easel.report.disclosures import disclosures
from easel.report.floor import FLOOR_FORMULA, floor_rows
from easel.report.goodput import goodput_section
from easel.report.models_table import model_listing
from easel.report.traffic import traffic_section
from load_tests.stats import json_safe

__all__ = ["SCHEMA_VERSION", "SWEEP_PATTERNS", "build_summary", "disclosures", "read_table"]

SCHEMA_VERSION = 2
_REQUEST_COLUMNS = ["model", "niche", "provider", "ok", "error_class", "scheduled_s", "latency_ms"]


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
        "success_rate": d.get("success_rate"),
        "success_rate_ci": d.get("success_rate_ci"),
        # All attempted requests, failures ranked beyond the deadline (None + _beyond).
        **{
            f"all_p{p}_{k}": d.get(f"latency_all_p{p}_{key}")
            for p in (50, 95, 99)
            for k, key in (("ms", "ms"), ("beyond", "beyond"), ("ci_ms", "ci_ms"))
        },
        "all_p95_ci_beyond": d.get("latency_all_p95_ci_beyond"),
        # Successful requests only: shown beside the all-requests figures, never alone.
        "p50_ms": d.get("latency_p50_ms"),
        "p95_ms": d.get("latency_p95_ms"),
        "p99_ms": d.get("latency_p99_ms"),
        "max_ms": d.get("latency_max_ms"),
        "warm_p95_ms": d.get("warm_latency_p95_ms"),
        "cold_starts": d.get("cold_starts") or 0,
        "cold_start_share": (d.get("cold_starts") or 0) / ok if ok else None,
        "within_slo_share": d.get("goodput"),
        "within_slo_ci": d.get("goodput_ci"),
        "meets_slo": d.get("meets_slo"),
    }


def _by_model(table: pa.Table, cfg: EaselConfig, column: str | None = None, value: Any = None):
    """`summarize(...).by_model` over all requests, or those where `column == value`."""
    from load_tests import summarize

    if column is not None:
        table = table.filter(pc.equal(table.column(column), value))
    return summarize(table, cfg).by_model if table.num_rows else {}


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
            **model_listing(cfg, m),
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
        "fid_na": r.get("fid_na"),
        "kid_mean": r.get("kid_mean"),
        "kid_std": r.get("kid_std"),
        "kid_subset_size": r.get("kid_subset_size"),
        "clip_text": r.get("clip_text"),
        "clipscore": r.get("clipscore"),
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
        "human_anchored": bool(r.get("human_anchored")),
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
        f"{a.human_elo_span:g} Elo across 0-100, 50 at the anchor model "
        f"({a.human_anchor_model or 'none set: human scores stay out of the composite'}). "
        f"Intervals: bootstrap over prompts and reference images ({cfg.evaluation.bootstrap} "
        "resamples; all-niche rows resample within each niche); human intervals resample "
        "raters. N images: images scored; KID beside FID."
    )
    return {
        "models": per_model,
        "notes": notes,
        "niche_notes": [f"Every row: {f}." for f in sorted(niche_common)],
        "labels": labels,
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
    score_meta = read_score_meta(run_dir)
    conditioning = conditioning_section(
        None if scores_t is None else _records(scores_t), score_meta
    )
    repro = dict(repro or {})
    if score_meta is not None:
        repro["reference_sets"] = reference_set_hashes(score_meta)

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

    cost = cost_section(cfg, usage, req)
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
                    "success_rate": lat.get("success_rate"),
                    "all_p95_ms": lat.get("all_p95_ms"),
                    "all_p95_beyond": lat.get("all_p95_beyond"),
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
        "disclosures": disclosures(cfg, scores) + conditioning_disclosures(conditioning),
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
        "conditioning": conditioning,
        "cost": cost,
        "latency": latency,
        "per_niche": per_niche,
        "floor": {"formula": FLOOR_FORMULA, "rows": [f.to_dict() for f in floors]},
        "load": _load_section(cfg, manifest, overall),
        "goodput": goodput_section(run_dir, cfg, req_t),
        "traffic": traffic_section(run_dir, req_t),
        "load_curve": sweep_curve(run_dir) or window_curve(cfg, req or []) or {},
        "availability": availability_section(run_dir),
        "repro": repro,
    }
