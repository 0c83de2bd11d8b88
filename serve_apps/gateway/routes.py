"""The gateway's HTTP API: what customers call, and the admin routes operators use.

Routes (docs/api.md has the contract; `/docs` serves the OpenAPI page):
`POST /v1/generate`, `POST /v1/images/generations` and `POST /v1/images/edits` (the OpenAI
Images API shapes; edits carry reference images as multipart `image[]`), `GET /v1/models`,
`GET /healthz`, `GET /readyz`, `GET|PUT /v1/admin/routing`, `GET /v1/admin/usage`,
`GET /v1/admin/availability`, `GET /metrics`.

A model request is checked here in full (API key first, before a byte of the body is read; then
body size, content type, schema, the tenant's models and rate limit, the model's limits) before
any upstream sees it, so a client's mistake never reaches, let alone counts against, a
provider; then `dispatch.py` sends it to the model's upstreams with failover (or answers 503 at
once when every upstream of the model is at its admission limit). With tenants configured,
`/v1/models` needs a tenant key too; with an admin key set, the admin routes and `/metrics`
need it. `/healthz` and `/readyz` stay open (probes of load balancers and Kubernetes). Every
route's OpenAPI entry lists the errors it can answer, with the error body's schema.
A client that disconnects cancels its request: the attempt in flight is cancelled and its
in-flight count given back.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import random
import time
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from serve_apps.api.edits import read_edits_form
from serve_apps.api.errors import ApiError, error_docs, error_response, install_error_handlers
from serve_apps.api.requests import (
    decode_references,
    find_model,
    images_body,
    resolve_body,
    resolve_images,
)
from serve_apps.api.responses import ImageMeta, model_card, wants_json
from serve_apps.api.schemas import (
    MAX_SEED,
    GenerateRequest,
    ImagesRequest,
    RoutingUpdate,
    read_json_body,
)
from serve_apps.gateway.availability import availability_rows
from serve_apps.gateway.core import Gateway
from serve_apps.gateway.metrics import CONTENT_TYPE, render_metrics
from serve_apps.gateway.snapshots import merged_rows
from serve_apps.gateway.tenants import bearer_token

__all__ = ["add_routes"]

# The errors each kind of route can answer (listed in the OpenAPI document with their schema).
_MODEL_ERRORS = error_docs(400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503, 504)
_ADMIN_ERRORS = error_docs(401, 403)
_ADMIN_BODY_ERRORS = error_docs(400, 401, 403, 404, 408, 413, 415, 422)

# Seeds for requests that set none: seeded once from the OS, not one urandom call per request.
_rng = random.Random(random.SystemRandom().getrandbits(64))


def _body_schema(model: type) -> dict[str, Any]:
    # The handlers read the body themselves (to cap its size and shape every error), so the
    # request schema is declared for the OpenAPI page by hand.
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _own_time(meta: ImageMeta, started: float) -> ImageMeta:
    """`meta` whose `gateway_ms` (minus the upstream waits) gains the handler's elapsed time."""
    return replace(
        meta, gateway_ms=(meta.gateway_ms or 0.0) + (time.perf_counter() - started) * 1000
    )


async def _cancel_on_disconnect(request: Request, handler: asyncio.Task[Any]) -> None:
    """Cancel `handler` when the client goes away (the body is read: only a disconnect comes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handler.cancel()
            return


class _Answer:
    """Counts every answer of a model route: per model once known, per error code before."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.model: str | None = None

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            status, code = 200, ""
        elif isinstance(exc, ApiError):
            status, code = exc.status, exc.code
        elif exc_type is asyncio.CancelledError:
            status, code = 499, "client_closed"
        else:
            status, code = 500, "internal_error"
        if self.model is None:
            self.gw.rejected[code] += 1
        else:
            self.gw.answers[(self.model, status)] += 1


def add_routes(app: FastAPI) -> None:
    """The gateway's routes on `app`; each reads its `Gateway` from `app.state.gateway`."""
    install_error_handlers(app)

    def gw_of(request: Request) -> Gateway:
        return request.app.state.gateway

    async def watched(request: Request, coro: Any) -> Any:
        """Run `coro`, cancelled if the client disconnects first."""
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, asyncio.current_task()))  # type: ignore[arg-type]
        try:
            return await coro
        finally:
            watcher.cancel()

    def admit(gw: Gateway, tenant: str | None, model: str) -> None:
        gw.auth.allow(tenant, model)
        wait = gw.limiter.admit(tenant)
        if wait is not None:
            raise ApiError(429, f"tenant {tenant!r} is over its rate limit", retry_after=wait)

    @app.post(
        "/v1/generate",
        openapi_extra=_body_schema(GenerateRequest),
        responses={
            200: {
                "description": "The image (PNG), or JSON with it in base64 on "
                "`Accept: application/json`",
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            **_MODEL_ERRORS,
        },
        summary="Generate one image (PNG, or JSON with base64 on Accept: application/json)",
    )
    async def generate(request: Request) -> Response:
        started = time.perf_counter()
        gw = gw_of(request)
        with _Answer(gw) as answer:
            sv = gw.cfg.serve
            tenant = gw.auth.identify(request.headers.get("authorization"))  # before the body
            body = await read_json_body(
                request, GenerateRequest, sv.max_body_bytes, sv.body_timeout_s
            )
            model = find_model(gw.models, body.model)
            answer.model = model.name
            admit(gw, tenant, model.name)
            resolved = await resolve_body(
                body, model, request, sv, _rng.randint(0, MAX_SEED), gw.models.values()
            )
            assert gw.dispatcher is not None
            png, meta = await watched(request, gw.dispatcher.dispatch(model, resolved))
            meta = _own_time(meta, started)
            if wants_json(request):
                return JSONResponse(meta.json_body(png), headers=meta.headers())
            return Response(png, media_type="image/png", headers=meta.headers())

    @app.post(
        "/v1/images/generations",
        openapi_extra=_body_schema(ImagesRequest),
        responses={200: {"description": "The images, as b64_json or data: URLs"}, **_MODEL_ERRORS},
        summary="OpenAI Images API: n images as b64_json (or data: URLs)",
    )
    async def images_generations(request: Request) -> JSONResponse:
        started = time.perf_counter()
        gw = gw_of(request)
        with _Answer(gw) as answer:
            tenant = gw.auth.identify(request.headers.get("authorization"))  # before the body
            body = await read_json_body(
                request, ImagesRequest, gw.cfg.serve.max_body_bytes, gw.cfg.serve.body_timeout_s
            )
            model = find_model(gw.models, body.model)
            answer.model = model.name
            admit(gw, tenant, model.name)
            resolved = resolve_images(body, model, request, _rng.randint(0, MAX_SEED))
            return await images_answer(gw, request, model, resolved, body.response_format, started)

    async def images_answer(
        gw: Gateway,
        request: Request,
        model: Any,
        resolved: list[Any],
        fmt: str | None,
        started: float,
    ) -> JSONResponse:
        assert gw.dispatcher is not None
        # All-or-nothing like the OpenAI API: the first failure answers the request.
        results = await watched(
            request, asyncio.gather(*(gw.dispatcher.dispatch(model, r) for r in resolved))
        )
        return JSONResponse(
            images_body(resolved, [png for png, _ in results], fmt),
            headers=_own_time(results[0][1], started).headers(),
        )

    @app.post(
        "/v1/images/edits",
        responses={200: {"description": "The images, as b64_json or data: URLs"}, **_MODEL_ERRORS},
        summary="OpenAI Images API edits: n images conditioned on the multipart image[] parts",
    )
    async def images_edits(request: Request) -> JSONResponse:
        started = time.perf_counter()
        gw = gw_of(request)
        with _Answer(gw) as answer:
            sv = gw.cfg.serve
            tenant = gw.auth.identify(request.headers.get("authorization"))  # before the body
            body, images = await read_edits_form(request, sv.max_body_bytes, sv.body_timeout_s)
            model = find_model(gw.models, body.model)
            answer.model = model.name
            admit(gw, tenant, model.name)
            refs = await asyncio.to_thread(
                decode_references, images, model, sv, all_models=gw.models.values(), field="image"
            )
            resolved = resolve_images(body, model, request, _rng.randint(0, MAX_SEED), refs)
            return await images_answer(gw, request, model, resolved, body.response_format, started)

    # The two model routes also answer as plain Starlette routes placed first in the router:
    # a request then skips FastAPI's per-request dependency machinery (measured here: it halves
    # what one gateway process carries), while the FastAPI routes above keep the OpenAPI page.
    app.router.routes[:0] = [
        Route("/v1/generate", generate, methods=["POST"], include_in_schema=False),
        Route("/v1/images/generations", images_generations, methods=["POST"],
              include_in_schema=False),
    ]  # fmt: skip

    @app.get(
        "/v1/models",
        responses=error_docs(401),
        summary="The models served, with their limits (OpenAI list shape)",
    )
    async def list_models(request: Request) -> dict[str, Any]:
        gw = gw_of(request)
        tenant = gw.auth.identify(request.headers.get("authorization"))
        cards = [
            model_card(m)
            for m in gw.models.values()
            if tenant is None or gw.auth.may_use(tenant, m.name)
        ]
        return {"object": "list", "data": cards}

    @app.get("/healthz", summary="Liveness: the gateway answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        responses=error_docs(503),
        summary="Readiness: every model has a healthy, undrained upstream",
    )
    async def readyz(request: Request) -> Response:
        gw = gw_of(request)
        ready: dict[str, list[str]] = {m: [] for m in gw.models}
        for s in gw.table.states():
            if s.healthy and not s.drained:
                ready[s.model].append(s.provider)
        missing = sorted(m for m, ps in ready.items() if not ps)
        if missing or (gw.prober is not None and gw.prober.endpoints and gw.prober.rounds == 0):
            why = f"no healthy provider for models {missing}" if missing else "not probed yet"
            return error_response(503, "not_ready", why, retry_after=1)
        return JSONResponse({"status": "ready", "models": ready})

    # --- admin --------------------------------------------------------------------------------

    def admin_key(gw: Gateway) -> str | None:
        env = gw.cfg.serve.admin_key_env
        return (os.environ.get(env) or None) if env else None

    def check_admin(gw: Gateway, request: Request, *, required: bool = True) -> None:
        """401 without the admin key; 403 when none is set (`required`) or pass (not required)."""
        env = gw.cfg.serve.admin_key_env
        key = admin_key(gw)
        if not key and not required:
            return
        if not key:
            raise ApiError(
                403,
                f"admin routes are disabled: set {env or 'serve.admin_key_env'} in the "
                "gateway's environment to enable them",
                code="admin_disabled",
            )
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ApiError(401, "admin routes need 'Authorization: Bearer <admin key>'")
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), key.encode()):
            raise ApiError(401, "invalid admin key")

    def routing_view(gw: Gateway) -> dict[str, Any]:
        snaps = gw.snapshots()
        recent = {(s.model, s.provider): list(s.recent_ms) for s in gw.merged_stats(snaps)}
        doc = gw.table.document
        return {
            "policy": gw.table.policy.name,
            "version": doc.version,
            "processes": len(snaps),
            "providers": merged_rows(snaps, recent),
        }

    @app.get(
        "/v1/admin/routing",
        responses=_ADMIN_ERRORS,
        summary="Routing state per (model, provider) [admin]",
    )
    async def get_routing(request: Request) -> dict[str, Any]:
        gw = gw_of(request)
        check_admin(gw, request)
        return routing_view(gw)

    @app.put(
        "/v1/admin/routing",
        openapi_extra=_body_schema(RoutingUpdate),
        responses=_ADMIN_BODY_ERRORS,
        summary="Change policy, weights, drains live, on every process, no redeploy [admin]",
    )
    async def put_routing(request: Request) -> dict[str, Any]:
        gw = gw_of(request)
        check_admin(gw, request)
        body = await read_json_body(
            request, RoutingUpdate, gw.cfg.serve.max_body_bytes, gw.cfg.serve.body_timeout_s
        )
        try:
            gw.change_routing(body.model_dump(exclude_none=True))
        except LookupError as exc:
            raise ApiError(404, str(exc).strip("'\"")) from None
        except (ValueError, TypeError) as exc:
            raise ApiError(422, str(exc)) from None
        return routing_view(gw)

    @app.get(
        "/v1/admin/usage",
        responses=_ADMIN_ERRORS,
        summary="Per-replica usage for costing: providers and vendors [admin]",
    )
    async def get_usage(request: Request) -> dict[str, Any]:
        gw = gw_of(request)
        check_admin(gw, request)
        return {"replicas": await provider_usage(gw) + vendor_usage(gw)}

    @app.get(
        "/v1/admin/availability",
        responses=_ADMIN_ERRORS,
        summary="Per-upstream availability figures [admin]",
    )
    async def get_availability(request: Request) -> dict[str, Any]:
        gw = gw_of(request)
        check_admin(gw, request)
        stats = gw.merged_stats()
        now = time.time()
        start = min((s.started_s for s in stats), default=now)
        return {
            "start_s": start,
            "end_s": now,
            "rows": availability_rows(stats, start, now),
            "stats": [s.to_json() for s in stats],
        }

    @app.get(
        "/metrics",
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **error_docs(401),
        },
        response_class=Response,
        summary="Prometheus metrics of the whole gateway (the admin key, when one is set)",
    )
    async def metrics(request: Request) -> Response:
        gw = gw_of(request)
        check_admin(gw, request, required=False)
        snaps = gw.snapshots()
        stats = gw.merged_stats(snaps)
        recent = {(s.model, s.provider): list(s.recent_ms) for s in stats}
        answers: dict[tuple[str, int], int] = {}
        rejected: dict[str, int] = {}
        for snap in snaps:
            for model, status, n in snap.answers:
                answers[(model, status)] = answers.get((model, status), 0) + n
            for code, n in snap.rejected.items():
                rejected[code] = rejected.get(code, 0) + n
        body = render_metrics(
            stats,
            merged_rows(snaps, recent),
            [(m, st, n) for (m, st), n in answers.items()],
            rejected,
        )
        return Response(body, media_type=CONTENT_TYPE)


async def provider_usage(gw: Gateway) -> list[dict[str, Any]]:
    """Every provider's usage-ledger rows, read from its `/v1/stats` now."""
    import aiohttp

    assert gw.session is not None

    async def one(provider: str, url: str) -> list[dict[str, Any]]:
        try:
            async with gw.session.get(  # type: ignore[union-attr]
                f"{url}/v1/stats", timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status == 200:
                    return list((await resp.json()).get("usage", []))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        return []

    parts = await asyncio.gather(*(one(p, u) for p, u in gw.endpoints.items()))
    return [row for rows in parts for row in rows]


def vendor_usage(gw: Gateway) -> list[dict[str, Any]]:
    """One usage row per closed model's upstream: its vendor's images (no GPU: priced per image)."""
    rows = []
    for s in gw.merged_stats():
        if gw.models[s.model].backend != "http_api" or s.vendor_first_s is None:
            continue
        rows.append(
            {
                "replica": f"{s.model}--{s.provider}#vendor",
                "model": s.model,
                "provider": s.provider,
                "gpus": 0.0,
                "started_s": s.vendor_first_s,
                "load_s": 0.0,
                "last_seen_s": s.vendor_last_s,
                "busy_s": s.vendor_busy_s,
                "batches": s.vendor_images,
                "images": s.vendor_images,
                "alive": True,
            }
        )
    return rows
