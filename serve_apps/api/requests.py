"""Reading an image request off the wire, the same way in the gateway and in every provider app.

The order is the contract: (the gateway checks the API key before reading anything) → body
(size, content type, JSON, schema) → model → (the gateway checks the tenant's models and rate
here, before any expensive work) → request id → whether the model takes a reference image →
the reference image, decoded and re-encoded on a worker thread (never on the event loop: a
16-megapixel decode would stall every other request of the process) → the model's limits.
Every failure is an `ApiError` with a 4xx that says what to fix.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from config import ModelConfig, ServeConfig
from serve_apps.api.errors import ApiError
from serve_apps.api.images import decode_reference_image, encode_png
from serve_apps.api.schemas import (
    MAX_SEED,
    REQUEST_ID_PATTERN,
    GenerateRequest,
    ImagesRequest,
    ResolvedRequest,
    model_capabilities,
    new_request_id,
    parse_size,
    resolve_generate,
)

__all__ = ["find_model", "header_request_id", "images_body", "resolve_body", "resolve_images"]

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def find_model(models: Mapping[str, ModelConfig], name: str) -> ModelConfig:
    """The model called `name`; 404 `model_not_found` naming the known ones otherwise."""
    model = models.get(name)
    if model is None:
        raise ApiError(
            404,
            f"unknown model {name[:63]!a} (known: {sorted(models)}; see GET /v1/models)",
            code="model_not_found",
        )
    return model


def header_request_id(request: Request) -> str | None:
    """The client's `X-Request-Id`, if it sent one; 422 for one that is not a valid id.

    A request id travels on in headers to providers and vendors, so it must be ASCII; one that
    is not is the client's mistake, said so, rather than an error deep in an HTTP client.
    """
    rid = request.headers.get("x-request-id")
    if rid is None:
        return None
    if not _REQUEST_ID.match(rid):
        raise ApiError(
            422,
            f"X-Request-Id header: {rid[:64]!a} is not a request id (1-128 ASCII letters, "
            "digits or '._:-')",
            code="invalid_request",
        )
    return rid


def _reference_png(data: str, serve: ServeConfig) -> bytes:
    image = decode_reference_image(
        data, max_pixels=serve.max_reference_pixels, max_bytes=serve.max_body_bytes
    )
    return encode_png(image)


async def resolve_body(
    body: GenerateRequest,
    model: ModelConfig,
    request: Request,
    serve: ServeConfig,
    default_seed: int,
) -> ResolvedRequest:
    """A `/v1/generate` body checked against `model`'s limits, its defaults filled in.

    A reference image is decoded only for a model that takes one, and on a worker thread.
    """
    request_id = body.request_id or header_request_id(request) or new_request_id()
    reference = None
    if body.reference_image is not None:
        if not model_capabilities(model)["reference_image"]:
            raise ApiError(
                422,
                f"reference_image: model {model.name!r} does not take a reference image",
                code="unsupported_input",
            )
        reference = await asyncio.to_thread(_reference_png, body.reference_image, serve)
    return resolve_generate(
        model=model,
        request_id=request_id,
        prompt=body.prompt,
        width=body.width,
        height=body.height,
        steps=body.steps,
        guidance=body.guidance,
        seed=body.seed,
        negative_prompt=body.negative_prompt,
        reference_png=reference,
        niche=body.niche,
        default_seed=default_seed,
    )


def resolve_images(
    body: ImagesRequest, model: ModelConfig, request: Request, default_seed: int
) -> list[ResolvedRequest]:
    """An OpenAI-images body as `n` requests: seeds seed, seed+1, ...; ids `<id>-<i>` when n > 1."""
    width, height = parse_size(body.size)
    request_id = header_request_id(request) or new_request_id()
    base_seed = default_seed if body.seed is None else body.seed
    return [
        resolve_generate(
            model=model,
            request_id=request_id if body.n == 1 else f"{request_id}-{i}",
            prompt=body.prompt,
            width=width,
            height=height,
            steps=body.steps,
            guidance=body.guidance,
            seed=(base_seed + i) % (MAX_SEED + 1),
            negative_prompt=body.negative_prompt,
            niche=body.niche,
            default_seed=0,
        )
        for i in range(body.n)
    ]


def images_body(
    resolved: list[ResolvedRequest], pngs: list[bytes], fmt: str | None
) -> dict[str, Any]:
    """The OpenAI Images API answer for `pngs` (b64_json by default, or data: URLs)."""
    data = []
    for png in pngs:
        b64 = base64.b64encode(png).decode()
        data.append({"url": f"data:image/png;base64,{b64}"} if fmt == "url" else {"b64_json": b64})
    first = resolved[0]
    return {
        "created": int(time.time()),
        "data": data,
        "size": f"{first.width}x{first.height}",
        "output_format": "png",
    }
