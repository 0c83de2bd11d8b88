"""FID and KID from sufficient statistics that merge exactly across actors.

`FeatureStats` keeps what torchmetrics' FID keeps (the feature sum, the sum of outer products and
the count, in float64), plus the features themselves, which KID and the bootstrap over prompts
need. Merging two stats adds the sums and concatenates the features in a canonical order (by item
id), so statistics computed on any split of the images merge to what one actor would have found.
The FID formula is torchmetrics' (`_compute_fid`); KID is torchmetrics' polynomial-kernel MMD over
subsets drawn by a seeded generator, so a KID is reproducible.

FID is only defined here where both sets hold more images than the features have dimensions
(`fid_defined`): with fewer, a covariance estimate is rank-deficient and the Fréchet distance is
mostly the bias of that estimate (64 references against 128- or 2048-d features), not a distance
between the distributions. KID, an unbiased MMD, stays meaningful at small N and is shown instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "FeatureStats",
    "KidResult",
    "fid_defined",
    "fid_from_moments",
    "fid_from_stats",
    "frechet_distance",
    "kid_from_features",
    "mixture_moments",
    "mixture_of_moments",
    "row_moments",
]


def fid_defined(n: int, n_ref: int, dim: int) -> bool:
    """True when both sets have more images than feature dimensions (full-rank covariances)."""
    return n > dim and n_ref > dim


def row_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of feature rows (n >= 2), in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {x.shape[0]}")
    mean = x.mean(axis=0)
    xc = x - mean
    return mean, (xc.T @ xc) / (x.shape[0] - 1)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet distance in symmetric form, for bootstrap draws (numpy, float64).

    tr sqrt(Σ1 Σ2) = Σ sqrt(eig(A Σ1 A)) with A = sqrt(Σ2): two symmetric eigendecompositions,
    faster and steadier than the general eigenvalues torchmetrics takes (it agrees with
    `fid_from_moments` to rounding; tested).
    """
    vals, vecs = np.linalg.eigh((cov2 + cov2.T) / 2)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = root @ cov1 @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    diff = mu1 - mu2
    return float(
        diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    )


@dataclass(frozen=True)
class KidResult:
    """KID over `subsets` subsets of `subset_size` images each (std over the subsets)."""

    mean: float
    std: float
    subset_size: int
    subsets: int


@dataclass
class FeatureStats:
    """Sufficient statistics of one image set's features.

    Attributes:
        dim: feature dimension.
        n: number of images.
        sum: float64 (dim,) sum of features.
        cov_sum: float64 (dim, dim) sum of outer products x xᵀ (torchmetrics' convention).
        ids: item ids, one per feature row.
        features: float32 (n, dim) rows, in `ids` order.
    """

    dim: int
    n: int = 0
    sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    cov_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    ids: list[str] = field(default_factory=list)
    features: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.sum is None:
            self.sum = np.zeros(self.dim, dtype=np.float64)
        if self.cov_sum is None:
            self.cov_sum = np.zeros((self.dim, self.dim), dtype=np.float64)
        if self.features is None:
            self.features = np.zeros((0, self.dim), dtype=np.float32)

    def update(self, ids: Sequence[str], feats: np.ndarray | torch.Tensor) -> None:
        """Add a batch of feature rows (N, dim) with their item ids."""
        x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else feats
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] != len(ids):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) features, got {x.shape}")
        self.sum += x.sum(axis=0)
        self.cov_sum += x.T @ x
        self.n += x.shape[0]
        self.ids.extend(ids)
        self.features = np.concatenate([self.features, x.astype(np.float32)])

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats holding both sets; rows sorted by id so any split merges alike."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {self.dim}-d and {other.dim}-d feature statistics")
        ids = self.ids + other.ids
        feats = np.concatenate([self.features, other.features])
        order = sorted(range(len(ids)), key=ids.__getitem__)
        return FeatureStats(
            dim=self.dim,
            n=self.n + other.n,
            sum=self.sum + other.sum,
            cov_sum=self.cov_sum + other.cov_sum,
            ids=[ids[i] for i in order],
            features=feats[order],
        )

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance, as torchmetrics' FID computes them; needs n >= 2."""
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.n}")
        mean = self.sum / self.n
        cov = (self.cov_sum - self.n * np.outer(mean, mean)) / (self.n - 1)
        return mean, cov

    def subset(self, ids: Sequence[str]) -> FeatureStats:
        """Statistics of the rows with these ids (repeats allowed), recomputed from features."""
        index = {k: i for i, k in enumerate(self.ids)}
        rows = [index[k] for k in ids]
        out = FeatureStats(self.dim)
        out.update([self.ids[i] for i in rows], self.features[rows].astype(np.float64))
        return out


def fid_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians, via torchmetrics' formula (float64)."""
    from torchmetrics.image.fid import _compute_fid

    t = [torch.as_tensor(a, dtype=torch.float64) for a in (mu1, cov1, mu2, cov2)]
    return float(_compute_fid(*t))


def fid_from_stats(gen: FeatureStats, ref: FeatureStats) -> float:
    """FID of a generated set against a reference set; ValueError below 2 images in either."""
    return fid_from_moments(*gen.moments(), *ref.moments())


def mixture_moments(parts: Sequence[tuple[float, FeatureStats]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a weighted mixture of reference sets (weights need not sum to 1).

    A model's overall FID compares its images with the niche references mixed in the proportions
    of its own niche mix, so a model is not penalised for the traffic it happened to get.
    """
    return mixture_of_moments([(w, *s.moments()) for w, s in parts])


def mixture_of_moments(
    parts: Sequence[tuple[float, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a weighted mixture of (weight, mean, covariance) components."""
    total = sum(w for w, _, _ in parts)
    if total <= 0:
        raise ValueError("mixture weights must have a positive sum")
    moments = [(w / total, mu, cov) for w, mu, cov in parts]
    mean = sum(w * mu for w, mu, _ in moments)
    second = sum(w * (cov + np.outer(mu, mu)) for w, mu, cov in moments)
    return mean, second - np.outer(mean, mean)


def kid_from_features(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KidResult:
    """KID mean and std over subsets (torchmetrics' poly-kernel MMD), subsets drawn by `seed`.

    A set smaller than `subset_size` caps it; the size used is in the result (callers flag a
    capped one). ValueError when it is below 2.
    """
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, len(gen), len(ref))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(gen)} and {len(ref)}")
    rng = np.random.default_rng(seed)
    g = torch.tensor(np.asarray(gen), dtype=torch.float64)
    r = torch.tensor(np.asarray(ref), dtype=torch.float64)
    values = []
    for _ in range(subsets):
        ri = torch.as_tensor(rng.permutation(len(r))[:size])
        gi = torch.as_tensor(rng.permutation(len(g))[:size])
        values.append(float(poly_mmd(r[ri], g[gi])))
    arr = np.asarray(values)
    return KidResult(float(arr.mean()), float(arr.std()), size, subsets)
