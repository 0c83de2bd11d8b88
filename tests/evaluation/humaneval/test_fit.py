"""Human scores of a run: votes joined with pairs, Bradley-Terry per niche and overall, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from easel.cli import main
from evaluation.humaneval.fit import VOTES_FILE, fit_human, load_votes
from evaluation.humaneval.pairs import load_pairs
from evaluation.humaneval.store import VoteStore
from tests.evaluation._fixtures import NICHES, make_run

# simulated raters: a strong preference order, some ties
PREFERENCE = {"sdxl-turbo": 2, "flux2-dev": 1, "proprietary-a": 0}


def cast_votes(run: Path, raters: int = 3, seed: int = 0) -> int:
    """Every rater votes on every pair: the preferred model wins, ties 20 % of the time."""
    rng = np.random.default_rng(seed)
    store = VoteStore(run / VOTES_FILE)
    n = 0
    for r in range(raters):
        for p in load_pairs(run).itertuples(index=False):
            if rng.random() < 0.2:
                choice = "tie"
            elif rng.random() < 0.85:
                choice = "left" if PREFERENCE[p.left_model] > PREFERENCE[p.right_model] else "right"
            else:
                choice = "right" if PREFERENCE[p.left_model] > PREFERENCE[p.right_model] else "left"
            store.add(p.pair_id, f"rater{r}", choice)
            n += 1
    return n


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("run"))
    assert main(["humaneval", "pairs", "--run", str(run), "--n", "20"]) == 0
    return run


def test_fit_without_votes_says_so(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fit_human(run, _cfg(run)) is None
    assert main(["humaneval", "fit", "--run", str(run)]) == 1
    assert "no votes" in capsys.readouterr().err


def test_fit_ranks_models_per_niche_and_overall(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = cast_votes(run)
    votes = load_votes(run)
    assert len(votes) == n and set(votes["outcome"]) == {"a", "b", "tie"}
    result = fit_human(run, _cfg(run))
    assert result is not None and result.n_votes == n
    assert set(result.scores["scope"]) == {"all", *NICHES}
    # Anchored (the default config names sdxl-turbo): its strength scores 50 in every scope, and
    # the interval resamples the three raters, not their votes.
    assert result.scores["anchored"].all()
    turbo = result.scores[result.scores["model"] == "sdxl-turbo"]
    assert (turbo["human_score_0_100"] == 50).all()
    assert set(result.scores["interval_unit"]) == {"raters (3)"}
    for scope, part in result.scores.groupby("scope"):
        ranked = list(part.sort_values("elo", ascending=False)["model"])
        assert ranked == sorted(PREFERENCE, key=PREFERENCE.get, reverse=True), scope
        assert part["human_score_0_100"].between(0, 100).all()
        assert (part["human_lo"] <= part["human_score_0_100"]).all()
        assert (part["human_score_0_100"] <= part["human_hi"]).all()
    overall = result.win_rates[result.win_rates["scope"] == "all"].set_index(["model", "opponent"])
    assert overall.loc[("sdxl-turbo", "proprietary-a"), "win_rate"] > 0.6
    assert pd.read_parquet(run / "humaneval" / "bt.parquet").shape[0] == len(result.scores)

    assert main(["humaneval", "fit", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "win rate" in out and "sdxl-turbo" in out


def _cfg(run: Path):  # the run's own config
    from evaluation.run_folder import load_run_config

    return load_run_config(run)
