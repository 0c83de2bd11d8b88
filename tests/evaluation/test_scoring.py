"""`score_run` / `easel score` end to end on a small run folder, through a real Ray actor pool."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from easel.cli import main
from evaluation import score_run
from evaluation.humaneval.pairs import make_pairs
from evaluation.score_table import split_flags
from tests.evaluation._fixtures import MODELS, NICHES, eval_config, make_run
from tests.evaluation.humaneval.test_fit import cast_votes

COLUMNS = {
    "model", "niche", "n", "n_ref", "fid", "fid_flag", "fid_na", "kid_mean", "kid_std",
    "kid_subset_size", "clipscore", "human_anchored", "clip_text",
    "clip_ref", "fid_score_0_100", "clip_score_0_100", "human_score_0_100", "composite",
    "composite_lo", "composite_hi", "feature_net", "clip_model", "flags",
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # A cache of its own: the first scoring must miss the reference-stats cache even when an
    # earlier test of the session filled the shared one.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EASEL_CACHE", str(tmp_path_factory.mktemp("scoring-cache")))
        yield make_run(tmp_path_factory.mktemp("run"), eval_config(actors=2))


def test_score_run_without_votes(ray_local: None, run: Path) -> None:
    result = score_run(run, progress=False)
    scores = pd.read_parquet(run / "scores.parquet")
    assert set(scores.columns) >= COLUMNS
    assert len(scores) == len(MODELS) * len(NICHES) + len(MODELS)
    cell = scores.set_index(["model", "niche"])
    # 6 images per cell; the corrupt one is counted as an error, the failed request is skipped
    assert cell.loc[("flux2-dev", NICHES[0]), "n"] == 6
    assert cell.loc[("flux2-dev", NICHES[0]), "n_errors"] == 1
    assert (cell.xs("all", level="niche")["n"] == 12).all()
    # 6-12 images against 128-d features: FID would be mostly bias, so it is n/a and KID shown;
    # the 256 references per niche are enough on their own.
    assert (scores["n_ref"] == 256 * scores["scope"].map({"niche": 1, "model": 2})).all()
    assert scores["fid"].isna().all() and scores["fid_flag"].isna().all()
    # readers split the flags cell on FLAG_SEP: the n/a reason must come back whole
    for fid_na, flags in zip(scores["fid_na"], scores["flags"], strict=True):
        assert fid_na.startswith("FID n/a: N=") and fid_na in split_flags(flags)
    assert scores["kid_mean"].notna().all() and scores["human_score_0_100"].isna().all()
    assert (scores["kid_subset_size"] == scores["n"]).all()  # the small sets cap it: stated
    assert scores["clipscore"].notna().all()
    for flags in scores["flags"]:
        assert "no human votes" in flags and "synthetic reference set" in flags
        assert "not comparable to published FID" in flags
    assert (scores["composite_components"] == "clip").all()
    assert (scores["composite_lo"] <= scores["composite"] + 1e-9).all()
    assert (scores["composite"] <= scores["composite_hi"] + 1e-9).all()
    assert "1 prompts longer than CLIP's context" in cell.loc[("flux2-dev", NICHES[0]), "flags"]

    images = pd.read_parquet(run / "image_scores.parquet").set_index("job_id")
    assert bool(images.at["job-00000", "prompt_truncated"])
    assert images["clip_ref"].notna().sum() == len(MODELS) * len(NICHES)
    assert not images.at["job-corrupt", "ok"] and "corrupt" in images.at["job-corrupt", "error"]
    assert "job-fail" not in images.index

    meta = json.loads((run / "score_meta.json").read_text())
    assert meta["skipped"]["failed"] == 1 and [e["job_id"] for e in meta["errors"]] == [
        "job-corrupt"
    ]
    assert not any(r["cached"] for r in meta["references"].values())
    assert not pd.read_parquet(run / "weight_sensitivity.parquet").empty
    assert result.path == run / "scores.parquet"


def test_easel_score_with_votes_uses_cached_references(
    ray_local: None, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = pd.read_parquet(run / "scores.parquet").set_index(["model", "niche"])
    make_pairs(run, eval_config(), n_per_pair=20)
    cast_votes(run)
    assert main(["score", "--run", str(run), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    after = pd.read_parquet(run / "scores.parquet").set_index(["model", "niche"])
    meta = json.loads((run / "score_meta.json").read_text())
    assert all(r["cached"] for r in meta["references"].values())
    # same images, same references
    pd.testing.assert_series_equal(after["kid_mean"], before["kid_mean"])
    assert after["human_score_0_100"].notna().all() and after["human_anchored"].all()
    assert (after["composite_components"] == "clip+human").all()
    assert not after["flags"].str.contains("no human votes").any()
    humans = after.xs("all", level="niche")["human_score_0_100"]
    assert humans.idxmax() == "sdxl-turbo" and humans.idxmin() == "proprietary-a"


def test_a_run_with_no_scorable_image_writes_empty_tables(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", per_cell=1)
    requests = pd.read_parquet(run / "requests.parquet")
    requests["ok"] = False
    requests.to_parquet(run / "requests.parquet", index=False)
    result = score_run(run, progress=False)  # nothing to score: no Ray, no actors
    assert result.scores.empty and result.meta["skipped"]["failed"] == len(requests)
    assert pd.read_parquet(run / "scores.parquet").empty
