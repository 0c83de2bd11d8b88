"""serve_apps: the Ray Serve application that serves every model of the config to customers.

The public surface, imported lazily so that `easel --help` never loads Ray or torch:
`app_builder` (the Serve import path `serve_apps.app:app_builder`), `build_app`, `run_app`
(serve_apps.app) and `read_usage` (serve_apps.usage). Modules: `ingress` (HTTP API),
`routing` (per-provider policies) and `router_actor` (where that state lives), `deployments`
(diffusers and HTTP-API backends), `schemas`, `responses`, `errors`, `images`, `tenants`,
`usage`, `metrics`, plus the tiny model zoo (`tiny_models`, `pipelines`) and the closed-model
clients (`http_api`, `simulated_vendor`).
"""

from __future__ import annotations

from config.lazy import lazy_exports

__all__ = ["app_builder", "build_app", "read_usage", "run_app"]

_LAZY = {
    "app_builder": "serve_apps.app",
    "build_app": "serve_apps.app",
    "run_app": "serve_apps.app",
    "read_usage": "serve_apps.usage",
}


__getattr__ = lazy_exports("serve_apps", _LAZY)
