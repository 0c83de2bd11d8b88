"""The composite: anchored mappings, renormalised weights without votes, weight sensitivity."""

from __future__ import annotations

import pandas as pd
import pytest

from config import CompositeAnchors, load_config
from evaluation.composite import (
    clip_to_score,
    combine,
    composite_scores,
    fid_to_score,
    weight_sensitivity,
)

ANCHORS = CompositeAnchors()  # fid 0..300, clip 0..0.35, clip_ref 0.5..0.95
WEIGHTS = {"fid": 0.4, "clip": 0.3, "human": 0.3}


def test_fid_mapping_is_anchored_and_clipped() -> None:
    assert fid_to_score(0.0, ANCHORS) == 100
    assert fid_to_score(150.0, ANCHORS) == pytest.approx(50)
    assert fid_to_score(300.0, ANCHORS) == 0
    assert fid_to_score(900.0, ANCHORS) == 0


def test_clip_mapping_blends_text_and_reference() -> None:
    assert clip_to_score(0.35, None, ANCHORS, 0.5) == pytest.approx(100)
    assert clip_to_score(0.175, None, ANCHORS, 0.5) == pytest.approx(50)
    assert clip_to_score(None, 0.95, ANCHORS, 0.5) == pytest.approx(100)
    assert clip_to_score(0.0, 0.95, ANCHORS, 0.5) == pytest.approx(50)
    assert clip_to_score(0.0, 0.95, ANCHORS, 0.25) == pytest.approx(25)
    assert clip_to_score(None, None, ANCHORS, 0.5) is None


def test_composite_uses_the_weights_and_renormalises_without_votes() -> None:
    full, used = combine({"fid": 80, "clip": 60, "human": 40}, WEIGHTS)
    assert full == pytest.approx(0.4 * 80 + 0.3 * 60 + 0.3 * 40)
    assert used == ["fid", "clip", "human"]
    partial, used = combine({"fid": 80, "clip": 60, "human": None}, WEIGHTS)
    assert partial == pytest.approx((0.4 * 80 + 0.3 * 60) / 0.7) and used == ["fid", "clip"]
    assert combine({"fid": None, "clip": None, "human": None}, WEIGHTS) == (None, [])


def _table(rows: list[tuple[str, str, float, float, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["model", "niche", "fid_score_0_100", "clip_score_0_100", "human_score_0_100"]
    )


def test_scores_do_not_depend_on_the_other_models_in_the_run() -> None:
    both = composite_scores(_table([("a", "x", 90, 50, 60), ("b", "x", 10, 20, 30)]), WEIGHTS)
    alone = composite_scores(_table([("a", "x", 90, 50, 60)]), WEIGHTS)
    assert both.loc[0, "composite"] == alone.loc[0, "composite"]  # anchored, not min-max


def test_weight_sensitivity_detects_a_fragile_ranking() -> None:
    # a: strong FID, weak CLIP; b: the reverse. Close enough that ±0.1 on FID flips them.
    fragile = _table([("a", "x", 80, 40, 50), ("b", "x", 50, 78, 50)])
    sens = weight_sensitivity(composite_scores(fragile, WEIGHTS), WEIGHTS, 0.1)
    assert set(sens["weight"]) == {"fid", "clip", "human"}
    fid_up = sens[(sens["weight"] == "fid") & (sens["delta"] > 0)].iloc[0]
    assert fid_up["w_fid"] == pytest.approx(0.5)
    assert fid_up["w_clip"] + fid_up["w_human"] == pytest.approx(0.5)
    assert not sens["same_ranking"].all()

    robust = _table([("a", "x", 90, 90, 90), ("b", "x", 10, 10, 10)])
    assert weight_sensitivity(robust, WEIGHTS, 0.1)["same_ranking"].all()


def test_sensitivity_skips_components_nobody_has() -> None:
    no_votes = _table([("a", "x", 90, 40, None), ("b", "x", 50, 70, None)])
    sens = weight_sensitivity(no_votes, WEIGHTS, 0.1)
    assert set(sens["weight"]) == {"fid", "clip"}


def test_config_rejects_unordered_anchors() -> None:
    from config import ConfigError, parse_config

    data = load_config().model_dump(mode="json")
    data["evaluation"]["anchors"]["clip_ref_best"] = 0.1
    with pytest.raises(ConfigError, match="clip_ref_worst must be below clip_ref_best"):
        parse_config(data)
