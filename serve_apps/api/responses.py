"""What an image answer carries besides the image: its metadata, as headers or as JSON.

A provider answers `/v1/generate` with the PNG and `X-Easel-*` headers (`ImageMeta.headers`);
the gateway reads them back (`ImageMeta.from_headers`), adds the attempts it took, and answers the
client with the same headers, or with JSON on `Accept: application/json` (`ImageMeta.json_body`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request

from config import ModelConfig
from serve_apps.api.schemas import ResolvedRequest, model_capabilities

__all__ = ["ImageMeta", "model_card", "wants_json"]


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept


@dataclass(frozen=True)
class ImageMeta:
    """How one image was made, where, and in how many attempts."""

    request_id: str
    model: str
    provider: str
    replica: str
    queue_ms: float
    inference_ms: float
    batch_size: int
    cold_start: bool
    seed: int
    width: int
    height: int
    steps: int
    attempts: int = 1
    # The gateway's own time on the request (its handler's time less the upstream waits), ms.
    gateway_ms: float | None = None

    def headers(self) -> dict[str, str]:
        own = {} if self.gateway_ms is None else {"X-Easel-Gateway-Ms": f"{self.gateway_ms:.3f}"}
        return own | {
            "X-Request-Id": self.request_id,
            "X-Easel-Request-Id": self.request_id,
            "X-Easel-Model": self.model,
            "X-Easel-Provider": self.provider,
            "X-Easel-Replica": self.replica,
            "X-Easel-Queue-Ms": f"{self.queue_ms:.3f}",
            "X-Easel-Inference-Ms": f"{self.inference_ms:.3f}",
            "X-Easel-Batch-Size": str(self.batch_size),
            "X-Easel-Cold-Start": "true" if self.cold_start else "false",
            "X-Easel-Seed": str(self.seed),
            "X-Easel-Attempts": str(self.attempts),
        }

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], resolved: ResolvedRequest, attempts: int
    ) -> ImageMeta:
        """Read a provider's answer headers; what a provider left out stays neutral."""

        def num(name: str) -> float:
            try:
                return float(headers.get(name, "0"))
            except ValueError:
                return 0.0

        return cls(
            request_id=resolved.request_id,
            model=resolved.model,
            provider=headers.get("x-easel-provider", ""),
            replica=headers.get("x-easel-replica", ""),
            queue_ms=num("x-easel-queue-ms"),
            inference_ms=num("x-easel-inference-ms"),
            batch_size=int(num("x-easel-batch-size")) or 1,
            cold_start=headers.get("x-easel-cold-start") == "true",
            seed=resolved.seed,
            width=resolved.width,
            height=resolved.height,
            steps=resolved.steps,
            attempts=attempts,
        )

    def with_attempts(self, attempts: int) -> ImageMeta:
        return replace(self, attempts=attempts)

    def json_body(self, png: bytes) -> dict[str, Any]:
        """The `/v1/generate` answer on `Accept: application/json`."""
        return {
            "request_id": self.request_id,
            "model": self.model,
            "provider": self.provider,
            "replica": self.replica,
            "queue_ms": self.queue_ms,
            "inference_ms": self.inference_ms,
            "batch_size": self.batch_size,
            "cold_start": self.cold_start,
            "attempts": self.attempts,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "format": "png",
            "image_b64": base64.b64encode(png).decode(),
        }


def model_card(m: ModelConfig, providers: list[str] | None = None) -> dict[str, Any]:
    """One `/v1/models` entry; `providers` (default: the config's) are where it is served."""
    return {
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": "easel",
        "display_name": m.display_name,
        "backend": m.backend,
        "kind": m.kind,
        "providers": list(m.providers if providers is None else providers),
        "defaults": {
            "width": m.resolution.default,
            "height": m.resolution.default,
            "steps": m.steps.default,
            "guidance": m.guidance.default,
        },
        "limits": {
            "resolution": m.resolution.model_dump(),
            "steps": m.steps.model_dump(),
            "guidance": m.guidance.model_dump(),
            "max_prompt_tokens": m.max_prompt_tokens,
            "references": m.references.model_dump() if m.references is not None else None,
        },
        "accepts": model_capabilities(m),
        "price_per_image": m.price_per_image,
        "slo_ms": m.slo_ms,
    }
