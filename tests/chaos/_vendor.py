"""A gateway in this process reselling one SIMULATED vendor (its own process), for chaos tests.

`vendor_config()` is a config with one closed model, `api-fast`, whose vendor answers in
15-40 ms; `vendor_gateway(cfg)` starts the vendor and the gateway (real HTTP on 127.0.0.1) and
yields (gateway URL, vendor URL). No Ray is needed for either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from config import EaselConfig, parse_config
from tests._util import ThreadServer, set_env
from tests.serve_apps._configs import api_model, small_config

__all__ = ["ADMIN_KEY", "DEADLINE_S", "VENDOR_TIMEOUT_S", "vendor_config", "vendor_gateway"]

DEADLINE_S = 3.0  # routing.request_timeout_s
VENDOR_TIMEOUT_S = 1.5  # api.timeout_s: each provider's attempt, retries included
ADMIN_KEY = "chaos-admin"


def vendor_config() -> EaselConfig:
    data = small_config().model_dump(mode="json")
    model = api_model("api-fast", 15, 40)
    model["api"].update(timeout_s=VENDOR_TIMEOUT_S, max_retries=4, backoff_s=0.02)
    model["api"]["simulated"]["concurrency"] = 10_000  # hung jobs must not fill its workers
    data["models"] = [model]
    data["evaluation"]["anchors"]["human_anchor_model"] = "api-fast"
    data["routing"].update(request_timeout_s=DEADLINE_S, recheck_after_s=0.5)
    data["serve"]["tenants"] = []
    data["traffic"]["max_in_flight"] = 256
    return parse_config(data, "<chaos vendor config>")


@contextlib.contextmanager
def vendor_gateway(cfg: EaselConfig) -> Iterator[tuple[str, str]]:
    """(gateway URL, vendor URL) while the block runs."""
    from serve_apps.gateway.app import create_app
    from serve_apps.gateway.core import with_upstreams
    from simulators import start_vendors

    procs = start_vendors(cfg.models)
    vendor = procs["api-fast"].url
    try:
        with set_env({"EASEL_ADMIN_KEY": ADMIN_KEY}):
            app = create_app(with_upstreams(cfg, {}, {"api-fast": vendor}))
            with ThreadServer(app) as server:
                yield server.url, vendor
    finally:
        for v in procs.values():
            v.stop()
