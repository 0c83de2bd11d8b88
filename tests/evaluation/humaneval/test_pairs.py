"""Blind pairs: same prompt, two models, random sides, anonymous ids, n per model pair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evaluation.humaneval.pairs import load_pairs, make_pairs
from tests.evaluation._fixtures import MODELS, eval_config, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def test_pairs_are_blind_same_prompt_and_two_models(run: Path) -> None:
    result = make_pairs(run, eval_config(), n_per_pair=10)
    pairs = load_pairs(run)
    assert len(pairs) == len(result.pairs) == 3 * 10  # 3 model pairs, 10 each
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("job_id")
    for p in pairs.itertuples(index=False):
        assert p.left_model != p.right_model
        assert manifest.at[p.left_job_id, "prompt"] == p.prompt
        assert manifest.at[p.right_job_id, "prompt"] == p.prompt
        assert manifest.at[p.left_job_id, "model"] == p.left_model
        # the id a rater sees says nothing about models or jobs
        assert not any(s in p.pair_id for s in (*MODELS, "job"))
    assert pairs["pair_id"].is_unique
    # sides are random: each model shows on both sides
    for m in MODELS:
        assert (pairs["left_model"] == m).any() and (pairs["right_model"] == m).any()
    assert "job-corrupt" not in set(pairs["left_job_id"]) | set(pairs["right_job_id"])


def test_pairs_are_capped_by_what_exists_and_reproducible(run: Path) -> None:
    big = make_pairs(run, eval_config(), n_per_pair=10_000)
    # 2 niches x 3 prompts x (2 x 2 images) = 24 same-prompt combinations per model pair; the
    # first model lost one prompt-0 image to the long prompt and its corrupt image is left out
    assert list(big.summary["available"]) == [22, 22, 24]
    assert list(big.summary["made"]) == [22, 22, 24]
    assert big.unreadable == ["job-corrupt"]
    again = make_pairs(run, eval_config(), n_per_pair=10_000)
    pd.testing.assert_frame_equal(big.pairs, again.pairs)
    other = make_pairs(run, eval_config(), n_per_pair=10_000, seed=99)
    assert not big.pairs["pair_id"].equals(other.pairs["pair_id"])


def test_default_n_comes_from_the_config(run: Path) -> None:
    result = make_pairs(run, eval_config(human_pairs_per_model_pair=3))
    assert (result.summary["requested"] == 3).all() and len(result.pairs) == 9


def test_no_pairs_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="easel humaneval pairs"):
        load_pairs(tmp_path)
