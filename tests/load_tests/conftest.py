"""Fixtures for the load-test package: configs, a local endpoint, one Ray for the package."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import pytest
import yaml

from config import EaselConfig, load_config, parse_config


@pytest.fixture(scope="session")
def cfg() -> EaselConfig:
    return load_config()


@pytest.fixture(scope="session")
def make_cfg() -> Callable[..., EaselConfig]:
    """The default config with changes: `traffic={...}`, `slo_ms=...` for every model, ..."""
    base = yaml.safe_load(resources.files("config.shipped").joinpath("default.yaml").read_text())

    def make(*, traffic: dict[str, Any] | None = None, slo_ms: float | None = None, **top: Any):
        data = copy.deepcopy(base)
        data.setdefault("traffic", {}).update(traffic or {})
        if slo_ms is not None:
            for m in data["models"]:
                m["slo_ms"] = slo_ms
        data.update(top)
        return parse_config(data, "<test config>")

    return make


@pytest.fixture(scope="package")
def ray_pkg() -> Iterator[None]:
    """One fresh local Ray for every Ray test of this package (started once: ~4 s)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
