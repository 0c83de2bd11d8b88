"""The system allocator is Arrow's default pool inside the block only."""

from __future__ import annotations

import pyarrow as pa
import pytest

from load_tests.allocator import system_allocator


def test_the_block_allocates_from_the_system_pool_and_restores_the_default():
    before = pa.default_memory_pool().backend_name
    with system_allocator():
        assert pa.default_memory_pool().backend_name == "system"
        inside = pa.array(range(1000))
    assert pa.default_memory_pool().backend_name == before
    assert inside.sum().as_py() == sum(range(1000))  # still valid after the switch back


def test_the_default_comes_back_when_the_block_raises():
    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError), system_allocator():
        raise RuntimeError("boom")
    assert pa.default_memory_pool().backend_name == before
