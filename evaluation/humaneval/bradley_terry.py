"""Bradley-Terry with ties (Davidson, 1970), bootstrap intervals, win rates, 0-100 scores.

Model i beats j with probability πᵢ / D, loses with πⱼ / D, and ties with ν·sqrt(πᵢπⱼ) / D, where
D = πᵢ + πⱼ + ν·sqrt(πᵢπⱼ) and πᵢ = exp(θᵢ). θ is fitted by maximum likelihood with a weak
Gaussian prior (so a model that never lost keeps a finite strength), and reported on the Elo scale
(400/ln 10 per unit of θ), centred on the mean. Intervals come from refitting on resampled votes:
ties stay in every resample as ties (they inform ν and, at half weight, both strengths), and when
the votes name their raters the raters are the unit resampled (a cluster bootstrap): one rater's
votes share that rater's taste, so resampling votes as if independent would make a handful of
raters look like hundreds and the interval far too narrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

__all__ = [
    "ELO_PER_THETA",
    "BTFit",
    "bootstrap_bt",
    "fit_bt",
    "human_score",
    "win_rate_matrix",
]

ELO_PER_THETA = 400.0 / np.log(10.0)
_PRIOR = 0.01  # Gaussian prior precision on θ: worth a fraction of one vote


@dataclass
class BTFit:
    """Fitted strengths: `elo` per model (centred on their mean), tie parameter `nu`, N votes."""

    models: list[str]
    elo: np.ndarray
    nu: float
    n_votes: int

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.models, self.elo.tolist(), strict=True))


def _counts(votes: pd.DataFrame, models: Sequence[str]) -> np.ndarray:
    """(K, K, 2) counts: [i, j, 0] wins of i over j, [i, j, 1] ties (i < j stored once)."""
    index = {m: k for k, m in enumerate(models)}
    c = np.zeros((len(models), len(models), 2))
    a = votes["model_a"].map(index).to_numpy()
    b = votes["model_b"].map(index).to_numpy()
    out = votes["outcome"].to_numpy()
    for i, j, o in zip(a, b, out, strict=True):
        if o == "a":
            c[i, j, 0] += 1
        elif o == "b":
            c[j, i, 0] += 1
        else:
            lo, hi = min(i, j), max(i, j)
            c[lo, hi, 1] += 1
    return c


def _fit_counts(c: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    k = c.shape[0]
    wins = c[:, :, 0]
    ties = c[:, :, 1]

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        theta, log_nu = params[:k], params[k]
        nu = np.exp(log_nu)
        ti, tj = theta[:, None], theta[None, :]
        # log D for every ordered pair, computed stably around the larger strength
        m = np.maximum(ti, tj)
        d = np.exp(ti - m) + np.exp(tj - m) + nu * np.exp((ti + tj) / 2 - m)
        log_d = m + np.log(d)
        p_i = np.exp(ti - log_d)
        p_j = np.exp(tj - log_d)
        p_t = nu * np.exp((ti + tj) / 2 - log_d)
        # wins[i, j]: i beat j; ties[i, j] (i < j): a tie between them
        ll = (wins * (ti - log_d)).sum() + (ties * (log_nu + (ti + tj) / 2 - log_d)).sum()
        # gradients: d log p(i wins) / dθi = 1 - (p_i + p_t/2), / dθj = -(p_j + p_t/2)
        dti = 1 - (p_i + p_t / 2)
        dtj = -(p_j + p_t / 2)
        g = (wins * dti).sum(axis=1) + (wins * dtj).sum(axis=0)
        tie_di = 0.5 - (p_i + p_t / 2)
        tie_dj = 0.5 - (p_j + p_t / 2)
        g += (ties * tie_di).sum(axis=1) + (ties * tie_dj).sum(axis=0)
        g_nu = (ties * (1 - p_t)).sum() - (wins * p_t).sum()
        obj = -ll + 0.5 * _PRIOR * (theta @ theta)
        grad = np.concatenate([-g + _PRIOR * theta, [-g_nu]])
        return float(obj), grad

    if start is None:
        start = np.zeros(k + 1)
        start[k] = np.log(0.5)
    res = minimize(nll, start, jac=True, method="L-BFGS-B")
    theta = res.x[:k] - res.x[:k].mean()
    return theta, float(np.exp(res.x[k]))


def fit_bt(votes: pd.DataFrame, models: Sequence[str] | None = None) -> BTFit:
    """Fit strengths from votes with columns model_a, model_b, outcome ('a', 'b' or 'tie').

    `models` defaults to every model that appears in a vote. ValueError when there are none.
    """
    _check(votes)
    if models is None:
        models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    models = list(models)
    if len(models) < 2 or votes.empty:
        raise ValueError("a Bradley-Terry fit needs votes between at least two models")
    theta, nu = _fit_counts(_counts(votes, models))
    return BTFit(models=models, elo=theta * ELO_PER_THETA, nu=nu, n_votes=len(votes))


def bootstrap_bt(
    votes: pd.DataFrame,
    models: Sequence[str],
    *,
    resamples: int,
    seed: int = 0,
    cluster: str | None = None,
) -> np.ndarray:
    """(resamples, K) Elo strengths refitted on resampled votes.

    `cluster`: a column (e.g. 'rater') whose values are resampled with replacement, each taking
    all its votes; used when it holds at least two values. Otherwise votes are drawn one by one.
    """
    _check(votes)
    rng = np.random.default_rng(seed)
    models = list(models)
    base = _counts(votes, models)
    theta, nu = _fit_counts(base)
    start = np.append(theta, np.log(nu))  # each refit starts from the full fit: fewer iterations
    out = np.empty((resamples, len(models)))
    if cluster is not None and cluster in votes and votes[cluster].nunique() >= 2:
        tables = np.stack([_counts(v, models) for _, v in votes.groupby(cluster, sort=True)])
        for r in range(resamples):
            pick = np.bincount(rng.integers(0, len(tables), len(tables)), minlength=len(tables))
            c = np.tensordot(pick.astype(float), tables, axes=1)
            out[r] = _fit_counts(c, start)[0] * ELO_PER_THETA
        return out
    # resample through per-vote counts: each vote is one cell of the (K, K, 2) table
    cells = np.argwhere(base > 0)
    weights = base[base > 0]
    n = int(weights.sum())
    for r in range(resamples):
        draws = rng.multinomial(n, weights / n)
        c = np.zeros_like(base)
        c[tuple(cells.T)] = draws
        out[r] = _fit_counts(c, start)[0] * ELO_PER_THETA
    return out


def win_rate_matrix(
    votes: pd.DataFrame, models: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rate, n): rate[a][b] = share of a-vs-b votes a won, ties counted half; NaN without votes."""
    _check(votes)
    c = _counts(votes, list(models))
    wins = c[:, :, 0]
    ties = c[:, :, 1] + c[:, :, 1].T
    n = wins + wins.T + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, (wins + ties / 2) / n, np.nan)
    return (
        pd.DataFrame(rate, index=list(models), columns=list(models)),
        pd.DataFrame(n.astype(int), index=list(models), columns=list(models)),
    )


def human_score(elo: np.ndarray | float, anchor_elo: float, span: float) -> np.ndarray:
    """Anchored 0-100: 50 at `anchor_elo`, ±50 at ±span/2 Elo, clipped to [0, 100]."""
    return np.clip(50 + 100 * (np.asarray(elo, dtype=float) - anchor_elo) / span, 0, 100)


def _check(votes: pd.DataFrame) -> None:
    missing = {"model_a", "model_b", "outcome"} - set(votes.columns)
    if missing:
        raise ValueError(f"votes lack columns {sorted(missing)}")
    bad = set(votes["outcome"]) - {"a", "b", "tie"}
    if bad:
        raise ValueError(f"vote outcomes must be 'a', 'b' or 'tie', got {sorted(bad)}")
    if (votes["model_a"] == votes["model_b"]).any():
        raise ValueError("a vote compares a model with itself")
