"""Bootstrap intervals over prompts for the FID, CLIP and composite scores of one group.

Prompts, not images, are the unit resampled: images made from one prompt are correlated, so
resampling images would understate the uncertainty. Each draw picks as many prompts as the group
has, with replacement, takes all their images, and recomputes the FID (against the fixed reference,
via `FidBootstrap`), the CLIP score and the composite; the human score of draw b is the b-th
Bradley-Terry bootstrap draw (votes resampled) when there are votes.

The draws estimate the spread, and the interval is centred on the point estimate: point +
(2.5th, 97.5th percentile of draw − mean of draws). A plain percentile interval would not do for
FID: a resample repeats images, and FID rises as the number of distinct images falls (its small-N
bias), so the draws sit systematically below the estimate's score and a percentile interval can
miss the estimate altogether.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from config import EvaluationConfig
from evaluation.composite import clip_to_score, combine, fid_to_score
from evaluation.fid import FidBootstrap

__all__ = ["Interval", "bootstrap_group"]


@dataclass
class Interval:
    """Percentile 95 % intervals; None where a score does not exist. `n` counts usable draws."""

    fid_score: tuple[float, float] | None
    clip_score: tuple[float, float] | None
    composite: tuple[float, float] | None
    n: int


def bootstrap_group(
    *,
    prompts: Sequence[str],
    features: np.ndarray | None,
    ref: FidBootstrap | None,
    clip_text: Sequence[float | None],
    clip_ref: Sequence[float | None],
    human_draws: np.ndarray | None,
    components: Sequence[str],
    point: Mapping[str, float | None],
    cfg: EvaluationConfig,
    seed: int,
) -> Interval:
    """Intervals for one group; the i-th prompt, feature row and CLIP values belong together.

    `components` are those the point estimate used; a draw lacking one of them is dropped, so
    every draw averages the same components. `point` holds the estimates ('fid', 'clip',
    'composite', on 0-100) the intervals are centred on.
    """
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    groups = list(by_prompt.values())
    if not groups:
        return Interval(None, None, None, 0)
    text = np.array([np.nan if v is None else v for v in clip_text], dtype=float)
    refc = np.array([np.nan if v is None else v for v in clip_ref], dtype=float)
    rng = np.random.default_rng(seed)
    fids, clips, comps = [], [], []
    for b in range(cfg.bootstrap):
        pick = rng.integers(0, len(groups), size=len(groups))
        idx = np.concatenate([groups[g] for g in pick])
        scores: dict[str, float | None] = {"fid": None, "clip": None, "human": None}
        if "fid" in components and features is not None and ref is not None and len(idx) >= 2:
            scores["fid"] = float(fid_to_score(ref.fid(features[idx]), cfg.anchors))
        t, r = text[idx], refc[idx]
        scores["clip"] = clip_to_score(
            float(np.nanmean(t)) if np.isfinite(t).any() else None,
            float(np.nanmean(r)) if np.isfinite(r).any() else None,
            cfg.anchors,
            cfg.clip_ref_share,
        )
        if human_draws is not None:
            scores["human"] = float(human_draws[b % len(human_draws)])
        if any(scores[c] is None for c in components):
            continue
        comp, _ = combine({c: scores[c] for c in components}, cfg.weights)
        if scores["fid"] is not None:
            fids.append(scores["fid"])
        if scores["clip"] is not None:
            clips.append(scores["clip"])
        if comp is not None:
            comps.append(comp)
    return Interval(
        _centred(fids, point.get("fid")),
        _centred(clips, point.get("clip")),
        _centred(comps, point.get("composite")),
        len(comps),
    )


def _centred(values: Sequence[float], point: float | None) -> tuple[float, float] | None:
    if not values or point is None:
        return None
    v = np.asarray(values)
    lo, hi = np.percentile(v - v.mean(), [2.5, 97.5])
    return float(np.clip(point + lo, 0, 100)), float(np.clip(point + hi, 0, 100))
