"""One local Ray for every evaluation test module that needs one (the pool, scoring)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import local_ray


@pytest.fixture(scope="package")
def ray_local() -> Iterator[None]:
    """Starting Ray takes seconds on 2 cores, and these modules only start and kill their own
    actors on it: they share one cluster instead of each starting its own."""
    yield from local_ray()
