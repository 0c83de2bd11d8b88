"""The gateway: easel's front door, routing each request to provider clusters and vendor APIs.

The request path (`routes` → `dispatch` → `upstreams`) and the policy (`policies`: `select`, with
`before`/`after` hooks that keep in-flight counts) are separate small pieces; the routing state
(`routing`: upstreams, health, the live `document` of weights and drains) lives in each gateway
process, refreshed off the request path by probes (`health`) and by the document watcher.
`availability` and `metrics` count what happened per upstream; `snapshots` let any process answer
for all; `tenants` holds API keys and rate limits; `server` runs it (`easel gateway`). Nothing on
the request path calls a shared actor: the gateway scales by adding processes or replicas.
Imported lazily: `easel --help` loads none of it.
"""

from __future__ import annotations

from config.lazy import lazy_exports

__all__ = ["Gateway", "GatewaySetupError", "create_app", "serve_gateway"]

__getattr__ = lazy_exports(
    "serve_apps.gateway",
    {
        "Gateway": "serve_apps.gateway.core",
        "GatewaySetupError": "serve_apps.gateway.core",
        "create_app": "serve_apps.gateway.app",
        "serve_gateway": "serve_apps.gateway.server",
    },
)
