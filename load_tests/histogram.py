"""Latency histograms (HdrHistogram in microseconds) and the all-requests percentile ordering.

Histograms merge exactly, so per-model and overall percentiles are read from merged histograms,
never averaged. `all_requests_percentiles` reads a percentile of every attempted request from the
successes' histogram and the count of failures, which rank above every success.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from load_tests.intervals import nearest_rank, quantile_rank_bounds, quantile_rank_interval

__all__ = ["LatencyHistogram", "all_requests_percentiles"]

_LOW_US, _HIGH_US, _DIGITS = 1, 3_600_000_000, 3  # 1 µs .. 1 h at 3 significant digits


class LatencyHistogram:
    """An HdrHistogram in microseconds that also keeps the exact max and what it clamped."""

    def __init__(self) -> None:
        self.h = HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)
        self.max_ms = -math.inf
        self.clamped = 0

    def record_ms(self, ms: float) -> None:
        us = round(ms * 1000.0)
        if us < _LOW_US or us > _HIGH_US:
            self.clamped += 1
            us = min(max(us, _LOW_US), _HIGH_US)
        self.h.record_value(us)
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: LatencyHistogram) -> None:
        self.h.add(other.h)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.clamped += other.clamped

    @property
    def count(self) -> int:
        return int(self.h.get_total_count())

    def pct(self, p: float) -> float | None:
        return self.pcts((p,))[p]

    def pcts(self, ps: tuple[float, ...]) -> dict[float, float | None]:
        """Several percentiles in one pass over the counts (each pass costs milliseconds)."""
        if not self.count:
            return dict.fromkeys(ps)
        # HdrHistogram's own percentile walk, vectorised: the library loops over ~23k buckets
        # in Python for each percentile.
        counts = np.ctypeslib.as_array(self.h.counts)[: self.h.counts_len]
        cum = np.cumsum(counts)
        out: dict[float, float | None] = {}
        for p in ps:
            target = self.h.get_target_count_at_percentile(p)
            v = self.h.get_value_from_index(int(np.searchsorted(cum, target, side="left")))
            edge = self.h.get_highest_equivalent_value if p else self.h.get_lowest_equivalent_value
            out[p] = edge(v) / 1000.0
        return out

    def max(self) -> float | None:
        return self.max_ms if self.count else None

    def at_ranks(self, ranks: list[int]) -> list[float]:
        """Values at 1-based ranks (each within 1..count), read as `pcts` reads a percentile."""
        counts = np.ctypeslib.as_array(self.h.counts)[: self.h.counts_len]
        cum = np.cumsum(counts)
        out = []
        for r in ranks:
            v = self.h.get_value_from_index(int(np.searchsorted(cum, r, side="left")))
            out.append(self.h.get_highest_equivalent_value(v) / 1000.0)
        return out


def all_requests_percentiles(
    ok_hist: LatencyHistogram,
    n: int,
    pcts: tuple[float, ...],
    confidence: float,
    *,
    one_sided: bool = False,
) -> dict[float, dict[str, Any]]:
    """Percentiles of n attempted requests of which `ok_hist` holds the successes.

    The n − ok failures rank above every success ("beyond the deadline"). Per percentile:
    `ms` (None when it falls among the failures), `beyond` (bool), `ci_ms` ([lo, hi]) and
    `ci_beyond` ([bool, bool]): a bound is None when n requests cannot give it (too few) or when
    it falls among the failures (then its `ci_beyond` is true). `one_sided`: each bound holds
    alone at `confidence` (for verdicts), instead of both together.
    """
    ok = ok_hist.count
    bounds = quantile_rank_bounds if one_sided else quantile_rank_interval
    out: dict[float, dict[str, Any]] = {}
    for p in pcts:
        if n <= 0:
            out[p] = {"ms": None, "beyond": False, "ci_ms": [None, None], "ci_beyond": [False] * 2}
            continue
        rank = nearest_rank(n, p)
        lo_r, hi_r = bounds(n, p, confidence)
        wanted = sorted({r for r in (rank, lo_r, hi_r) if r is not None and r <= ok})
        values = dict(zip(wanted, ok_hist.at_ranks(wanted), strict=True)) if wanted else {}
        out[p] = {
            "ms": values.get(rank),
            "beyond": rank > ok,
            "ci_ms": [values.get(lo_r) if lo_r else None, values.get(hi_r) if hi_r else None],
            "ci_beyond": [lo_r is not None and lo_r > ok, hi_r is not None and hi_r > ok],
        }
    return out
