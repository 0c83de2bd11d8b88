"""Identity and garment figures per group: sums that merge, intervals, flags."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from evaluation.conditioned_scores import GarmentStats, IdentityStats, identity_columns
from evaluation.identity import IdentityRecord
from load_tests.intervals import wilson_interval


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
    cols, flags = identity_columns(stats, mine, draws=200, seed=0)
    assert (cols["identity_jobs"], cols["identity_n"], cols["identity_faces"]) == (5, 4, 3)
    assert cols["identity_face_rate"] == pytest.approx(0.75)
    lo, hi = cols["identity_face_rate_lo"], cols["identity_face_rate_hi"]
    assert (lo, hi) == pytest.approx(wilson_interval(3, 4))
    assert cols["identity_cos"] == pytest.approx(0.9)
    assert cols["identity_cos_lo"] <= 0.9 <= cols["identity_cos_hi"]
    assert cols["identity_cos_lo"] >= 0.85 and cols["identity_cos_hi"] <= 0.95
    assert not any(k.startswith("identity_floor") for k in cols)  # floors: quality_goodput
    assert any("no face found in 1 of 4 outputs" in f for f in flags)
    assert any("1 jobs' reference photos hold no detectable face" in f for f in flags)
    # one prompt says nothing about the spread: no interval rather than a zero-width one
    one_prompt = mine.assign(prompt="a")
    cols, _ = identity_columns(stats, one_prompt, draws=50, seed=0)
    assert cols["identity_cos"] is not None and cols["identity_cos_lo"] is None
