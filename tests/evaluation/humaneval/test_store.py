"""The votes database: one vote per rater and pair, with time; bad input is rejected."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from evaluation.humaneval.store import DuplicateVote, VoteStore


def test_votes_are_stored_with_rater_and_time(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "h" / "votes.sqlite")
    store.add("p1", "alice", "left")
    store.add("p1", "bob", "tie", when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    store.add("p2", "alice", "right")
    votes = VoteStore(tmp_path / "h" / "votes.sqlite").votes()  # a second handle sees them
    assert list(votes["choice"]) == ["left", "tie", "right"]
    assert votes.loc[1, "voted_at"].startswith("2026-01-02T03:04:05")
    assert dt.datetime.fromisoformat(votes.loc[0, "voted_at"]).tzinfo is not None
    assert store.voted_pairs("alice") == {"p1", "p2"}


def test_bad_votes_are_rejected(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite")
    store.add("p1", "alice", "left")
    with pytest.raises(DuplicateVote):
        store.add("p1", "alice", "right")
    with pytest.raises(ValueError, match="choice"):
        store.add("p2", "alice", "both")
    with pytest.raises(ValueError, match="rater id"):
        store.add("p2", "alice smith", "left")
    assert len(store.votes()) == 1
