"""Starting simulated vendors: command line, subprocess, one shared Ray actor per model."""

from __future__ import annotations

import httpx
import pytest

from config import load_config
from serve_apps.simulated_vendor import (
    ACTOR_NAMESPACE,
    VendorSettings,
    _parse_args,
    _settings_from_args,
    ensure_simulated_vendor,
    sim_configure,
    sim_stats,
    start_simulated_vendor_process,
    stop_simulated_vendors,
    vendor_base_url,
)
from tests._util import wait_for


def test_command_line_settings() -> None:
    args = _parse_args(["--p50-ms", "20", "--p95-ms", "50", "--concurrency", "2", "--seed", "4"])
    s = _settings_from_args(args)
    assert (s.latency.p50_ms, s.latency.p95_ms, s.concurrency, s.seed) == (20, 50, 2, 4)
    s = _settings_from_args(_parse_args(["--model", "proprietary-b"]))
    assert s == VendorSettings.from_model(load_config().model("proprietary-b"))
    with pytest.raises(ValueError, match="p95_ms"):
        _settings_from_args(_parse_args(["--p50-ms", "20", "--p95-ms", "10"]))


def test_process_stops_cleanly() -> None:
    settings = VendorSettings.from_model(load_config().model("proprietary-a"))
    vendor = start_simulated_vendor_process(settings)
    assert httpx.get(f"{vendor.url}/").json()["name"] == "proprietary-a"
    vendor.stop()
    assert vendor.process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{vendor.url}/", timeout=2)


def test_ensure_needs_ray() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is initialised in this process")
    with pytest.raises(RuntimeError, match=r"ray\.init"):
        ensure_simulated_vendor(load_config().model("proprietary-a"))


def test_ensure_simulated_vendor_is_one_shared_actor(ray_local: None) -> None:
    import ray

    model = load_config().model("proprietary-b")
    url = ensure_simulated_vendor(model)
    assert ensure_simulated_vendor(model) == url  # get-or-create: the same vendor
    assert vendor_base_url(model) == url
    assert url.startswith("http://127.0.0.1:")
    root = httpx.get(f"{url}/")
    assert root.json()["name"] == "proprietary-b" and root.headers["x-simulated-vendor"] == "true"
    # Its live state is shared: a change made through one URL is seen by every caller.
    sim_configure(url, failure_rate=1.0)
    assert sim_stats(ensure_simulated_vendor(model))["settings"]["failure_rate"] == 1.0

    assert stop_simulated_vendors() == ["simulated-vendor-proprietary-b"]

    def gone() -> bool:
        try:
            ray.get_actor("simulated-vendor-proprietary-b", namespace=ACTOR_NAMESPACE)
        except ValueError:
            return True
        return False

    wait_for(gone, timeout=30)
