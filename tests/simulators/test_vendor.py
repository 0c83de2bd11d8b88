"""Starting simulated vendors: command line, one process each, never a Ray actor."""

from __future__ import annotations

import httpx
import pytest

from config import load_config
from simulators.vendor import (
    VendorSettings,
    _parse_args,
    _settings_from_args,
    sim_configure,
    sim_stats,
    start_simulated_vendor_process,
    start_vendors,
)


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


def test_start_vendors_one_process_per_simulated_model() -> None:
    cfg = load_config()
    vendors = start_vendors(cfg.models)
    try:
        closed = {m.name for m in cfg.models if m.api is not None and m.api.simulated is not None}
        assert set(vendors) == closed and closed
        urls = {v.url for v in vendors.values()}
        assert len(urls) == len(vendors)  # each its own process and port
        for name, vendor in vendors.items():
            root = httpx.get(f"{vendor.url}/")
            assert root.json()["name"] == name and root.headers["x-simulated-vendor"] == "true"
        # Its live state is its own: a change to one vendor leaves the other alone.
        a, b = sorted(vendors)
        sim_configure(vendors[a].url, failure_rate=1.0)
        assert sim_stats(vendors[b].url)["settings"]["failure_rate"] != 1.0
    finally:
        for v in vendors.values():
            v.stop()
    assert all(v.process.poll() is not None for v in vendors.values())
