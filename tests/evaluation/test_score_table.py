"""The flags cell of scores.parquet: joined with FLAG_SEP, split back into the same flags."""

from __future__ import annotations

from evaluation.score_table import FLAG_SEP, _join_flags, split_flags


def test_flags_round_trip_even_when_a_flag_holds_the_separator() -> None:
    flags = ["no human votes: composite over fid+clip", f"N=6 below 2000{FLAG_SEP}read KID"]
    cell = _join_flags(flags)
    assert split_flags(cell) == [flags[0], "N=6 below 2000, read KID"]


def test_split_flags_of_an_empty_cell() -> None:
    assert split_flags("") == [] and split_flags(None) == []
