"""Score rows from merged statistics: one per (model, niche) and one per model over all niches.

Each row carries FID/KID against the niche's reference statistics (for a model's "all" row, the
references mixed in the model's own niche proportions), CLIP means and torchmetrics' CLIPScore,
the human score when there are votes, the anchored 0-100 scores, the composite with bootstrap
intervals over prompts and references, and flags saying what a reader must know.

Rules a row follows (each flagged where it applies):
- FID only where both the images and every reference set it uses outnumber the feature
  dimensions; otherwise FID is n/a (a rank-deficient covariance makes it mostly bias) and KID,
  unbiased at small N, is what the row shows. The reference N sits beside every FID.
- KID's subset size is the configured one unless a set is smaller; then the size used is stated.
- A human score enters the composite only when anchored to a named model with votes in the
  scope; a score relative to the run's mean model would rise for everyone when a weak model
  joins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from config import EaselConfig
from evaluation.bootstrap import References, bootstrap_group
from evaluation.clip_score import ClipSpec
from evaluation.composite import clip_to_score, combine, fid_to_score
from evaluation.features import FeatureSpec
from evaluation.fid import (
    FeatureStats,
    fid_defined,
    fid_from_moments,
    kid_from_features,
    mixture_moments,
)
from evaluation.humaneval.fit import ALL, HumanEvalResult
from evaluation.pool import GroupStats
from evaluation.references import ReferenceSet

__all__ = [
    "FLAG_SEP",
    "Reference",
    "TableContext",
    "empty_group",
    "model_row",
    "niche_row",
    "split_flags",
]

# scores.parquet keeps a row's flags as one string joined with FLAG_SEP; readers split on it, so
# no flag may hold it (`_join_flags` makes sure).
FLAG_SEP = "; "


@dataclass
class Reference:
    """A niche's reference set, its cache key, its statistics (once known), and a cache hit."""

    refset: ReferenceSet
    key: str
    stats: FeatureStats | None = None
    cached: bool = False


@dataclass
class TableContext:
    """What every row needs: the config, the networks, the references, the human fit (or None)."""

    cfg: EaselConfig
    feature: FeatureSpec
    clip: ClipSpec
    refs: dict[str, Reference]
    human: HumanEvalResult | None


def empty_group(dim: int) -> GroupStats:
    """Statistics of a group with no decoded image."""
    return GroupStats(FeatureStats(dim))


def niche_row(
    ctx: TableContext, model: str, niche: str, g: GroupStats, images: pd.DataFrame
) -> dict:
    """The row of one (model, niche) group; `images` is the per-image table of the run."""
    ref = ctx.refs.get(niche)
    ref_stats = ref.stats if ref else None
    mine = images[(images["model"] == model) & (images["niche"] == niche)]
    usable = ref_stats is not None and ref_stats.n >= 2
    labels = {
        "reference": ref.refset.label if ref else "none (niche not in config)",
        "reference_synthetic": bool(ref.refset.synthetic) if ref else None,
    }
    refs = References({niche: ref_stats.features}, {niche: 1.0}) if usable else None  # type: ignore[union-attr]
    return _assemble(
        ctx,
        model,
        niche,
        g,
        mine,
        ref_stats.moments() if usable else None,  # type: ignore[union-attr]
        refs,
        ref_stats.n if ref_stats else 0,
        labels,
        scope=niche,
    )


def model_row(
    ctx: TableContext, model: str, groups: dict[tuple[str, ...], GroupStats], images: pd.DataFrame
) -> dict:
    """A model's row over all niches, against its niche-mix-weighted reference mixture."""
    parts = {k[2]: g for k, g in groups.items() if k[0] == "gen" and k[1] == model}
    merged = empty_group(ctx.feature.dim)
    for g in parts.values():
        merged = merged.merge(g)
    mix = {
        n: (g.features.n, ctx.refs[n].stats)
        for n, g in parts.items()
        if n in ctx.refs and ctx.refs[n].stats is not None and g.features.n > 0
    }
    moments = mixture_moments(list(mix.values())) if mix else None  # type: ignore[arg-type]
    refs = (
        References(
            {n: s.features for n, (_, s) in mix.items()},  # type: ignore[union-attr]
            {n: float(w) for n, (w, _) in mix.items()},
        )
        if mix
        else None
    )
    synthetic = {ctx.refs[n].refset.synthetic for n in parts if n in ctx.refs}
    labels = {
        "reference": "mixture of niche references weighted by the model's niche mix",
        "reference_synthetic": True in synthetic if synthetic else None,
    }
    mine = images[images["model"] == model]
    n_ref = sum(s.n for _, s in mix.values())  # type: ignore[union-attr]
    return _assemble(ctx, model, ALL, merged, mine, moments, refs, n_ref, labels, scope=ALL)


def _fid_gate(n: int, refs: References | None, dim: int) -> str | None:
    """Why FID is n/a for these sets (None when it is defined): every set must exceed dim."""
    sizes = {k: len(v) for k, v in (refs.features.items() if refs else [])}
    if not sizes:
        return None
    if fid_defined(n, min(sizes.values()), dim):
        return None
    small = ", ".join(f"{k} {v}" for k, v in sorted(sizes.items()))
    return (
        f"FID n/a: N={n} images and reference N ({small}) must all exceed the {dim} feature "
        "dimensions, or a covariance is rank-deficient and FID mostly bias: read KID"
    )


def _assemble(
    ctx: TableContext,
    model: str,
    niche: str,
    g: GroupStats,
    mine: pd.DataFrame,
    moments: tuple[np.ndarray, np.ndarray] | None,
    refs: References | None,
    n_ref: int,
    labels: dict[str, Any],
    *,
    scope: str,
) -> dict:
    ev = ctx.cfg.evaluation
    f = g.features
    flags: list[str] = []
    fid = kid = None
    fid_flag = fid_na = None
    seed = ctx.cfg.seed + int(hashlib.sha256(f"{model}/{niche}".encode()).hexdigest()[:8], 16)
    if moments is None or refs is None:
        flags.append("no reference statistics: no FID/KID")
    elif f.n < 2:
        flags.append(f"N={f.n}: FID/KID need at least 2 images")
    else:
        ref_feats = np.concatenate(list(refs.features.values()))
        kid = kid_from_features(
            f.features, ref_feats, subsets=ev.kid_subsets, subset_size=ev.kid_subset_size, seed=seed
        )
        if kid.subset_size < ev.kid_subset_size:
            flags.append(
                f"KID over {kid.subsets} subsets of {kid.subset_size} images (kid_subset_size "
                f"{ev.kid_subset_size} is more than the smaller set holds)"
            )
        fid_na = _fid_gate(f.n, refs, f.dim)
        if fid_na is None:
            fid = fid_from_moments(*f.moments(), *moments)
            if f.n < ev.min_fid_n:
                fid_flag = (
                    f"N={f.n} below min_fid_n={ev.min_fid_n}: FID is biased upward at small N, "
                    "read KID beside it"
                )
        else:
            flags.append(fid_na)
    c = g.clip
    clip_score = clip_to_score(c.text_mean, c.ref_mean, ev.anchors, ev.clip_ref_share)
    fid_score = float(fid_to_score(fid, ev.anchors)) if fid is not None else None
    human_row = _human(ctx.human, scope, model)
    anchored = bool(human_row and human_row.get("anchored", False))
    human_score = human_row["human_score_0_100"] if human_row else None
    composite, used = combine(
        {"fid": fid_score, "clip": clip_score, "human": human_score if anchored else None},
        ev.weights,
    )
    if human_row is None:
        flags.append("no human votes: composite over " + "+".join(used) + " (weights renormalised)")
    elif not anchored:
        flags.append(
            f"human score relative to {human_row.get('anchor')}: left out of the composite "
            "(set evaluation.anchors.human_anchor_model to a model with votes)"
        )
    if c.truncated:
        flags.append(f"{c.truncated} prompts longer than CLIP's context were truncated for CLIP")
    n_errors = int((~mine["ok"].astype(bool)).sum())
    if n_errors:
        flags.append(f"{n_errors} images unreadable or corrupt: skipped")
    if ctx.feature.not_comparable_because:
        flags.append(f"FID not comparable to published FID ({ctx.feature.not_comparable_because})")
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
    draws = ctx.human.draws.get(scope, {}).get(model) if ctx.human and anchored else None
    interval = bootstrap_group(
        prompts=[str(by_job.at[i, "prompt"]) for i in ids],
        strata=[str(by_job.at[i, "niche"]) for i in ids],
        features=f.features[[pos[i] for i in ids]] if ids else None,
        refs=refs if fid is not None else None,
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
        "fid_na": fid_na,
        "kid_mean": kid.mean if kid else None,
        "kid_std": kid.std if kid else None,
        "kid_subset_size": kid.subset_size if kid else None,
        "clip_text": c.text_mean,
        "clip_text_n": c.text_n,
        "clipscore": c.clipscore,
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
        "human_anchored": anchored,
        "composite": composite,
        "composite_lo": interval.composite[0] if interval.composite else None,
        "composite_hi": interval.composite[1] if interval.composite else None,
        "composite_components": "+".join(used),
        "composite_n_boot": interval.n,
        "feature_net": ctx.feature.label,
        "clip_model": ctx.clip.label,
        "reference": labels["reference"],
        "reference_synthetic": labels["reference_synthetic"],
        "flags": _join_flags(flags),
    }


def split_flags(text: str | None) -> list[str]:
    """The flags of a scores.parquet `flags` cell, in order."""
    return [f for f in (text or "").split(FLAG_SEP) if f]


def _join_flags(flags: list[str]) -> str:
    # A separator inside a flag would split it in two for every reader: soften it to a comma.
    return FLAG_SEP.join(f.replace(FLAG_SEP, ", ") for f in flags)


def _human(human: HumanEvalResult | None, scope: str, model: str) -> dict | None:
    if human is None or human.scores.empty:
        return None
    hit = human.scores[(human.scores["scope"] == scope) & (human.scores["model"] == model)]
    return hit.iloc[0].to_dict() if len(hit) else None


def _opt(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)
