"""Figures of image-conditioned jobs per group: identity preservation and garment similarity.

Each scorer actor keeps `IdentityStats` and `GarmentStats` per group (sums that merge exactly);
the per-image records (`image_scores.parquet`) give the intervals and the quality-floor checks.

- identity: of the outputs of jobs whose reference photos hold a face (`identity_n`), the share
  in which a face was found (`identity_face_rate`, Wilson 95 % interval) and the mean cosine of
  the output face to the reference face (`identity_cos`, over outputs with a face; a 95 %
  bootstrap over prompts). No face is a failure, in the face rate and in the floor.
- garment (try-on): mean CLIP cosine between the garment photo and the output
  (`garment_cos`, bootstrap over prompts).
- floors (quality-aware goodput): `identity_floor_met` / `garment_floor_met` per image, true when
  the output meets the niche's `conditioning.identity_floor` / `garment_floor` (no face: false),
  null where no floor is set or the job has no usable reference of that kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluation.identity import IdentityRecord

__all__ = [
    "FLOOR_METRICS",
    "GarmentStats",
    "IdentityStats",
    "conditioned_columns",
    "floor_met",
    "floor_met_column",
    "garment_columns",
    "identity_columns",
    "wilson_interval",
]

# Named per-image quality metrics of conditioned jobs: name -> (value column, floor-met column).
FLOOR_METRICS = {
    "identity": ("identity_cos", "identity_floor_met"),
    "garment": ("garment_cos", "garment_floor_met"),
}
_Z = 1.959963984540054  # two-sided 95 %


@dataclass
class IdentityStats:
    """Identity sums of one group: jobs, usable jobs, faces found, Σcos, Σcos²."""

    jobs: int = 0
    usable: int = 0
    faces: int = 0
    cos_sum: float = 0.0
    cos_sq: float = 0.0

    def add(self, rec: IdentityRecord) -> None:
        self.jobs += 1
        if rec.ref_faces == 0:
            return
        self.usable += 1
        if rec.face_found and rec.cosine is not None:
            self.faces += 1
            self.cos_sum += rec.cosine
            self.cos_sq += rec.cosine * rec.cosine

    def merge(self, other: IdentityStats) -> IdentityStats:
        return IdentityStats(
            self.jobs + other.jobs,
            self.usable + other.usable,
            self.faces + other.faces,
            self.cos_sum + other.cos_sum,
            self.cos_sq + other.cos_sq,
        )

    @property
    def face_rate(self) -> float | None:
        return self.faces / self.usable if self.usable else None

    @property
    def cos_mean(self) -> float | None:
        return self.cos_sum / self.faces if self.faces else None


@dataclass
class GarmentStats:
    """Garment-similarity sums of one group: N, Σcos, Σcos²."""

    n: int = 0
    cos_sum: float = 0.0
    cos_sq: float = 0.0

    def add(self, cosines: Sequence[float]) -> None:
        c = np.asarray(cosines, dtype=np.float64)
        self.n += len(c)
        self.cos_sum += float(c.sum())
        self.cos_sq += float((c * c).sum())

    def merge(self, other: GarmentStats) -> GarmentStats:
        return GarmentStats(
            self.n + other.n, self.cos_sum + other.cos_sum, self.cos_sq + other.cos_sq
        )

    @property
    def cos_mean(self) -> float | None:
        return self.cos_sum / self.n if self.n else None


def floor_met(applies: bool | None, value: float | None, floor: float | None) -> bool | None:
    """One image against a floor: None when no floor or no usable reference; no value fails."""
    if floor is None or applies is None or _missing(applies):
        return None
    return bool(applies) and value is not None and not _missing(value) and value >= floor


def floor_met_column(
    images: pd.DataFrame, metric: str, floors: dict[str, float | None]
) -> pd.Series:
    """`<metric>_floor_met` for every row of an image table, with each row's niche floor.

    Args:
        images: per-image rows with `niche`, the metric's value column, and `face_found`
            (identity) or the value itself (garment) saying whether the floor applies.
        metric: a key of FLOOR_METRICS.
        floors: niche -> floor (None: no floor for that niche).
    """
    value_col, _ = FLOOR_METRICS[metric]
    values = images[value_col]
    # identity applies where the references held a face (face_found not null); a garment
    # where its photo decoded and was compared (a value exists)
    applies = images["face_found"] if metric == "identity" else values.notna().where(values.notna())
    out = [
        floor_met(a, v, floors.get(n))
        for n, v, a in zip(images["niche"], values, applies, strict=True)
    ]
    return pd.Series(pd.array(out, dtype="boolean"), index=images.index)


def wilson_interval(k: int, n: int) -> tuple[float, float] | None:
    """Wilson score 95 % interval of k successes in n trials (None for n = 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + _Z * _Z / n
    centre = (p + _Z * _Z / (2 * n)) / denom
    half = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _prompt_bootstrap(
    values: Sequence[float], clusters: Sequence[str], draws: int, seed: int
) -> tuple[float, float] | None:
    """95 % percentile interval of the mean, resampling prompts (clusters) with replacement.

    None with fewer than two prompts: one cluster says nothing about the spread.
    """
    by: dict[str, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        by.setdefault(c, []).append(float(v))
    groups = [np.asarray(g) for g in by.values()]
    if len(groups) < 2:
        return None
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(groups), size=(draws, len(groups)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def identity_columns(
    stats: IdentityStats, mine: pd.DataFrame, *, draws: int, seed: int
) -> tuple[dict[str, Any], list[str]]:
    """The identity columns of one group's score row, and its flags.

    Args:
        stats: the group's merged sums.
        mine: the group's per-image rows (niche, prompt, face_found, identity_cos,
            identity_floor_met).
        draws: bootstrap resamples.
        seed: the group's bootstrap seed.
    """
    rate = wilson_interval(stats.faces, stats.usable)
    cols = {
        "identity_jobs": stats.jobs,
        "identity_n": stats.usable,
        "identity_faces": stats.faces,
        "identity_face_rate": stats.face_rate,
        "identity_face_rate_lo": rate[0] if rate else None,
        "identity_face_rate_hi": rate[1] if rate else None,
        "identity_cos": stats.cos_mean,
        **_intervals(mine, "identity", draws, seed),
    }
    flags = []
    if stats.jobs > stats.usable:
        flags.append(
            f"identity: {stats.jobs - stats.usable} jobs' reference photos hold no detectable "
            "face (left out of identity, not the model's fault)"
        )
    if stats.usable > stats.faces:
        flags.append(
            f"identity: no face found in {stats.usable - stats.faces} of {stats.usable} outputs "
            "(scored as failures)"
        )
    return cols, flags


def garment_columns(
    stats: GarmentStats, mine: pd.DataFrame, *, draws: int, seed: int
) -> dict[str, Any]:
    """The garment columns of one group's score row (mine: niche, prompt, garment_cos, ...)."""
    return {
        "garment_n": stats.n,
        "garment_cos": stats.cos_mean,
        **_intervals(mine, "garment", draws, seed),
    }


def _intervals(mine: pd.DataFrame, metric: str, draws: int, seed: int) -> dict[str, Any]:
    """`<metric>_cos_lo/hi` (bootstrap over prompts) and the floor's N, rate and interval."""
    value, met_col = FLOOR_METRICS[metric]
    scored = mine[mine[value].notna()]
    iv = (
        _prompt_bootstrap(scored[value].tolist(), _clusters(scored), draws, seed)
        if len(scored)
        else None
    )
    met = mine[met_col].dropna()
    floor_iv = wilson_interval(int(met.sum()), len(met))
    return {
        f"{metric}_cos_lo": iv[0] if iv else None,
        f"{metric}_cos_hi": iv[1] if iv else None,
        f"{metric}_floor_n": len(met),
        f"{metric}_floor_rate": float(met.mean()) if len(met) else None,
        f"{metric}_floor_lo": floor_iv[0] if floor_iv else None,
        f"{metric}_floor_hi": floor_iv[1] if floor_iv else None,
    }


def _clusters(rows: pd.DataFrame) -> list[str]:
    return (rows["niche"].astype(str) + "\x1f" + rows["prompt"].astype(str)).tolist()


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def conditioned_columns(
    identity: IdentityStats,
    garment: GarmentStats,
    mine: pd.DataFrame,
    *,
    draws: int,
    seed: int,
    face_label: str | None,
) -> tuple[dict[str, Any], list[str]]:
    """Identity and garment columns of one score row, `face_embedder` included, and flags."""
    cols, flags = identity_columns(identity, mine, draws=draws, seed=seed)
    cols.update(garment_columns(garment, mine, draws=draws, seed=seed + 1))
    cols["face_embedder"] = face_label if identity.jobs else None
    return cols, flags
