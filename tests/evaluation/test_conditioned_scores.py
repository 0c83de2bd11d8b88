"""Identity and garment figures per group: sums that merge, intervals, the quality-floor rule."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from evaluation.conditioned_scores import (
    FLOOR_METRICS,
    GarmentStats,
    IdentityStats,
    floor_met,
    floor_met_column,
    identity_columns,
    wilson_interval,
)
from evaluation.identity import IdentityRecord


def _records(n: int, seed: int) -> list[IdentityRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.integers(0, 3)
        if kind == 0:
            out.append(IdentityRecord(1, 0, None, None))  # reference without a face
        elif kind == 1:
            out.append(IdentityRecord(1, 1, False, None))  # no face in the output
        else:
            out.append(IdentityRecord(2, 2, True, float(rng.uniform(0.6, 1.0))))
    return out


def test_identity_sums_merge_to_the_one_pass_result() -> None:
    recs = _records(40, 0)
    one, a, b = IdentityStats(), IdentityStats(), IdentityStats()
    for i, r in enumerate(recs):
        one.add(r)
        (a if i % 3 else b).add(r)
    merged = a.merge(b)
    assert (merged.jobs, merged.usable, merged.faces) == (one.jobs, one.usable, one.faces)
    assert merged.cos_sum == pytest.approx(one.cos_sum)
    found = [r.cosine for r in recs if r.face_found]
    assert one.jobs == 40 and one.usable == sum(r.ref_faces > 0 for r in recs)
    assert one.face_rate == pytest.approx(len(found) / one.usable)
    assert one.cos_mean == pytest.approx(np.mean(found))
    g = GarmentStats()
    g.add([0.5, 0.7])
    assert g.merge(GarmentStats(1, 0.9, 0.81)).cos_mean == pytest.approx(0.7)
    for obj in (one, g):
        assert pickle.loads(pickle.dumps(obj)) == obj


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 3), (7, 20), (49, 50)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson_interval(0, 0) is None


def test_floor_rule_no_face_fails_and_no_reference_face_does_not_count() -> None:
    assert floor_met(True, 0.9, 0.8) is True
    assert floor_met(True, 0.7, 0.8) is False
    assert floor_met(False, None, 0.8) is False  # no face in the output: a failure
    assert floor_met(None, None, 0.8) is None  # the reference had no face: not judged
    assert floor_met(True, 0.9, None) is None  # no floor set
    images = pd.DataFrame(
        {
            "niche": ["h", "h", "h", "t", "p"],
            "face_found": pd.array([True, False, None, True, None], dtype="boolean"),
            "identity_cos": pd.array([0.95, None, None, 0.5, None], dtype="Float64"),
            "garment_cos": pd.array([None, None, None, 0.4, None], dtype="Float64"),
        }
    )
    got = floor_met_column(images, "identity", {"h": 0.9, "t": 0.6})
    assert got.tolist() == [True, False, pd.NA, False, pd.NA]
    got = floor_met_column(images, "garment", {"t": 0.3})
    assert got.tolist() == [pd.NA, pd.NA, pd.NA, True, pd.NA]
    assert set(FLOOR_METRICS) == {"identity", "garment"}


def test_identity_columns_count_failures_and_bootstrap_over_prompts() -> None:
    recs = [
        IdentityRecord(1, 1, True, 0.95),
        IdentityRecord(1, 1, True, 0.85),
        IdentityRecord(1, 1, False, None),
        IdentityRecord(1, 0, None, None),
        IdentityRecord(1, 1, True, 0.90),
    ]
    stats = IdentityStats()
    for r in recs:
        stats.add(r)
    mine = pd.DataFrame(
        {
            "niche": ["h"] * 5,
            "prompt": ["a", "b", "a", "b", "c"],
            "face_found": [r.face_found for r in recs],
            "identity_cos": [r.cosine for r in recs],
        }
    )
    mine["identity_floor_met"] = floor_met_column(mine, "identity", {"h": 0.88})
    cols, flags = identity_columns(stats, mine, draws=200, seed=0)
    assert (cols["identity_jobs"], cols["identity_n"], cols["identity_faces"]) == (5, 4, 3)
    assert cols["identity_face_rate"] == pytest.approx(0.75)
    lo, hi = cols["identity_face_rate_lo"], cols["identity_face_rate_hi"]
    assert (lo, hi) == pytest.approx(wilson_interval(3, 4))
    assert cols["identity_cos"] == pytest.approx(0.9)
    assert cols["identity_cos_lo"] <= 0.9 <= cols["identity_cos_hi"]
    assert cols["identity_cos_lo"] >= 0.85 and cols["identity_cos_hi"] <= 0.95
    assert cols["identity_floor_n"] == 4 and cols["identity_floor_rate"] == pytest.approx(0.5)
    assert any("no face found in 1 of 4 outputs" in f for f in flags)
    assert any("1 jobs' reference photos hold no detectable face" in f for f in flags)
    # one prompt says nothing about the spread: no interval rather than a zero-width one
    one_prompt = mine.assign(prompt="a")
    cols, _ = identity_columns(stats, one_prompt, draws=50, seed=0)
    assert cols["identity_cos"] is not None and cols["identity_cos_lo"] is None
