"""A set of manifest row numbers as a bitmap: one bit per row, so a million rows cost 125 kB.

The runner passes such sets (rows whose job_id repeats an earlier row's, rows that already have
a record) to Ray Data read tasks and tests membership a whole batch at a time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowSet"]


class RowSet:
    """Row numbers in [0, size): vectorised add and membership, picklable, compact.

    Args:
        size: one more than the largest row number it may hold.
    """

    __slots__ = ("_bits", "size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        self._bits = np.zeros((size + 7) // 8, dtype=np.uint8)

    @classmethod
    def of(cls, size: int, rows: np.ndarray | list[int]) -> RowSet:
        """A set of `size` holding `rows`."""
        out = cls(size)
        out.add(np.asarray(rows, dtype=np.int64))
        return out

    def _check(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.size):
            raise IndexError(f"row numbers must be in [0, {self.size})")
        return rows

    def add(self, rows: np.ndarray) -> None:
        """Add row numbers (any order, repeats allowed)."""
        rows = self._check(rows)
        np.bitwise_or.at(self._bits, rows >> 3, (1 << (rows & 7)).astype(np.uint8))

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """A bool array: which of `rows` are in the set."""
        rows = self._check(rows)
        return ((self._bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1).astype(bool)

    def count(self, start: int = 0, stop: int | None = None) -> int:
        """How many rows in [start, stop) are in the set."""
        stop = self.size if stop is None else min(stop, self.size)
        start = max(start, 0)
        if stop <= start:
            return 0
        lo = start // 8
        bits = np.unpackbits(self._bits[lo : (stop + 7) // 8], bitorder="little")
        return int(bits[start - lo * 8 : stop - lo * 8].sum())

    def rows(self) -> np.ndarray:
        """The row numbers in the set, ascending."""
        return np.flatnonzero(np.unpackbits(self._bits, bitorder="little")[: self.size])

    def __len__(self) -> int:
        return int(np.unpackbits(self._bits).sum())

    def __getstate__(self) -> tuple[int, bytes]:
        return self.size, self._bits.tobytes()

    def __setstate__(self, state: tuple[int, bytes]) -> None:
        self.size = state[0]
        self._bits = np.frombuffer(state[1], dtype=np.uint8).copy()
