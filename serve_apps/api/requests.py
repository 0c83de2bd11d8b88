"""Reading an image request off the wire, the same way in the gateway and in every provider app.

The order is the contract: (the gateway checks the API key before reading anything) → body
(size, content type, JSON or multipart form, schema) → model → (the gateway checks the tenant's
models and rate here, before any expensive work) → request id → reference images (does the model
take them, how many — both before anything is decoded — then each decoded within the model's
limits on a worker thread: never on the event loop, where a 16-megapixel decode would stall every
other request of the process) → the model's other limits. Every failure is an `ApiError` with a
4xx that says what to fix.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Request

from config import ModelConfig, ServeConfig
from serve_apps.api.errors import ApiError
from serve_apps.api.images import decode_base64, decode_reference_image
from serve_apps.api.schemas import (
    MAX_SEED,
    REQUEST_ID_PATTERN,
    GenerateRequest,
    ImagesRequest,
    ResolvedRequest,
    check_reference_count,
    new_request_id,
    parse_size,
    resolve_generate,
)

__all__ = [
    "decode_references",
    "find_model",
    "header_request_id",
    "images_body",
    "resolve_body",
    "resolve_images",
]

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


def decode_references(
    items: Sequence[str | bytes],
    model: ModelConfig,
    serve: ServeConfig,
    *,
    all_models: Iterable[ModelConfig] = (),
    field: str = "reference_images",
) -> tuple[bytes, ...]:
    """Reference images checked against `model`'s `references` limits: their encoded bytes.

    The count is checked before anything is decoded; each image is then decoded within the
    model's byte, pixel (and the server's `max_reference_pixels`), side and aspect limits. The
    bytes go on as the client sent them (PNG/JPEG/WebP), not re-encoded: a photo re-encoded as
    PNG can be several times larger, and the body the gateway forwards must fit the provider's
    own cap whenever the client's fitted the gateway's. Blocking: a server calls it on a worker
    thread.

    Raises:
        ApiError: 422 (the model takes none, naming those that do; too many; a side or aspect
            the model refuses), 400 (not base64, corrupt, empty), 413 (too large), 415 (format).
    """
    check_reference_count(model, len(items), all_models)
    if not items:
        return ()
    limits = model.references
    assert limits is not None  # check_reference_count refused otherwise
    out = []
    for i, item in enumerate(items):
        name = field if field == "reference_image" else f"{field}[{i}]"
        raw = item if isinstance(item, bytes) else decode_base64(
            item, field=name, max_bytes=limits.max_bytes
        )  # fmt: skip
        decode_reference_image(
            raw,
            max_pixels=min(limits.max_pixels, serve.max_reference_pixels),
            max_bytes=limits.max_bytes,
            field=name,
            min_side=limits.min_side,
            max_aspect=limits.max_aspect,
        )
        out.append(raw)
    return tuple(out)


async def resolve_body(
    body: GenerateRequest,
    model: ModelConfig,
    request: Request,
    serve: ServeConfig,
    default_seed: int,
    all_models: Iterable[ModelConfig] = (),
) -> ResolvedRequest:
    """A `/v1/generate` body checked against `model`'s limits, its defaults filled in.

    `all_models` (the config's) only phrases the 422 for a model that takes no references.
    Reference images are decoded only for a model that takes them, and on a worker thread.
    """
    request_id = body.request_id or header_request_id(request) or new_request_id()
    if body.reference_image is not None and body.reference_images is not None:
        raise ApiError(
            422,
            "reference_image and reference_images are both set: send one (reference_images "
            "holds any number, reference_image is its one-image form)",
        )
    if body.reference_image is not None:
        items, field = [body.reference_image], "reference_image"
    else:
        items, field = list(body.reference_images or []), "reference_images"
    references: tuple[bytes, ...] = ()
    if items:  # counted before anything is decoded, then decoded off the event loop
        check_reference_count(model, len(items), all_models)
        references = await asyncio.to_thread(
            decode_references, items, model, serve, all_models=all_models, field=field
        )
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
        references=references,
        niche=body.niche,
        default_seed=default_seed,
    )


def resolve_images(
    body: ImagesRequest,
    model: ModelConfig,
    request: Request,
    default_seed: int,
    references: Sequence[bytes] = (),
) -> list[ResolvedRequest]:
    """An OpenAI-images body as `n` requests: seeds seed, seed+1, ...; ids `<id>-<i>` when n > 1.

    `references` (from `/v1/images/edits`, already checked by `decode_references`) go with
    every one of the `n` requests.
    """
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
            references=references,
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
