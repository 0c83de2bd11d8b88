"""The FastAPI app both tiers start from, without FastAPI's per-request OpenTelemetry hooks.

Recent FastAPI versions look up OpenTelemetry providers (and environment variables) on every
request; easel has its own metrics (the gateway's `/metrics`, the replicas' on Ray's endpoint)
and no tracer, and on the gateway's hot path those look-ups cost measurable CPU.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI

__all__ = ["new_app"]

_NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


def new_app(**kwargs: Any) -> FastAPI:
    """`FastAPI(**kwargs)`, with native telemetry off where this FastAPI has it."""
    if "telemetry" in inspect.signature(FastAPI).parameters:
        kwargs.setdefault("telemetry", _NO_TELEMETRY)
    return FastAPI(**kwargs)
