"""argparse `type=` helpers shared by every package's `commands.py`.

A bad value fails at parse time with argparse's usage line and exit status 2, before any
handler starts Ray or loads a model.
"""

from __future__ import annotations

import argparse

__all__ = ["non_negative_int", "positive_int"]


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: jobs, actors, in-flight bounds)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, warm-up requests)."""
    return _int_at_least(text, 0)
