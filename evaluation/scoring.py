"""Score a run: every image through the actor pool, then per-(model, niche) and per-model tables.

`score_run` writes into the run folder:
- `scores.parquet`: one row per (model, niche) and one "all" row per model (columns in
  docs/evaluation.md),
- `image_scores.parquet`: one row per scored image (CLIP cosines, prompt tokens, errors),
- `weight_sensitivity.parquet`: the ±delta weight check per niche and overall,
- `score_meta.json`: networks and their labels, reference sets, cache hits, skipped rows,
  corrupt images, throughput.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from easel.config import EaselConfig
from evaluation.bootstrap import bootstrap_group
from evaluation.clip_score import ClipSpec, resolve_clip_spec
from evaluation.composite import clip_to_score, combine, fid_to_score, weight_sensitivity
from evaluation.features import FeatureSpec, resolve_feature_spec
from evaluation.fid import (
    FeatureStats,
    FidBootstrap,
    fid_from_moments,
    kid_from_features,
    mixture_moments,
)
from evaluation.humaneval.fit import ALL, HumanEvalResult, fit_human
from evaluation.pool import GroupStats, ImageItem, ProgressPrinter, ScorerPool, ScorerSpec
from evaluation.references import (
    ReferenceSet,
    load_cached_stats,
    reference_key,
    reference_set,
    save_cached_stats,
)
from evaluation.run_folder import load_run_config, load_run_images

__all__ = ["SCORES_FILE", "ScoreResult", "score_run"]

SCORES_FILE = "scores.parquet"


@dataclass
class ScoreResult:
    """What `score_run` wrote: per-(model, niche) rows, per-model rows, per-image rows."""

    table: pd.DataFrame
    per_model: pd.DataFrame
    images: pd.DataFrame
    sensitivity: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def scores(self) -> pd.DataFrame:
        """Both tables as written to scores.parquet."""
        return pd.concat([self.table, self.per_model], ignore_index=True)


@dataclass
class _Reference:
    refset: ReferenceSet
    key: str
    stats: FeatureStats | None = None
    cached: bool = False


def score_run(
    run_dir: str | Path,
    cfg: EaselConfig | None = None,
    *,
    progress: bool = True,
    address: str | None = None,
) -> ScoreResult:
    """Score a run folder's images and write the score files into it.

    Args:
        run_dir: run folder (manifest.parquet, requests.parquet, images/).
        cfg: config; None reads the run's own config.yaml.
        progress: print progress lines to stderr.
        address: Ray address to join when Ray is not initialised yet; None starts a local Ray
            for the duration of the call. An initialised Ray is always reused.
    """
    t0 = time.monotonic()
    run = Path(run_dir)
    cfg = cfg or load_run_config(run)
    ev = cfg.evaluation
    images = load_run_images(run)
    rows = images.rows
    feature = resolve_feature_spec(ev)
    clip = resolve_clip_spec(ev)

    refs: dict[str, _Reference] = {}
    unknown_niches: list[str] = []
    known = {n.name: n for n in cfg.niches}
    for niche in sorted(rows["niche"].unique()):
        if niche not in known:
            unknown_niches.append(niche)
            continue
        refset = reference_set(known[niche], ev)
        key = reference_key(refset, feature)
        cached = load_cached_stats(niche, key)
        refs[niche] = _Reference(refset, key, cached, cached is not None)

    records: list[dict[str, Any]] = []
    read_errors: list[dict[str, Any]] = []
    state_groups: dict[tuple[str, ...], GroupStats] = {}
    devices: list[str] = []
    # images are read lazily as the pool asks for batches: memory stays bounded
    n_items = len(rows) + sum(len(r.refset.files) for r in refs.values() if r.stats is None)
    t_pool = time.monotonic()
    if n_items:
        started = _ensure_ray(address)
        try:
            spec = ScorerSpec(feature=feature, clip=clip)
            with ScorerPool(
                spec, actors=ev.actors, num_cpus=ev.actor_num_cpus, num_gpus=ev.num_gpus
            ) as pool:
                devices = pool.devices
                printer = ProgressPrinter(n_items) if progress else None
                records = pool.score(
                    _items(rows, refs, read_errors), batch_size=ev.batch_size, progress=printer
                )
                state_groups = pool.state().groups
        finally:
            if started:
                import ray

                ray.shutdown()
    pool_s = time.monotonic() - t_pool

    for niche, ref in refs.items():
        if ref.stats is None:
            group = state_groups.get(("ref", niche))
            if group is None or group.features.n < 2:
                continue
            ref.stats = group.features
            save_cached_stats(niche, ref.key, ref.stats)

    image_df = _image_table(rows, records, read_errors)
    human = fit_human(run, cfg) if (run / "humaneval" / "votes.sqlite").is_file() else None
    ctx = _Context(cfg, feature, clip, refs, human)
    pairs = sorted(set(zip(rows["model"], rows["niche"], strict=True)))
    table = pd.DataFrame(
        [
            _row(ctx, m, n, state_groups.get(("gen", m, n)) or _empty(feature.dim), image_df)
            for m, n in pairs
        ]
    )
    per_model = pd.DataFrame(
        [_model_row(ctx, m, state_groups, image_df) for m in sorted(rows["model"].unique())]
    )
    for extra in unknown_niches:
        print(f"easel score: niche {extra!r} is not in the config: no reference set, no FID")
    scores = pd.concat([table, per_model], ignore_index=True)
    sens = (
        weight_sensitivity(scores[scores["composite"].notna()], ev.weights, ev.sensitivity_delta)
        if not scores.empty
        else pd.DataFrame()
    )
    meta = {
        "feature_net": {
            "label": feature.label,
            "key": feature.key,
            "comparable": feature.comparable,
            "resize_policy": feature.resize_policy,
        },
        "clip": {"label": clip.label, "key": clip.key, "comparable": clip.comparable},
        "references": {
            n: {
                "label": r.refset.label,
                "synthetic": r.refset.synthetic,
                "key": r.key,
                "cached": r.cached,
                "n": r.stats.n if r.stats else 0,
                "folder": r.refset.folder,
            }
            for n, r in refs.items()
        },
        "unknown_niches": unknown_niches,
        "skipped": images.skipped,
        "missing_images": images.missing,
        "errors": [
            {"job_id": e["job_id"], "error": e["error"]}
            for e in image_df.to_dict("records")
            if isinstance(e["error"], str)
        ],
        "images_scored": int(image_df["ok"].sum()) if not image_df.empty else 0,
        "items_sent": n_items,
        "pool_seconds": pool_s,
        "images_per_second": n_items / pool_s if n_items and pool_s > 0 else None,
        "actors": ev.actors,
        "devices": devices,
        "human_votes": human.n_votes if human else 0,
        "ranking_stable": bool(sens["same_ranking"].all()) if not sens.empty else None,
        "seconds": time.monotonic() - t0,
    }
    scores.to_parquet(run / SCORES_FILE, index=False)
    image_df.to_parquet(run / "image_scores.parquet", index=False)
    sens.to_parquet(run / "weight_sensitivity.parquet", index=False)
    (run / "score_meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return ScoreResult(table, per_model, image_df, sens, meta, run / SCORES_FILE)


# --- items in -----------------------------------------------------------------------------------


def _items(
    rows: pd.DataFrame, refs: dict[str, _Reference], errors: list[dict[str, Any]]
) -> Iterator[ImageItem]:
    for niche, ref in refs.items():
        if ref.stats is None:
            for path in ref.refset.files:
                yield ImageItem(
                    item_id=Path(path).name, group=("ref", niche), data=Path(path).read_bytes()
                )
    for r in rows.itertuples(index=False):
        try:
            data = Path(r.path).read_bytes()
        except OSError as exc:
            errors.append({"item_id": r.job_id, "error": f"unreadable image: {exc}"})
            continue
        reference = None
        if isinstance(r.reference_image, bytes | bytearray):
            reference = bytes(r.reference_image)
        elif isinstance(r.reference_image, str) and r.reference_image:
            try:
                reference = base64.b64decode(r.reference_image, validate=True)
            except (binascii.Error, ValueError):
                errors.append({"item_id": r.job_id, "error": "reference_image is not base64"})
        yield ImageItem(
            item_id=r.job_id,
            group=("gen", r.model, r.niche),
            data=data,
            prompt=r.prompt,
            reference=reference,
        )


def _image_table(
    rows: pd.DataFrame, records: list[dict[str, Any]], read_errors: list[dict[str, Any]]
) -> pd.DataFrame:
    rec = pd.DataFrame([r for r in records if r["group"][0] == "gen"])
    cols = [
        "job_id",
        "model",
        "niche",
        "prompt",
        "ok",
        "error",
        "clip_text",
        "clip_ref",
        "prompt_tokens",
        "prompt_truncated",
    ]
    if rec.empty:
        rec = pd.DataFrame(
            columns=[
                "item_id",
                "ok",
                "error",
                "clip_text",
                "clip_ref",
                "prompt_tokens",
                "prompt_truncated",
            ]
        )
    rec = rec.rename(columns={"item_id": "job_id"}).drop(columns=["group"], errors="ignore")
    base = rows[["job_id", "model", "niche", "prompt"]]
    out = base.merge(rec, on="job_id", how="left")
    read = {e["item_id"]: e["error"] for e in read_errors}
    out["ok"] = out["ok"].astype("boolean").fillna(False)
    # reference-decoding errors leave the image scored; file-read errors leave it unscored
    out["error"] = [
        "; ".join(x for x in (err, read.get(j)) if isinstance(x, str)) or None
        for j, err in zip(out["job_id"], out["error"], strict=True)
    ]
    return out[cols]


# --- rows out -----------------------------------------------------------------------------------


@dataclass
class _Context:
    cfg: EaselConfig
    feature: FeatureSpec
    clip: ClipSpec
    refs: dict[str, _Reference]
    human: HumanEvalResult | None


def _empty(dim: int) -> GroupStats:
    return GroupStats(FeatureStats(dim))


def _row(ctx: _Context, model: str, niche: str, g: GroupStats, images: pd.DataFrame) -> dict:
    ref = ctx.refs.get(niche)
    ref_stats = ref.stats if ref else None
    mine = images[(images["model"] == model) & (images["niche"] == niche)]
    moments = ref_stats.moments() if ref_stats is not None and ref_stats.n >= 2 else None
    ref_feats = ref_stats.features if ref_stats is not None else None
    labels = {
        "reference": ref.refset.label if ref else "none (niche not in config)",
        "reference_synthetic": bool(ref.refset.synthetic) if ref else None,
    }
    return _assemble(
        ctx,
        model,
        niche,
        g,
        mine,
        moments,
        ref_feats,
        ref_stats.n if ref_stats else 0,
        labels,
        scope=niche,
    )


def _model_row(
    ctx: _Context, model: str, groups: dict[tuple[str, ...], GroupStats], images: pd.DataFrame
) -> dict:
    parts = {k[2]: g for k, g in groups.items() if k[0] == "gen" and k[1] == model}
    merged = _empty(ctx.feature.dim)
    for g in parts.values():
        merged = merged.merge(g)
    mix = [
        (g.features.n, ctx.refs[n].stats)
        for n, g in parts.items()
        if n in ctx.refs and ctx.refs[n].stats is not None and g.features.n > 0
    ]
    moments = mixture_moments(mix) if mix else None  # type: ignore[arg-type]
    ref_feats = np.concatenate([s.features for _, s in mix]) if mix else None  # type: ignore[union-attr]
    synthetic = {ctx.refs[n].refset.synthetic for n in parts if n in ctx.refs}
    labels = {
        "reference": "mixture of niche references weighted by the model's niche mix",
        "reference_synthetic": True in synthetic if synthetic else None,
    }
    mine = images[images["model"] == model]
    n_ref = sum(s.n for _, s in mix)  # type: ignore[union-attr]
    return _assemble(ctx, model, ALL, merged, mine, moments, ref_feats, n_ref, labels, scope=ALL)


def _assemble(
    ctx: _Context,
    model: str,
    niche: str,
    g: GroupStats,
    mine: pd.DataFrame,
    moments: tuple[np.ndarray, np.ndarray] | None,
    ref_feats: np.ndarray | None,
    n_ref: int,
    labels: dict[str, Any],
    *,
    scope: str,
) -> dict:
    ev = ctx.cfg.evaluation
    f = g.features
    flags: list[str] = []
    fid = kid_mean = kid_std = None
    fid_flag = None
    seed = ctx.cfg.seed + int(hashlib.sha256(f"{model}/{niche}".encode()).hexdigest()[:8], 16)
    if moments is None:
        flags.append("no reference statistics: no FID/KID")
    elif f.n < 2:
        flags.append(f"N={f.n}: FID/KID need at least 2 images")
    else:
        fid = fid_from_moments(*f.moments(), *moments)
        kid_mean, kid_std = kid_from_features(
            f.features, ref_feats, subsets=ev.kid_subsets, subset_size=ev.kid_subset_size, seed=seed
        )
        if f.n < ev.min_fid_n:
            fid_flag = f"N={f.n} below min_fid_n={ev.min_fid_n}: FID is biased at small N; read KID"
    c = g.clip
    clip_score = clip_to_score(c.text_mean, c.ref_mean, ev.anchors, ev.clip_ref_share)
    fid_score = float(fid_to_score(fid, ev.anchors)) if fid is not None else None
    human_row = _human(ctx.human, scope, model)
    human_score = human_row["human_score_0_100"] if human_row else None
    composite, used = combine(
        {"fid": fid_score, "clip": clip_score, "human": human_score}, ev.weights
    )
    if human_row is None:
        flags.append("no human votes: composite over " + "+".join(used) + " (weights renormalised)")
    if c.truncated:
        flags.append(f"{c.truncated} prompts longer than CLIP's context were truncated for CLIP")
    n_errors = int((~mine["ok"].astype(bool)).sum())
    if n_errors:
        flags.append(f"{n_errors} images unreadable or corrupt: skipped")
    if not ctx.feature.comparable:
        flags.append("feature net not comparable to published FID")
    if not ctx.clip.comparable:
        flags.append("tiny random-weight CLIP: not comparable to published CLIP scores")
    if labels.get("reference_synthetic"):
        flags.append("synthetic reference set")
    if fid_flag:
        flags.append(fid_flag)

    # bootstrap inputs in feature-row order (features are kept sorted by job id)
    by_job = mine[mine["ok"].astype(bool)].set_index("job_id")
    ids = [i for i in f.ids if i in by_job.index]
    pos = {k: i for i, k in enumerate(f.ids)}
    prompt_key = (by_job["niche"] + "\x1f" + by_job["prompt"]).to_dict()
    draws = ctx.human.draws.get(scope, {}).get(model) if ctx.human and human_row else None
    interval = bootstrap_group(
        prompts=[prompt_key[i] for i in ids],
        features=f.features[[pos[i] for i in ids]] if ids else None,
        ref=FidBootstrap(*moments) if moments is not None and fid is not None else None,
        clip_text=[_opt(by_job.at[i, "clip_text"]) for i in ids],
        clip_ref=[_opt(by_job.at[i, "clip_ref"]) for i in ids],
        human_draws=draws,
        components=used,
        point={"fid": fid_score, "clip": clip_score, "composite": composite},
        cfg=ev,
        seed=seed,
    )
    return {
        "model": model,
        "niche": niche,
        "scope": "model" if scope == ALL else "niche",
        "n": f.n,
        "n_ref": n_ref,
        "n_errors": n_errors,
        "fid": fid,
        "fid_flag": fid_flag,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "clip_text": c.text_mean,
        "clip_text_n": c.text_n,
        "clip_ref": c.ref_mean,
        "clip_ref_n": c.ref_n,
        "prompts_truncated": c.truncated,
        "fid_score_0_100": fid_score,
        "fid_score_lo": interval.fid_score[0] if interval.fid_score else None,
        "fid_score_hi": interval.fid_score[1] if interval.fid_score else None,
        "clip_score_0_100": clip_score,
        "clip_score_lo": interval.clip_score[0] if interval.clip_score else None,
        "clip_score_hi": interval.clip_score[1] if interval.clip_score else None,
        "human_score_0_100": human_score,
        "human_lo": human_row["human_lo"] if human_row else None,
        "human_hi": human_row["human_hi"] if human_row else None,
        "human_n_votes": human_row["n_votes"] if human_row else 0,
        "composite": composite,
        "composite_lo": interval.composite[0] if interval.composite else None,
        "composite_hi": interval.composite[1] if interval.composite else None,
        "composite_components": "+".join(used),
        "composite_n_boot": interval.n,
        "feature_net": ctx.feature.label,
        "clip_model": ctx.clip.label,
        "reference": labels["reference"],
        "reference_synthetic": labels["reference_synthetic"],
        "flags": "; ".join(flags),
    }


def _human(human: HumanEvalResult | None, scope: str, model: str) -> dict | None:
    if human is None or human.scores.empty:
        return None
    hit = human.scores[(human.scores["scope"] == scope) & (human.scores["model"] == model)]
    return hit.iloc[0].to_dict() if len(hit) else None


def _opt(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _ensure_ray(address: str | None) -> bool:
    """Start (or join) Ray unless it is up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    return True
