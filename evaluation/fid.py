"""FID and KID from sufficient statistics that merge exactly across actors.

`FeatureStats` keeps what torchmetrics' FID keeps (the feature sum, the sum of outer products and
the count, in float64), plus the features themselves, which KID and the bootstrap over prompts
need. Merging two stats adds the sums and concatenates the features in a canonical order (by item
id), so statistics computed on any split of the images merge to what one actor would have found.
The FID formula is torchmetrics' (`_compute_fid`); KID is torchmetrics' polynomial-kernel MMD over
subsets drawn by a seeded generator, so a KID is reproducible. Both are written out here, the same
torch operations in the same order (tests pin them to torchmetrics' own functions, exactly):
importing torchmetrics takes ~10 s of CPU (it imports torchvision, transformers and scipy), paid
by the process that assembles the score tables for two ten-line formulas.

FID is only defined here where both sets hold more images than the features have dimensions
(`fid_defined`): with fewer, a covariance estimate is rank-deficient and the Fréchet distance is
mostly the bias of that estimate (64 references against 128- or 2048-d features), not a distance
between the distributions. KID, an unbiased MMD, stays meaningful at small N and is shown instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    "poly_mmd",
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


class FeatureStats:
    """Sufficient statistics of one image set's features.

    Feature rows arrive in chunks, one per `update`, and are joined only when `features` or `ids`
    is read (then kept joined): the old one-array form copied every row on each update, quadratic
    in the number of images.

    Attributes:
        dim: feature dimension.
        n: number of images.
        sum: float64 (dim,) sum of features.
        cov_sum: float64 (dim, dim) sum of outer products x xᵀ (torchmetrics' convention).
        ids: item ids, one per feature row.
        features: float32 (n, dim) rows, in `ids` order.
    """

    def __init__(
        self,
        dim: int,
        n: int = 0,
        sum: np.ndarray | None = None,
        cov_sum: np.ndarray | None = None,
        ids: Sequence[str] | None = None,
        features: np.ndarray | None = None,
    ) -> None:
        self.dim = dim
        self.n = n
        self.sum = np.zeros(dim, dtype=np.float64) if sum is None else sum
        self.cov_sum = np.zeros((dim, dim), dtype=np.float64) if cov_sum is None else cov_sum
        self._id_chunks: list[list[str]] = [list(ids)] if ids else []
        self._chunks: list[np.ndarray] = []
        if features is not None and len(features):
            self._chunks.append(np.asarray(features, dtype=np.float32).reshape(-1, dim))

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, n={self.n}, chunks={len(self._chunks)})"

    @property
    def ids(self) -> list[str]:
        if len(self._id_chunks) != 1:
            self._id_chunks = [[i for chunk in self._id_chunks for i in chunk]]
        return self._id_chunks[0]

    @property
    def features(self) -> np.ndarray:
        if len(self._chunks) != 1:
            joined = (
                np.concatenate(self._chunks)
                if self._chunks
                else np.zeros((0, self.dim), dtype=np.float32)
            )
            self._chunks = [joined]
        return self._chunks[0]

    def update(self, ids: Sequence[str], feats: np.ndarray | torch.Tensor) -> None:
        """Add a batch of feature rows (N, dim) with their item ids."""
        x = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else feats
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] != len(ids):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) features, got {x.shape}")
        self.sum += x.sum(axis=0)
        self.cov_sum += x.T @ x
        self.n += x.shape[0]
        self._id_chunks.append(list(ids))
        self._chunks.append(x.astype(np.float32))

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats holding both sets; rows sorted by id so any split merges alike."""
        return FeatureStats.merge_all([self, other])

    @staticmethod
    def merge_all(parts: Sequence[FeatureStats]) -> FeatureStats:
        """One FeatureStats holding every part: sums added, rows joined once and sorted by id.

        The sort makes the rows (and KID, and the bootstrap) independent of which actor scored
        which image; the sums differ from one actor's only by float64 rounding.
        """
        if not parts:
            raise ValueError("merge_all needs at least one FeatureStats")
        dim = parts[0].dim
        if any(p.dim != dim for p in parts):
            dims = sorted({p.dim for p in parts})
            raise ValueError(f"cannot merge feature statistics of dimensions {dims}")
        ids = [i for p in parts for chunk in p._id_chunks for i in chunk]
        chunks = [c for p in parts for c in p._chunks]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        feats = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
        total, cov = np.zeros(dim), np.zeros((dim, dim))
        for p in parts:
            total += p.sum
            cov += p.cov_sum
        return FeatureStats(
            dim=dim,
            n=sum(p.n for p in parts),
            sum=total,
            cov_sum=cov,
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
        own = self.ids
        index = {k: i for i, k in enumerate(own)}
        rows = [index[k] for k in ids]
        out = FeatureStats(self.dim)
        out.update([own[i] for i in rows], self.features[rows].astype(np.float64))
        return out


def fid_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians, by torchmetrics' `_compute_fid` (float64)."""
    m1, s1, m2, s2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, cov1, mu2, cov2))
    a = (m1 - m2).square().sum(dim=-1)
    b = s1.trace() + s2.trace()
    c = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum(dim=-1)
    return float(a + b - 2 * c)


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


def _poly_kernel(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    # torchmetrics' `poly_kernel` at its defaults: degree 3, gamma 1 / dim, coef 1.
    return (f1 @ f2.T * (1.0 / f1.shape[1]) + 1.0) ** 3


def poly_mmd(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """torchmetrics' `poly_mmd` (unbiased MMD² under the cubic polynomial kernel), same steps."""
    k_xx = _poly_kernel(f_real, f_real)
    k_yy = _poly_kernel(f_fake, f_fake)
    k_xy = _poly_kernel(f_real, f_fake)
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(dim=-1) - torch.diag(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(dim=-1) - torch.diag(k_yy)).sum()
    k_xy_sum = k_xy.sum(dim=0).sum()
    value = (kt_xx_sum + kt_yy_sum) / (m * (m - 1))
    value -= 2 * k_xy_sum / (m**2)
    return value
