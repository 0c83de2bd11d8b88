"""The one-app-per-module Serve fixture: a module gives `cfg` and `serve_env`, gets `url`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._util import free_port, set_env


@pytest.fixture(scope="module")
def serve_env() -> dict[str, str]:
    """Environment the serving processes need (API keys, Ray flags); a module overrides it."""
    return {}


@pytest.fixture(scope="module")
def _serve_env(serve_env: dict[str, str]) -> Iterator[None]:
    # Entered before `ray_local` starts Ray, so every Ray worker inherits it.
    with set_env(serve_env):
        yield


@pytest.fixture(scope="module")
def url(_serve_env: None, ray_local: None, cfg) -> Iterator[str]:
    """Base URL of `run_app(cfg)` on a free port; Serve is shut down after the module."""
    from ray import serve

    from serve_apps.app import run_app

    base = run_app(cfg, host="127.0.0.1", port=free_port())
    yield base
    serve.shutdown()
