"""Blind human A/B evaluation: pairs, a rating page, votes in SQLite, Bradley-Terry scores."""

from evaluation.humaneval.bradley_terry import (
    BTFit,
    bootstrap_bt,
    fit_bt,
    human_score,
    win_rate_matrix,
)
from evaluation.humaneval.fit import HumanEvalResult, fit_human, load_votes
from evaluation.humaneval.pairs import PairsResult, load_pairs, make_pairs
from evaluation.humaneval.store import VoteStore

__all__ = [
    "BTFit",
    "HumanEvalResult",
    "PairsResult",
    "VoteStore",
    "bootstrap_bt",
    "fit_bt",
    "fit_human",
    "human_score",
    "load_pairs",
    "load_votes",
    "make_pairs",
    "win_rate_matrix",
]
