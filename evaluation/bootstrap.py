"""Bootstrap intervals for the FID, CLIP and composite scores of one group.

Two sources of uncertainty are resampled in every draw:

- **Prompts**, not images: images made from one prompt are correlated, so resampling images
  would understate the uncertainty. Each draw picks as many prompts as the group has, with
  replacement, and takes all their images. For a model's "all" row the prompts are resampled
  within each niche (stratified), so every draw keeps the model's niche mix, as its point
  estimate does.
- **References**: the reference set is a sample too, and a small one moves the FID as much as the
  generated set does. Each draw resamples each niche's reference rows with replacement and
  recomputes their moments (for "all" rows, the mixture in the model's niche proportions).

Each draw recomputes the FID, the CLIP score and the composite; the human score of draw b is the
b-th Bradley-Terry bootstrap draw when there are votes.

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
from evaluation.fid import frechet_distance, mixture_of_moments, row_moments

__all__ = ["Interval", "References", "bootstrap_group"]


@dataclass
class Interval:
    """Percentile 95 % intervals; None where a score does not exist. `n` counts usable draws."""

    fid_score: tuple[float, float] | None
    clip_score: tuple[float, float] | None
    composite: tuple[float, float] | None
    n: int


@dataclass
class References:
    """The reference rows a group's FID is taken against: per niche, with its mixture weight."""

    features: Mapping[str, np.ndarray]
    weights: Mapping[str, float]

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Moments of one resample: each niche's rows drawn with replacement, then mixed."""
        parts = []
        for niche, rows in self.features.items():
            pick = rows[rng.integers(0, len(rows), size=len(rows))]
            parts.append((self.weights[niche], *row_moments(pick)))
        return parts[0][1:] if len(parts) == 1 else mixture_of_moments(parts)


def _strata_groups(prompts: Sequence[str], strata: Sequence[str]) -> list[list[list[int]]]:
    """Per stratum, the row indices of each prompt (in first-seen order)."""
    by: dict[str, dict[str, list[int]]] = {}
    for i, (p, s) in enumerate(zip(prompts, strata, strict=True)):
        by.setdefault(s, {}).setdefault(p, []).append(i)
    return [list(groups.values()) for groups in by.values()]


def bootstrap_group(
    *,
    prompts: Sequence[str],
    strata: Sequence[str] | None = None,
    features: np.ndarray | None,
    refs: References | None,
    clip_text: Sequence[float | None],
    clip_ref: Sequence[float | None],
    human_draws: np.ndarray | None,
    components: Sequence[str],
    point: Mapping[str, float | None],
    cfg: EvaluationConfig,
    seed: int,
) -> Interval:
    """Intervals for one group; the i-th prompt, stratum, feature row and CLIP values belong
    together.

    `strata` (the niche of each row; default one stratum) is what prompts are resampled within.
    `components` are those the point estimate used; a draw lacking one of them is dropped, so
    every draw averages the same components. `point` holds the estimates ('fid', 'clip',
    'composite', on 0-100) the intervals are centred on. `refs` None: no FID draws.
    """
    strata_groups = _strata_groups(prompts, strata if strata is not None else [""] * len(prompts))
    if not strata_groups:
        return Interval(None, None, None, 0)
    text = np.array([np.nan if v is None else v for v in clip_text], dtype=float)
    refc = np.array([np.nan if v is None else v for v in clip_ref], dtype=float)
    rng = np.random.default_rng(seed)
    fids, clips, comps = [], [], []
    want_fid = "fid" in components and features is not None and refs is not None
    for b in range(cfg.bootstrap):
        idx = np.concatenate(
            [
                np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
                for groups in strata_groups
            ]
        ).astype(int)
        scores: dict[str, float | None] = {"fid": None, "clip": None, "human": None}
        if want_fid and len(idx) >= 2:
            mu, cov = row_moments(features[idx])  # type: ignore[index]
            fid = frechet_distance(mu, cov, *refs.draw(rng))  # type: ignore[union-attr]
            scores["fid"] = float(fid_to_score(fid, cfg.anchors))
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
