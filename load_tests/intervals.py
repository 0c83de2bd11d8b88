"""Distribution-free intervals for percentiles and proportions, from counts alone.

A percentile read from N requests is itself uncertain, and at small N very much so: with 20
requests the p95 is the largest or second largest of them. The interval used here needs no
assumption about the latency distribution: the q-quantile lies between the l-th and u-th order
statistics with probability P(l <= B < u), B ~ Binomial(N, q) counting requests below the
quantile. Ranks only, so it works on a histogram (read the value at each rank) and on the
all-requests ordering where failures sit above every success. A bound that N cannot give (too
few requests) is None: with 20 requests nothing bounds the p95 from above at 95 % confidence.

Proportions (success rate, goodput) get the Wilson score interval, which stays inside [0, 1]
and behaves at 0 and N successes, where the normal approximation does not.
"""

from __future__ import annotations

import math

from scipy.stats import binom, norm

__all__ = [
    "min_n_for_upper_bound",
    "nearest_rank",
    "quantile_rank_bounds",
    "quantile_rank_interval",
    "wilson_interval",
]


def nearest_rank(n: int, pct: float) -> int:
    """The 1-based rank HdrHistogram reads for percentile `pct` of n values (at least 1)."""
    return max(int(pct * n / 100.0 + 0.5), 1)


def quantile_rank_interval(
    n: int, pct: float, confidence: float = 0.95
) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) with P(X_(l) <= q-quantile <= X_(u)) >= confidence, two-sided.

    None for a side that n values cannot bound (l: below the smallest; u: above the largest).
    """
    alpha = (1.0 - confidence) / 2.0
    return _lower_rank(n, pct / 100.0, alpha), _upper_rank(n, pct / 100.0, alpha)


def quantile_rank_bounds(
    n: int, pct: float, confidence: float = 0.95
) -> tuple[int | None, int | None]:
    """One-sided ranks: X_(l) <= quantile with `confidence`, and X_(u) >= quantile likewise.

    What a pass/fail verdict needs: "the percentile is above the SLO" (X_(l) > SLO) or "below
    it" (X_(u) <= SLO), each at the stated confidence.
    """
    alpha = 1.0 - confidence
    return _lower_rank(n, pct / 100.0, alpha), _upper_rank(n, pct / 100.0, alpha)


def min_n_for_upper_bound(pct: float, confidence: float = 0.95) -> int:
    """Fewest values for which the largest is a one-sided upper bound of the percentile.

    1 − q^n >= confidence: for p95 at 95 % that is 59 requests; for p99, 299.
    """
    q = pct / 100.0
    return math.ceil(math.log(1.0 - confidence) / math.log(q))


def _lower_rank(n: int, q: float, alpha: float) -> int | None:
    # Largest l with P(B >= l) >= 1 − alpha, i.e. CDF(l − 1) <= alpha.
    if n <= 0:
        return None
    k = int(binom.ppf(alpha, n, q))  # smallest k with CDF(k) >= alpha
    if binom.cdf(k, n, q) > alpha:
        k -= 1
    return k + 1 if k >= 0 else None


def _upper_rank(n: int, q: float, alpha: float) -> int | None:
    # Smallest u with P(B <= u − 1) >= 1 − alpha.
    if n <= 0:
        return None
    u = int(binom.ppf(1.0 - alpha, n, q)) + 1
    return u if u <= n else None


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n; None when n is 0."""
    if n <= 0:
        return None
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
