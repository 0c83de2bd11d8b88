"""Shared fixtures: a private model cache per test session and a local Ray per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def easel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session builds the tiny models into its own cache, never the user's.

    Set EASEL_TEST_CACHE to reuse a cache across sessions while developing.
    """
    path = Path(os.environ.get("EASEL_TEST_CACHE") or tmp_path_factory.mktemp("easel-cache"))
    old = os.environ.get("EASEL_CACHE")
    os.environ["EASEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EASEL_CACHE", None)
    else:
        os.environ["EASEL_CACHE"] = old


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A fresh single-node Ray for one test module; shut down afterwards."""
    yield from local_ray()


def local_ray() -> Iterator[None]:
    """Start a fresh single-node Ray, yield, shut it down (the body of `ray_local` fixtures).

    `address="local"` always starts a new cluster, so a stale /tmp/ray/ray_current_cluster from
    an earlier run is never joined.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        resources={
            "provider:lambda-sim": 100,
            "provider:runpod-sim": 100,
            "provider:azure-sim": 100,
        },
    )
    yield
    ray.shutdown()
