"""Figures of image-conditioned jobs per group: identity preservation and garment similarity.

Each scorer actor keeps `IdentityStats` and `GarmentStats` per group (sums that merge exactly);
the per-image records (`image_scores.parquet`) give the intervals.

- identity: of the outputs of jobs whose reference photos hold a face (`identity_n`), the share
  in which a face was found (`identity_face_rate`, Wilson 95 % interval) and the mean cosine of
  the output face to the reference face (`identity_cos`, over outputs with a face; a 95 %
  bootstrap over prompts). No face is a failure, in the face rate and in the floor.
- garment (try-on): mean CLIP cosine between the garment photo and the output
  (`garment_cos`, bootstrap over prompts).

Floors on these (`niches[].quality_floor`'s `identity` and `garment`) are checked with every
other named metric by `evaluation.goodput`, from the per-image `face_found`,
`identity_cos` and `garment_cos` this stage writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evaluation.identity import IdentityRecord
from load_tests.intervals import wilson_interval

__all__ = [
    "GarmentStats",
    "IdentityStats",
    "conditioned_columns",
    "garment_columns",
    "identity_columns",
]


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
        mine: the group's per-image rows (niche, prompt, identity_cos).
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
        **_cos_interval(mine, "identity", draws, seed),
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
        **_cos_interval(mine, "garment", draws, seed),
    }


def _cos_interval(mine: pd.DataFrame, metric: str, draws: int, seed: int) -> dict[str, Any]:
    """`<metric>_cos_lo/hi`: a bootstrap over prompts of the group's mean cosine."""
    value = f"{metric}_cos"
    scored = mine[mine[value].notna()]
    iv = (
        _prompt_bootstrap(scored[value].tolist(), _clusters(scored), draws, seed)
        if len(scored)
        else None
    )
    return {f"{metric}_cos_lo": iv[0] if iv else None, f"{metric}_cos_hi": iv[1] if iv else None}


def _clusters(rows: pd.DataFrame) -> list[str]:
    return (rows["niche"].astype(str) + "\x1f" + rows["prompt"].astype(str)).tolist()


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
