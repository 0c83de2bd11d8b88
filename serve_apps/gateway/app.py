"""The gateway's ASGI app: `create_app(cfg)` builds it, its lifespan starts and stops the gateway.

A plain ASGI service (FastAPI on uvicorn), not a Ray Serve app: measured here, a Serve proxy hop
costs ~4-5 ms where this forwarder adds ~1-2 ms (docs/architecture.md has the figures and the
decision), and nothing about routing between clusters needs Ray. `server.py` runs it as one
process or several sharing one port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from config import EaselConfig
from serve_apps.api.asgi import new_app
from serve_apps.gateway.core import Gateway
from serve_apps.gateway.routes import add_routes

__all__ = ["create_app"]


def create_app(
    cfg: EaselConfig, *, state_dir: str | Path | None = None, workers: int = 1
) -> FastAPI:
    """The gateway app for `cfg` (provider endpoints and vendor URLs filled in).

    Raises:
        GatewaySetupError: an upstream without an address, before anything starts.
    """
    gateway = Gateway(cfg, state_dir=state_dir, workers=workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = new_app(
        title="easel",
        version="0.1.0",
        description="Text-to-image models across providers: generate, OpenAI-compatible images, "
        'routing, failover, tenants. Errors: {"error": {"code", "message"}}.',
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    add_routes(app)
    return app
