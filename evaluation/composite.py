"""The composite quality score: anchored 0-100 mappings, weighting, and a weight-sensitivity check.

Each component maps to 0-100 through anchors fixed in the config (never min-max over a run, so a
score means the same thing in every run):

- FID: 100·(fid_worst − FID)/(fid_worst − fid_best), clipped to [0, 100].
- CLIP: image↔prompt cosine mapped linearly from clip_worst (0) to clip_best (100); when a job
  has a reference image, image↔reference cosine mapped from clip_ref_worst to clip_ref_best
  takes `clip_ref_share` of the CLIP score. Clipped to [0, 100].
- Human: 50 at the anchor strength (the mean of the fitted models, or a named model), ±50 at
  ±human_elo_span/2 Elo; clipped to [0, 100].

composite = Σ wₖ·scoreₖ over the components that exist, the weights renormalised to sum to 1 over
those; a row missing a component says so in its flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from config import CompositeAnchors

__all__ = [
    "COMPONENTS",
    "clip_to_score",
    "combine",
    "composite_scores",
    "fid_to_score",
    "weight_sensitivity",
]

COMPONENTS = ("fid", "clip", "human")
_SCORE_COLUMNS = {c: f"{c}_score_0_100" for c in COMPONENTS}


def fid_to_score(fid: float | np.ndarray, anchors: CompositeAnchors) -> float | np.ndarray:
    """0-100: fid_best → 100, fid_worst → 0, linear between, clipped."""
    s = (
        100
        * (anchors.fid_worst - np.asarray(fid, dtype=float))
        / (anchors.fid_worst - anchors.fid_best)
    )
    out = np.clip(s, 0, 100)
    return float(out) if out.ndim == 0 else out


def clip_to_score(
    text: float | None,
    ref: float | None,
    anchors: CompositeAnchors,
    ref_share: float,
) -> float | None:
    """0-100 from mean image↔prompt and image↔reference cosines (either may be None)."""
    parts: list[tuple[float, float]] = []
    if text is not None:
        t = 100 * (text - anchors.clip_worst) / (anchors.clip_best - anchors.clip_worst)
        parts.append((1 - ref_share if ref is not None else 1.0, float(np.clip(t, 0, 100))))
    if ref is not None:
        r = 100 * (ref - anchors.clip_ref_worst) / (anchors.clip_ref_best - anchors.clip_ref_worst)
        parts.append((ref_share if text is not None else 1.0, float(np.clip(r, 0, 100))))
    total = sum(w for w, _ in parts)
    if not parts or total <= 0:
        return None
    return sum(w * s for w, s in parts) / total


def combine(
    scores: Mapping[str, float | None], weights: Mapping[str, float]
) -> tuple[float | None, list[str]]:
    """Weighted composite over the components present; returns (composite, components used)."""
    used = [
        c
        for c in COMPONENTS
        if scores.get(c) is not None and not np.isnan(scores[c]) and weights[c] > 0  # type: ignore[arg-type]
    ]
    total = sum(weights[c] for c in used)
    if not used or total <= 0:
        return None, used
    return sum(weights[c] * float(scores[c]) for c in used) / total, used  # type: ignore[arg-type]


def composite_scores(table: pd.DataFrame, weights: Mapping[str, float]) -> pd.DataFrame:
    """A copy of `table` with `composite` and `composite_components` from its *_score_0_100."""
    out = table.copy()
    values, used = [], []
    for row in out.itertuples(index=False):
        comp, parts = combine(
            {c: getattr(row, _SCORE_COLUMNS[c], None) for c in COMPONENTS}, weights
        )
        values.append(comp)
        used.append("+".join(parts))
    out["composite"] = pd.array(values, dtype="Float64")
    out["composite_components"] = used
    return out


def weight_sensitivity(
    table: pd.DataFrame,
    weights: Mapping[str, float],
    delta: float = 0.10,
    *,
    scope_column: str = "niche",
) -> pd.DataFrame:
    """Does the model ranking survive moving each weight by ±delta?

    For every scope (a value of `scope_column`) and every (weight, ±delta) of a component that
    the scope has, that weight moves and the others are rescaled to keep the sum at 1; the
    models are re-ranked by the recomputed composite. Returns one row per case: scope, weight,
    delta, w_fid, w_clip, w_human, ranking, base_ranking, same_ranking, same_top. Moves that
    leave [0, 1] are skipped.
    """
    rows = []
    for scope, part in table.groupby(scope_column, sort=True):
        base_rank = _ranking(part, weights)
        present = [c for c in COMPONENTS if part[_SCORE_COLUMNS[c]].notna().any()]
        for k in present:
            for d in (+delta, -delta):
                new_k = weights[k] + d
                if not 0 <= new_k <= 1 or weights[k] >= 1:
                    continue
                scale = (1 - new_k) / (1 - weights[k])
                w = {c: (new_k if c == k else weights[c] * scale) for c in COMPONENTS}
                rank = _ranking(part, w)
                rows.append(
                    {
                        "scope": scope,
                        "weight": k,
                        "delta": d,
                        **{f"w_{c}": w[c] for c in COMPONENTS},
                        "ranking": " > ".join(rank),
                        "base_ranking": " > ".join(base_rank),
                        "same_ranking": rank == base_rank,
                        "same_top": bool(rank[:1] == base_rank[:1]),
                    }
                )
    return pd.DataFrame(rows)


def _ranking(part: pd.DataFrame, weights: Mapping[str, float]) -> Sequence[str]:
    scored = composite_scores(part, weights)
    scored = scored[scored["composite"].notna()]
    ordered = scored.sort_values(["composite", "model"], ascending=[False, True])
    return list(ordered["model"])
