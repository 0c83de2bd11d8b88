"""Votes in SQLite: one row per (pair, rater), with the choice and the time it was cast."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

__all__ = ["CHOICES", "RATER_PATTERN", "DuplicateVote", "VoteStore"]

CHOICES = ("left", "right", "tie")
RATER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id  TEXT NOT NULL,
    rater    TEXT NOT NULL,
    choice   TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    voted_at TEXT NOT NULL,
    UNIQUE (pair_id, rater)
)
"""


class DuplicateVote(ValueError):
    """This rater has already voted on this pair."""


class VoteStore:
    """A votes database; every call opens its own connection, so threads can share a store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def add(self, pair_id: str, rater: str, choice: str, when: dt.datetime | None = None) -> None:
        """Record a vote. ValueError for a bad rater id or choice; DuplicateVote if repeated."""
        if not RATER_PATTERN.match(rater):
            raise ValueError(
                "rater id must be 1-64 characters of letters, digits, '_', '.', '@' or '-'"
            )
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {list(CHOICES)}, got {choice!r}")
        stamp = (when or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds")
        try:
            with closing(self._connect()) as con, con:
                con.execute(
                    "INSERT INTO votes (pair_id, rater, choice, voted_at) VALUES (?, ?, ?, ?)",
                    (pair_id, rater, choice, stamp),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateVote(f"rater {rater!r} already voted on pair {pair_id!r}") from exc

    def voted_pairs(self, rater: str) -> set[str]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT pair_id FROM votes WHERE rater = ?", (rater,)).fetchall()
        return {r[0] for r in rows}

    def votes(self) -> pd.DataFrame:
        """Every vote: pair_id, rater, choice, voted_at (ordered by id)."""
        with closing(self._connect()) as con:
            rows = con.execute(
                "SELECT pair_id, rater, choice, voted_at FROM votes ORDER BY id"
            ).fetchall()
        return pd.DataFrame(rows, columns=["pair_id", "rater", "choice", "voted_at"])
