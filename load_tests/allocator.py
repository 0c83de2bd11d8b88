"""Arrow's system allocator for the driver's end-of-run work (the merge and the summary).

pyarrow allocates from mimalloc by default, which keeps freed pages for reuse instead of giving
them back. The merge and the summary allocate and free a row group at a time, so under mimalloc
the driver's resident set kept what the largest moments needed, and more row groups meant more
of it. Measured on the same record parts (1,000-row parts, merged then summarised in a fresh
process after a warm-up merge; a diagnostic, not a committed benchmark), merge and summary at
10,000 and 1,000,000 rows grew the driver by 5.0 and 44.8 MB under mimalloc with one row group
per part, 19.9 and 44.2 MB under mimalloc with 8,192-row groups, and 9.0 and 15.3 MB under the
system allocator with 8,192-row groups, in about 3 s for a million rows in each case. The
committed measure is `benchmarks/load_generator_growth.py`, not yet rerun on this code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

__all__ = ["system_allocator"]


@contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow's default pool is the system allocator inside the block, and what it was after.

    Buffers remember the pool they came from, so one allocated inside and freed outside (or
    the other way round) goes back to its own pool.
    """
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)
