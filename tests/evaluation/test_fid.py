"""FID/KID against an independent numpy/scipy computation, and exact merging of statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from evaluation.fid import (
    FeatureStats,
    fid_defined,
    fid_from_moments,
    fid_from_stats,
    frechet_distance,
    kid_from_features,
    mixture_moments,
    row_moments,
)


def _stats(x: np.ndarray, prefix: str = "i", batch: int = 37) -> FeatureStats:
    s = FeatureStats(x.shape[1])
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        s.update([f"{prefix}{start + i:05d}" for i in range(len(rows))], rows)
    return s


def _scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The pytorch-fid formula, written independently: sqrtm of the covariance product."""
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture(scope="module")
def feats() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(16, 16))
    x = rng.normal(size=(400, 16)) @ mix
    y = rng.normal(loc=0.3, size=(300, 16)) @ (mix * 1.2)
    return x, y


def test_fid_equals_independent_scipy_computation(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = feats
    ours = fid_from_stats(_stats(x), _stats(y))
    assert ours == pytest.approx(_scipy_fid(x, y), rel=1e-6)
    assert ours > 1.0  # the two sets differ; a constant FID would not pass the line above anyway


def test_fid_of_a_set_with_itself_is_zero(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = feats
    assert fid_from_stats(_stats(x), _stats(x)) == pytest.approx(0.0, abs=1e-6)


def test_statistics_split_three_ways_merge_to_the_whole(
    feats: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = feats
    whole = _stats(x)
    order = np.random.default_rng(1).permutation(len(x))
    parts = np.array_split(order, 3)
    split = []
    for p in parts:
        s = FeatureStats(x.shape[1])
        s.update([f"i{i:05d}" for i in p], x[p])
        split.append(s)
    merged = split[2].merge(split[0]).merge(split[1])
    assert merged.n == whole.n
    assert merged.ids == whole.ids
    np.testing.assert_array_equal(merged.features, whole.features)
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12)
    np.testing.assert_allclose(merged.cov_sum, whole.cov_sum, rtol=1e-12)
    ref = _stats(y, prefix="r")
    assert fid_from_stats(merged, ref) == pytest.approx(fid_from_stats(whole, ref), rel=1e-10)
    kid = kid_from_features(merged.features, ref.features, subsets=5, subset_size=50, seed=3)
    assert kid == kid_from_features(whole.features, ref.features, subsets=5, subset_size=50, seed=3)


def test_kid_of_a_set_against_itself_is_near_zero_and_rises_with_shift() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 32))
    self_kid = kid_from_features(x, x, subsets=20, subset_size=200, seed=0).mean
    shifted = [
        kid_from_features(x + s, x, subsets=20, subset_size=200, seed=0).mean
        for s in (0.5, 1.0, 2.0)
    ]
    # subsets of one set overlap, which biases the unbiased MMD slightly below 0; the scale that
    # matters is the shifted sets'
    assert abs(self_kid) < 0.05
    assert shifted[0] > 5 * abs(self_kid)
    assert shifted[0] < shifted[1] < shifted[2]


def test_kid_needs_two_images() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        kid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


def test_fid_refuses_fewer_than_two_images() -> None:
    one = FeatureStats(4)
    one.update(["a"], np.ones((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_stats(one, one)


@pytest.mark.parametrize("m", [12, 200])  # fewer and more rows than feature dimensions
def test_symmetric_frechet_matches_torchmetrics_and_scipy(m: int) -> None:
    rng = np.random.default_rng(m)
    ref = rng.normal(size=(300, 48))
    gen = rng.normal(loc=0.2, size=(m, 48))
    ours = frechet_distance(*row_moments(gen), *row_moments(ref))
    assert ours == pytest.approx(fid_from_stats(_stats(gen), _stats(ref, prefix="r")), rel=1e-6)
    assert ours == pytest.approx(_scipy_fid(gen, ref), rel=1e-6)


def test_fid_is_defined_only_above_the_feature_dimension() -> None:
    assert fid_defined(129, 129, 128)
    assert not fid_defined(64, 5000, 128) and not fid_defined(5000, 64, 128)
    assert not fid_defined(2048, 4096, 2048)


def test_kid_states_the_subset_size_it_used() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(500, 8))
    kid = kid_from_features(x, y, subsets=4, subset_size=1000, seed=0)
    assert (kid.subset_size, kid.subsets) == (30, 4)  # the 30-image set caps the 1000 asked for
    assert kid_from_features(y, y, subsets=2, subset_size=100, seed=0).subset_size == 100


def test_mixture_of_one_set_is_that_set(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = feats
    s = _stats(x)
    mu, cov = mixture_moments([(3.0, s), (5.0, s)])
    np.testing.assert_allclose(mu, s.moments()[0])
    np.testing.assert_allclose(cov, s.moments()[1], rtol=1e-10, atol=1e-10)
    # and a mixture of two different sets sits between them
    r = _stats(y)
    mixed = fid_from_moments(*mixture_moments([(1, s), (1, r)]), *s.moments())
    assert 0 < mixed < fid_from_stats(r, s)


def test_subset_recomputes_statistics(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = feats
    s = _stats(x[:10])
    sub = s.subset(["i00001", "i00001", "i00003"])
    assert sub.n == 3
    np.testing.assert_allclose(sub.sum, x[1] * 2 + x[3])
