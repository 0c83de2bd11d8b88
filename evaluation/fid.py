"""FID and KID from sufficient statistics that merge exactly across actors.

`FeatureStats` keeps what torchmetrics' FID keeps (the feature sum, the sum of outer products and
the count, in float64), plus the features themselves, which KID and the bootstrap over prompts
need. Merging two stats adds the sums and concatenates the features in a canonical order (by item
id), so statistics computed on any split of the images merge to what one actor would have found.
The FID formula is torchmetrics' (`_compute_fid`); KID is torchmetrics' polynomial-kernel MMD over
subsets drawn by a seeded generator, so a KID is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "FeatureStats",
    "FidBootstrap",
    "fid_from_moments",
    "fid_from_stats",
    "kid_from_features",
    "mixture_moments",
]


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
    total = sum(w for w, _ in parts)
    if total <= 0:
        raise ValueError("mixture weights must have a positive sum")
    moments = [(w / total, *s.moments()) for w, s in parts]
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
) -> tuple[float, float]:
    """KID mean and std over subsets (torchmetrics' poly-kernel MMD), subsets drawn by `seed`.

    `subset_size` is capped at the smaller set; ValueError when that is below 2.
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
    return float(arr.mean()), float(arr.std())


class FidBootstrap:
    """FID of many resampled generated sets against one fixed reference, fast.

    With A = sqrt(Σ_ref), tr sqrt(Σ_ref Σ_gen) = tr sqrt(A Σ_gen A), and A Σ_gen A = MᵀM with
    M = X_c A / sqrt(m-1) for the m centred generated rows X_c. Its non-zero eigenvalues are those
    of the m x m matrix M Mᵀ, so a resample of m ≪ d images costs O(m d²) instead of a d x d
    eigen-decomposition: a bootstrap over prompts stays cheap even with 2048-d Inception features.
    """

    def __init__(self, ref_mean: np.ndarray, ref_cov: np.ndarray) -> None:
        vals, vecs = np.linalg.eigh((ref_cov + ref_cov.T) / 2)
        self._sqrt = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
        self._mean = ref_mean
        self._trace = float(np.trace(ref_cov))

    def fid(self, feats: np.ndarray) -> float:
        """FID of these generated feature rows (m >= 2) against the reference."""
        x = np.asarray(feats, dtype=np.float64)
        m = x.shape[0]
        if m < 2:
            raise ValueError(f"FID needs at least 2 images, got {m}")
        mu = x.mean(axis=0)
        xc = x - mu
        big_m = (xc @ self._sqrt) / np.sqrt(m - 1)
        small = big_m @ big_m.T if m <= x.shape[1] else big_m.T @ big_m
        eig = np.linalg.eigvalsh((small + small.T) / 2)
        tr_gen = float((xc * xc).sum() / (m - 1))
        diff = mu - self._mean
        return float(diff @ diff + self._trace + tr_gen - 2 * np.sqrt(np.clip(eig, 0, None)).sum())
