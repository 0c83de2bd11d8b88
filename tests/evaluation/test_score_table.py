"""The flags cell of scores.parquet: joined with FLAG_SEP, split back into the same flags."""

from __future__ import annotations

from evaluation.score_table import FLAG_SEP, _join_flags, split_flags


def test_flags_round_trip_even_when_a_flag_holds_the_separator() -> None:
    flags = ["no human votes: composite over fid+clip", f"N=6 below 2000{FLAG_SEP}read KID"]
    cell = _join_flags(flags)
    assert split_flags(cell) == [flags[0], "N=6 below 2000, read KID"]


def test_split_flags_of_an_empty_cell() -> None:
    assert split_flags("") == [] and split_flags(None) == []


# --- rows from hand-made statistics: the FID gate, KID's subset size, anchored human scores ----

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from evaluation.clip_score import ClipSpec  # noqa: E402
from evaluation.features import FeatureSpec  # noqa: E402
from evaluation.fid import FeatureStats  # noqa: E402
from evaluation.humaneval.fit import HumanEvalResult  # noqa: E402
from evaluation.pool import GroupStats  # noqa: E402
from evaluation.references import ReferenceSet  # noqa: E402
from evaluation.score_table import Reference, TableContext, model_row, niche_row  # noqa: E402
from tests.evaluation._fixtures import eval_config  # noqa: E402

NICHE = "corporate-headshots"
DIM = 128  # the tiny feature net's


def _feats(n: int, seed: int, prefix: str, shift: float = 0.0) -> FeatureStats:
    s = FeatureStats(DIM)
    rng = np.random.default_rng(seed)
    s.update([f"{prefix}{i:05d}" for i in range(n)], rng.normal(loc=shift, size=(n, DIM)))
    return s


def _ctx(n_ref: int, human: HumanEvalResult | None = None) -> TableContext:
    spec = FeatureSpec("tiny", "", "tiny:test", DIM, "tiny (test)", False, 64)
    clip = ClipSpec("local-dir:x", None, "clip:test", "tiny CLIP (test)", False)
    refset = ReferenceSet(NICHE, "/refs", tuple(f"r{i}" for i in range(n_ref)), synthetic=True)
    ref = Reference(refset, "k", _feats(n_ref, 1, "r"))
    return TableContext(eval_config(), spec, clip, {NICHE: ref}, human)


def _group(n: int) -> tuple[GroupStats, pd.DataFrame]:
    g = GroupStats(_feats(n, 2, "job-", shift=0.3))
    g.clip.add_text([0.2] * n, [False] * n)
    images = pd.DataFrame(
        {
            "job_id": g.features.ids,
            "model": "flux2-dev",
            "niche": NICHE,
            "prompt": [f"p{i % 25}" for i in range(n)],
            "ok": True,
            "clip_text": 0.2,
            "clip_ref": None,
        }
    )
    return g, images


def test_a_64_image_reference_set_gets_no_fid_but_kid_and_a_flag() -> None:
    g, images = _group(300)  # plenty of generated images: the references alone are too few
    row = niche_row(_ctx(64), "flux2-dev", NICHE, g, images)
    assert row["fid"] is None and row["fid_score_0_100"] is None
    assert row["n_ref"] == 64 and row["kid_mean"] is not None
    assert "FID n/a" in row["fid_na"] and f"{NICHE} 64" in row["fid_na"]
    assert row["fid_na"] in row["flags"] and "fid" not in row["composite_components"]
    # KID says the subset size it could use: the 64 references cap the configured 1000.
    assert row["kid_subset_size"] == 64 and "KID over 10 subsets of 64 images" in row["flags"]
    # The "all" row has the same gate over each niche's references.
    all_row = model_row(_ctx(64), "flux2-dev", {("gen", "flux2-dev", NICHE): g}, images)
    assert all_row["fid"] is None and "FID n/a" in all_row["flags"]


def test_enough_references_give_fid_with_its_reference_n_and_interval() -> None:
    g, images = _group(300)
    row = niche_row(_ctx(400), "flux2-dev", NICHE, g, images)
    assert row["fid"] is not None and row["fid_na"] is None and row["n_ref"] == 400
    assert row["fid_score_lo"] <= row["fid_score_0_100"] <= row["fid_score_hi"]
    assert row["composite_components"] == "fid+clip"
    assert row["clipscore"] == pytest.approx(20.0)  # torchmetrics: max(100 · mean cos, 0)


def _human(anchored: bool) -> HumanEvalResult:
    scores = pd.DataFrame(
        [
            {
                "scope": NICHE,
                "model": "flux2-dev",
                "human_score_0_100": 70.0,
                "human_lo": 60.0,
                "human_hi": 80.0,
                "n_votes": 40,
                "anchor": "model sdxl-turbo" if anchored else "mean of fitted models",
                "anchored": anchored,
            }
        ]
    )
    draws = {NICHE: {"flux2-dev": np.full(20, 70.0)}}
    return HumanEvalResult(scores, pd.DataFrame(), draws, 40)


def test_only_an_anchored_human_score_enters_the_composite() -> None:
    g, images = _group(40)
    loose = niche_row(_ctx(400, _human(anchored=False)), "flux2-dev", NICHE, g, images)
    assert loose["human_score_0_100"] == 70.0 and not loose["human_anchored"]
    assert "human" not in loose["composite_components"]
    assert "left out of the composite" in loose["flags"]
    fixed = niche_row(_ctx(400, _human(anchored=True)), "flux2-dev", NICHE, g, images)
    assert fixed["human_anchored"] and "human" in fixed["composite_components"]
    assert fixed["composite"] != loose["composite"]
