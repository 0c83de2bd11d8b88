"""Bradley-Terry with ties recovers known strengths from simulated votes."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from evaluation.humaneval.bradley_terry import (
    ELO_PER_THETA,
    bootstrap_bt,
    fit_bt,
    human_score,
    win_rate_matrix,
)


def _simulate(theta: dict[str, float], nu: float, per_pair: int, seed: int) -> pd.DataFrame:
    """Votes drawn from the Davidson model with these strengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in itertools.combinations(theta, 2):
        pa, pb = np.exp(theta[a]), np.exp(theta[b])
        pt = nu * np.sqrt(pa * pb)
        probs = np.array([pa, pb, pt]) / (pa + pb + pt)
        for outcome in rng.choice(["a", "b", "tie"], size=per_pair, p=probs):
            # random sides, as the pairs file makes them
            if rng.random() < 0.5:
                rows.append((a, b, outcome))
            else:
                rows.append((b, a, {"a": "b", "b": "a", "tie": "tie"}[outcome]))
    return pd.DataFrame(rows, columns=["model_a", "model_b", "outcome"])


def test_recovers_known_strengths_within_bootstrap_intervals() -> None:
    theta = {"m0": 0.0, "m1": 0.6, "m2": 1.2, "m3": -0.8}
    votes = _simulate(theta, nu=0.4, per_pair=400, seed=0)
    models = sorted(theta)
    fit = fit_bt(votes, models)
    boot = bootstrap_bt(votes, models, resamples=100, seed=1)
    true = np.array([theta[m] for m in models])
    true_elo = (true - true.mean()) * ELO_PER_THETA
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    for k, m in enumerate(models):
        assert lo[k] <= true_elo[k] <= hi[k], (m, lo[k], true_elo[k], hi[k])
        assert abs(fit.elo[k] - true_elo[k]) < 40
    assert fit.nu == pytest.approx(0.4, abs=0.1)
    assert list(np.argsort(fit.elo)) == list(np.argsort(true_elo))


def test_undefeated_model_keeps_a_finite_strength() -> None:
    votes = pd.DataFrame({"model_a": ["a"] * 10, "model_b": ["b"] * 10, "outcome": ["a"] * 10})
    fit = fit_bt(votes)
    assert np.isfinite(fit.elo).all() and fit.elo[0] > fit.elo[1]


def test_win_rate_matrix_counts_ties_as_half() -> None:
    votes = pd.DataFrame(
        {
            "model_a": ["a", "b", "a", "a"],
            "model_b": ["b", "a", "b", "c"],
            "outcome": ["a", "a", "tie", "b"],
        }
    )
    rate, n = win_rate_matrix(votes, ["a", "b", "c"])
    assert n.loc["a", "b"] == 3 and n.loc["b", "a"] == 3
    assert rate.loc["a", "b"] == pytest.approx(1.5 / 3)
    assert rate.loc["b", "a"] == pytest.approx(1.5 / 3)
    assert rate.loc["c", "a"] == 1.0
    assert np.isnan(rate.loc["b", "c"])


def test_human_score_is_anchored() -> None:
    scores = human_score(np.array([0, 200, -200, 900]), 0, 400)
    np.testing.assert_allclose(scores, [50, 100, 0, 100])


def test_bad_votes_are_rejected() -> None:
    with pytest.raises(ValueError, match="outcomes"):
        fit_bt(pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "outcome": ["left"]}))
    with pytest.raises(ValueError, match="itself"):
        fit_bt(pd.DataFrame({"model_a": ["a"], "model_b": ["a"], "outcome": ["a"]}))


def test_rater_clusters_widen_the_interval_when_raters_disagree() -> None:
    # Four raters with opposite tastes, 150 votes each: two prefer m1, two prefer m0. Votes
    # resampled one by one look like 600 independent opinions; raters resampled show that the
    # verdict rests on four people.
    rows = []
    for r, fav in enumerate(["m1", "m1", "m0", "m0"]):
        rng = np.random.default_rng(r)
        for _ in range(150):
            u = rng.random()
            outcome = "tie" if u < 0.2 else ("a" if (u < 0.9) == (fav == "m0") else "b")
            rows.append(("m0", "m1", outcome, f"rater{r}"))
    votes = pd.DataFrame(rows, columns=["model_a", "model_b", "outcome", "rater"])
    by_vote = bootstrap_bt(votes, ["m0", "m1"], resamples=100, seed=1)
    by_rater = bootstrap_bt(votes, ["m0", "m1"], resamples=100, seed=1, cluster="rater")

    def width(draws: np.ndarray) -> float:
        gap = draws[:, 1] - draws[:, 0]
        return float(np.percentile(gap, 97.5) - np.percentile(gap, 2.5))

    assert width(by_rater) > 3 * width(by_vote)
    # One rater: nothing to cluster on, the votes are the unit.
    one = votes[votes["rater"] == "rater0"]
    np.testing.assert_array_equal(
        bootstrap_bt(one, ["m0", "m1"], resamples=20, seed=2, cluster="rater"),
        bootstrap_bt(one, ["m0", "m1"], resamples=20, seed=2),
    )


def test_ties_stay_ties_in_every_resample() -> None:
    # All ties: no resample may invent a winner, so every draw keeps the two models level.
    votes = pd.DataFrame(
        [("m0", "m1", "tie", f"r{i % 3}") for i in range(90)],
        columns=["model_a", "model_b", "outcome", "rater"],
    )
    draws = bootstrap_bt(votes, ["m0", "m1"], resamples=30, seed=0, cluster="rater")
    assert np.abs(draws[:, 1] - draws[:, 0]).max() < 1e-6
