"""What the ingress answers besides images: response headers, model cards, content choice."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from config import ModelConfig
from serve_apps.schemas import model_capabilities

__all__ = ["header_request_id", "model_card", "result_headers", "wants_json"]


def header_request_id(request: Request) -> str | None:
    rid = request.headers.get("x-request-id")
    if rid and 0 < len(rid) <= 128 and all(c.isalnum() or c in "._:-" for c in rid):
        return rid
    return None


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept


def result_headers(request_id: str, model: str, result: dict[str, Any]) -> dict[str, str]:
    return {
        # Serve's proxy sets X-Request-Id itself (the client's header, or one it generates);
        # this one is the id easel used, the body's `request_id` when one was given.
        "X-Easel-Request-Id": request_id,
        "X-Easel-Model": model,
        "X-Easel-Provider": result["provider"],
        "X-Easel-Replica": result["replica"],
        "X-Easel-Queue-Ms": f"{result['queue_ms']:.3f}",
        "X-Easel-Inference-Ms": f"{result['inference_ms']:.3f}",
        "X-Easel-Batch-Size": str(result["batch_size"]),
        "X-Easel-Cold-Start": "true" if result["cold_start"] else "false",
        "X-Easel-Attempts": str(result["attempts"]),
    }


def model_card(m: ModelConfig) -> dict[str, Any]:
    return {
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": "easel",
        "display_name": m.display_name,
        "backend": m.backend,
        "kind": m.kind,
        "providers": list(m.providers),
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
        },
        "accepts": model_capabilities(m),
        "price_per_image": m.price_per_image,
        "slo_ms": m.slo_ms,
    }
