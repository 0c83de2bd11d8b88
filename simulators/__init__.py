"""simulators: SIMULATED stand-ins for what cannot exist on this machine, as real HTTP servers.

Only the closed image-API vendors for now (`vendor_app`: the HTTP app speaking both the
OpenAI-images and the queue protocol; `vendor`: running it as its own process). They are not
serving code: the gateway calls them exactly as it calls a real vendor, over HTTP. This package
sits right above `config` and imports nothing else of easel.
"""

from __future__ import annotations

from simulators.vendor import (
    SimulatedVendorProcess,
    sim_configure,
    sim_reset,
    sim_stats,
    start_simulated_vendor_process,
    start_vendors,
)
from simulators.vendor_app import VendorSettings, build_app, render_png

__all__ = [
    "SimulatedVendorProcess",
    "VendorSettings",
    "build_app",
    "render_png",
    "sim_configure",
    "sim_reset",
    "sim_stats",
    "start_simulated_vendor_process",
    "start_vendors",
]
