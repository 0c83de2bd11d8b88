"""A model deployment's own HTTP route: `POST <provider>/models/<model>/v1/generate` (`api.paths`).

Each model deployment of a provider is also the ingress of a Serve application of its own
(`app.py`), so the gateway's requests go Serve proxy -> model replica, one Serve hop, as a bare
Ray Serve app's do, instead of proxy -> provider ingress -> model replica. The route checks the
request as the provider ingress does (the same `serve_apps.api` code: body cap, schema, the
model's limits) and answers the same way: the PNG (or JSON on `Accept`) with the image headers,
or the API's error shape with `X-Easel-Outcome`. Serve's proxy answers for what never reaches a
replica (a full queue: 503, overload to the gateway; a dead replica: 5xx).

Plain Starlette (a deployment's `__call__`), not FastAPI: no per-request dependency machinery on
the hot path, and no OpenAPI page here (the provider ingress has it).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config import ModelConfig, ServeConfig
from serve_apps.api.errors import ApiError, error_outcome
from serve_apps.api.outcomes import OUTCOME_HEADER
from serve_apps.api.paths import MODELS_PATH
from serve_apps.api.requests import find_model, resolve_body
from serve_apps.api.responses import ImageMeta, wants_json
from serve_apps.api.schemas import MAX_SEED, GenerateRequest, ResolvedRequest, read_json_body
from serve_apps.provider.results import ErrorResult, ImageResult, ReplicaResult

__all__ = ["answer", "image_meta", "route_model", "unknown_route"]

_GENERATE = "/v1/generate"


def image_meta(resolved: ResolvedRequest, result: ImageResult, provider: str) -> ImageMeta:
    """The image headers of one answer (the provider ingress and the model route alike)."""
    return ImageMeta(
        request_id=resolved.request_id,
        model=resolved.model,
        provider=provider,
        replica=result.replica,
        queue_ms=result.queue_ms,
        inference_ms=result.inference_ms,
        batch_size=result.batch_size,
        cold_start=result.cold_start,
        seed=resolved.seed,
        width=resolved.width,
        height=resolved.height,
        steps=resolved.steps,
    )


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Response:
    outcome = {OUTCOME_HEADER: error_outcome(status, code)}
    return ApiError(status, message, code=code, retry_after=retry_after).to_response(outcome)


def route_model(path: str) -> str | None:
    """The model a generate path names (`.../models/<model>/v1/generate`), or None."""
    head = path.rstrip("/")
    if not head.endswith(_GENERATE):
        return None
    # The segment before `/v1/generate`, whether Serve hands the path whole or below the
    # application's route prefix (`<provider>/models`).
    model = head[: -len(_GENERATE)].rpartition("/")[2]
    return unquote(model) if model and model != MODELS_PATH else None


def unknown_route(path: str, models: list[str]) -> Response:
    """404 for a path that names no model of this application."""
    return _error(
        404,
        "not_found",
        f"no route {path!r}: POST .../{MODELS_PATH}/<model>/v1/generate, model one of {models}",
    )


async def answer(
    request: Request,
    model: ModelConfig,
    sv: ServeConfig,
    provider: str,
    generate: Callable[[ResolvedRequest], Awaitable[ReplicaResult]],
    rng: random.Random,
) -> Response:
    """Answer one HTTP request to `model`'s route; every error in the API's shape."""
    if not request.url.path.rstrip("/").endswith(_GENERATE):
        return _error(404, "not_found", f"no route {request.url.path!r}: POST .../v1/generate")
    if request.method != "POST":
        return _error(405, "method_not_allowed", f"{request.method} on /v1/generate: use POST")
    try:
        body = await read_json_body(request, GenerateRequest, sv.max_body_bytes, sv.body_timeout_s)
        resolved = await resolve_body(
            body,
            find_model({model.name: model}, body.model),
            request,
            sv,
            rng.randint(0, MAX_SEED),
            (model,),
        )
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message, exc.retry_after)
    result = await generate(resolved)
    if isinstance(result, ErrorResult):
        return _error(result.status, result.code, result.message, result.retry_after)
    meta = image_meta(resolved, result, provider)
    if wants_json(request):
        return JSONResponse(meta.json_body(result.png), headers=meta.headers())
    return Response(result.png, media_type="image/png", headers=meta.headers())
