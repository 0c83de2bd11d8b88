"""The row-number bitmap."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from load_tests.rowset import RowSet


def test_add_contains_count_and_rows_agree_with_a_python_set():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 1003, size=400)
    s = RowSet.of(1003, rows)
    ref = set(rows.tolist())
    probe = np.arange(1003)
    assert s.contains(probe).tolist() == [i in ref for i in range(1003)]
    assert len(s) == len(ref) and s.rows().tolist() == sorted(ref)
    assert s.count(17, 901) == sum(17 <= i < 901 for i in ref)
    assert s.count(900, 17) == 0


def test_pickles_and_rejects_rows_out_of_range():
    s = RowSet.of(10, [1, 9])
    t = pickle.loads(pickle.dumps(s))
    assert t.rows().tolist() == [1, 9] and t.size == 10
    t.add(np.array([2]))  # the copy is writable
    assert s.rows().tolist() == [1, 9]
    with pytest.raises(IndexError):
        s.add(np.array([10]))
    with pytest.raises(IndexError):
        s.contains(np.array([-1]))
