"""Each generator's rate and shape match its parameters; the mix follows the config."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from load_tests.generators import (
    burst_arrivals,
    diurnal_arrivals,
    gamma_arrivals,
    generate_manifest,
    poisson_arrivals,
    ramp_arrivals,
)

N = 20_000


def _rng(seed=7):
    return np.random.default_rng(seed)


def _mean_rate(t):
    return (len(t) - 1) / (t[-1] - t[0])


def _rate_in(t, lo, hi):
    return np.count_nonzero((t >= lo) & (t < hi)) / (hi - lo)


def test_poisson_rate_and_exponential_gaps():
    t = poisson_arrivals(N, 50.0, _rng())
    assert t[0] == 0 and np.all(np.diff(t) >= 0)
    assert _mean_rate(t) == pytest.approx(50.0, rel=0.03)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 50.0)).pvalue > 0.001


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_rate_and_burstiness(burstiness):
    t = gamma_arrivals(N, 20.0, burstiness, _rng())
    gaps = np.diff(t)
    assert _mean_rate(t) == pytest.approx(20.0, rel=0.05)
    # Squared coefficient of variation of gamma gaps is 1/shape.
    assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(1 / burstiness, rel=0.1)
    ks = stats.kstest(gaps, "gamma", args=(burstiness, 0, 1 / (20.0 * burstiness)))
    assert ks.pvalue > 0.001


def test_diurnal_mean_rate_and_peak_to_trough():
    rate, peak = 100.0, 4.0
    t = diurnal_arrivals(N, rate, peak, _rng())
    d = N / rate
    assert t[-1] <= d and _mean_rate(t) == pytest.approx(rate, rel=0.03)
    base = 2 * rate / (peak + 1)
    # Rate in 20 slices against the curve λ(t) = base·(1 + (peak−1)(1 − cos 2πt/D)/2).
    edges = np.linspace(0, d, 21)
    for lo, hi in itertools.pairwise(edges):
        mid = (lo + hi) / 2
        expect = base * (1 + (peak - 1) * (1 - math.cos(2 * math.pi * mid / d)) / 2)
        assert _rate_in(t, lo, hi) == pytest.approx(expect, rel=0.12)
    trough = _rate_in(t, 0, 0.05 * d)
    crest = _rate_in(t, 0.475 * d, 0.525 * d)
    assert crest / trough == pytest.approx(peak, rel=0.15)


def test_burst_base_rate_and_flash_crowds():
    rate, peak, every, length = 20.0, 5.0, 10.0, 2.0
    t = burst_arrivals(N, rate, peak, every, length, _rng())
    phase = np.mod(t, every)
    periods = math.floor(t[-1] / every)
    t_full = t[t < periods * every]
    ph = np.mod(t_full, every)
    in_burst = np.count_nonzero(ph >= every - length) / (periods * length)
    outside = np.count_nonzero(ph < every - length) / (periods * (every - length))
    assert outside == pytest.approx(rate, rel=0.05)
    assert in_burst == pytest.approx(rate * peak, rel=0.05)
    assert len(phase) == N


def test_ramp_follows_the_line():
    r0, r1 = 10.0, 100.0
    t = ramp_arrivals(N, r0, r1, _rng())
    d = 2 * N / (r0 + r1)
    assert np.all(np.diff(t) >= 0) and t[-1] <= d * 1.0001
    edges = np.linspace(0, d, 11)
    for lo, hi in itertools.pairwise(edges):
        expect = r0 + (r1 - r0) * ((lo + hi) / 2) / d
        assert _rate_in(t, lo, hi) == pytest.approx(expect, rel=0.12)


def test_same_seed_same_manifest_other_seed_other(cfg):
    a = generate_manifest(cfg, pattern="gamma", jobs=200, rate=5, seed=11, burstiness=0.5)
    b = generate_manifest(cfg, pattern="gamma", jobs=200, rate=5, seed=11, burstiness=0.5)
    c = generate_manifest(cfg, pattern="gamma", jobs=200, rate=5, seed=12, burstiness=0.5)
    assert a.equals(b)
    assert not a.equals(c)


def test_mix_comes_from_the_config(make_cfg):
    niches = [
        {
            "name": "a",
            "display_name": "A",
            "prompts": ["a1", "a2"],
            "weight": 3,
        },
        {"name": "b", "display_name": "B", "prompts": ["b1"], "weight": 1},
    ]
    cfg = make_cfg(traffic={"model_mix": {"sdxl-turbo": 3, "flux2-dev": 1}}, niches=niches)
    t = generate_manifest(cfg, jobs=8_000, rate=100, seed=2)
    models = np.array(t.column("model").to_pylist())
    niche = np.array(t.column("niche").to_pylist())
    assert set(models) == {"sdxl-turbo", "flux2-dev"}
    assert np.mean(models == "sdxl-turbo") == pytest.approx(0.75, abs=0.02)
    assert np.mean(niche == "a") == pytest.approx(0.75, abs=0.02)
    for row in t.to_pylist()[:200]:
        assert row["prompt"][0] == row["niche"]
        m = cfg.model(row["model"])
        assert row["width"] == row["height"] == m.resolution.default
        assert row["steps"] == m.steps.default
    assert len(set(t.column("job_id").to_pylist())) == t.num_rows


def test_defaults_come_from_the_config(make_cfg):
    cfg = make_cfg(traffic={"pattern": "ramp", "jobs": 123, "rate": 2.0, "ramp_to": 6.0})
    t = generate_manifest(cfg)
    assert t.num_rows == 123
    arr = t.column("arrival_s").to_numpy()
    assert arr[-1] <= 2 * 123 / 8.0 + 1e-9


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"pattern": "ramp"}, "needs ramp_to"),
        ({"pattern": "poisson", "burstyness": 2}, "unknown manifest parameter"),
        ({"pattern": "poisson", "rate": -1}, "rate"),
        ({"pattern": "lunar"}, "unknown pattern"),
        ({"pattern": "poisson", "window": (0, 1)}, "to pattern 'replay' only"),
        ({"pattern": "burst", "burst_every_s": 2, "burst_length_s": 3}, "below burst_every_s"),
    ],
)
def test_bad_parameters_are_clear_errors(cfg, kw, message):
    with pytest.raises(ValueError, match=message):
        generate_manifest(cfg, jobs=10, **kw)
