"""The shared argparse type helpers."""

from __future__ import annotations

import argparse

import pytest

from config.cli_types import non_negative_int, positive_int


def test_counts_accept_their_minimum_and_above() -> None:
    assert positive_int("1") == 1 and positive_int("300") == 300
    assert non_negative_int("0") == 0 and non_negative_int("7") == 7


@pytest.mark.parametrize(
    ("helper", "text", "message"),
    [
        (positive_int, "0", "must be >= 1, got 0"),
        (non_negative_int, "-1", "must be >= 0, got -1"),
        (positive_int, "2.5", "not an integer: '2.5'"),
        (non_negative_int, "ten", "not an integer: 'ten'"),
    ],
)
def test_bad_values_say_what_is_wrong(helper, text, message) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        helper(text)
