"""FID/KID against an independent numpy/scipy computation, and exact merging of statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from evaluation.fid import (
    FeatureStats,
    fid_defined,
    fid_from_moments,
    fid_from_stats,
    frechet_distance,
    kid_from_features,
    mixture_moments,
    poly_mmd,
    row_moments,
)


def _stats(x: np.ndarray, prefix: str = "i", batch: int = 37) -> FeatureStats:
    s = FeatureStats(x.shape[1])
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        s.update([f"{prefix}{start + i:05d}" for i in range(len(rows))], rows)
    return s


def _random_parts(x: np.ndarray, k: int, *, seed: int, chunks: int = 1) -> list[FeatureStats]:
    """The rows of x shuffled into k FeatureStats, each fed in `chunks` updates."""
    parts = []
    for p in np.array_split(np.random.default_rng(seed).permutation(len(x)), k):
        s = FeatureStats(x.shape[1])
        for chunk in np.array_split(p, chunks):
            s.update([f"i{i:05d}" for i in chunk], x[chunk])
        parts.append(s)
    return parts


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
    split = _random_parts(x, 3, seed=1)
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


class _GivenFeatures(torch.nn.Module):
    """A 'feature extractor' that returns its input, so torchmetrics keeps our features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_chunked_state_matches_torchmetrics_state_on_the_same_features(
    feats: tuple[np.ndarray, np.ndarray],
) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    x, y = (a.astype(np.float32) for a in feats)  # as the networks hand them over
    fid = FrechetInceptionDistance(feature=_GivenFeatures(x.shape[1]))
    kid = KernelInceptionDistance(feature=_GivenFeatures(x.shape[1]), subset_size=50)
    ours = {"gen": FeatureStats(x.shape[1]), "ref": FeatureStats(x.shape[1])}
    for name, data, real in (("gen", x, False), ("ref", y, True)):
        for start in range(0, len(data), 23):
            rows = data[start : start + 23]
            fid.update(torch.from_numpy(rows), real=real)
            kid.update(torch.from_numpy(rows), real=real)
            ours[name].update([f"{name}{start + i:05d}" for i in range(len(rows))], rows)
    gen, ref = ours["gen"], ours["ref"]
    assert len(gen._chunks) == -(-len(x) // 23)  # one chunk per update, none joined yet
    np.testing.assert_allclose(gen.sum, fid.fake_features_sum.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gen.cov_sum, fid.fake_features_cov_sum.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ref.cov_sum, fid.real_features_cov_sum.numpy(), rtol=1e-12)
    assert gen.n == int(fid.fake_features_num_samples) and ref.n == len(y)
    np.testing.assert_array_equal(gen.features, torch.cat(kid.fake_features).numpy())
    np.testing.assert_array_equal(ref.features, torch.cat(kid.real_features).numpy())
    assert len(gen._chunks) == 1 and gen.ids == [f"gen{i:05d}" for i in range(len(x))]
    assert fid_from_stats(gen, ref) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_update_appends_without_copying_earlier_rows() -> None:
    s = FeatureStats(4)
    first = np.arange(8, dtype=np.float32).reshape(2, 4)
    s.update(["a", "b"], first)
    kept = s._chunks[0]
    for k in range(50):
        s.update([f"x{k}"], np.ones((1, 4)))
    assert s._chunks[0] is kept and len(s._chunks) == 51  # the old form re-copied all rows
    assert s.features.shape == (52, 4) and s.n == 52
    s.update(["z"], np.zeros((1, 4)))  # after a read, updates append to the joined rows
    assert len(s._chunks) == 2 and s.features.shape == (53, 4) and s.ids[-1] == "z"


def test_merge_all_equals_pairwise_merges_and_the_whole(
    feats: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = feats
    whole = _stats(x)
    parts = _random_parts(x, 4, seed=5, chunks=3)
    at_once = FeatureStats.merge_all(parts[::-1])
    pairwise = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    for merged in (at_once, pairwise):
        assert merged.n == whole.n and merged.ids == whole.ids
        np.testing.assert_array_equal(merged.features, whole.features)
        np.testing.assert_allclose(merged.cov_sum, whole.cov_sum, rtol=1e-12)
        np.testing.assert_allclose(merged.moments()[1], whole.moments()[1], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="dimensions"):
        FeatureStats.merge_all([whole, FeatureStats(3)])


@pytest.mark.parametrize("m", [12, 200])
def test_written_out_formulas_are_torchmetrics_own(m: int) -> None:
    """`poly_mmd` and `fid_from_moments` repeat torchmetrics' functions (not imported, for its
    import time): the same float64 results, to the last bit."""
    from torchmetrics.image.fid import _compute_fid
    from torchmetrics.image.kid import poly_mmd as tm_poly_mmd

    rng = np.random.default_rng(m)
    r = torch.as_tensor(rng.normal(size=(m, 48)), dtype=torch.float64)
    g = torch.as_tensor(rng.normal(loc=0.3, size=(m, 48)), dtype=torch.float64)
    assert float(poly_mmd(r, g)) == float(tm_poly_mmd(r, g))
    moments = [*row_moments(g.numpy()), *row_moments(r.numpy())]
    tm = _compute_fid(*(torch.as_tensor(a, dtype=torch.float64) for a in moments))
    assert fid_from_moments(*moments) == float(tm)
