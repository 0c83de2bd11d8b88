"""Interval helpers against independent implementations (scipy)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from load_tests.intervals import wilson_interval


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 3), (7, 20), (49, 50)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.8, method="wilson")
    assert wilson_interval(k, n, 0.8) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson_interval(0, 0) is None
