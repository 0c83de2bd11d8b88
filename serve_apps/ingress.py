"""The HTTP API: a FastAPI ingress deployment in front of every model deployment.

Routes (docs/api.md has the full contract; `/docs` serves the OpenAPI page):
`POST /v1/generate`, `POST /v1/images/generations` (the OpenAI Images API shape),
`GET /v1/models`, `GET /healthz`, `GET /readyz`, `GET|PUT /v1/admin/routing`,
`GET /v1/admin/usage`.

A model request is checked here (body size, content type, schema, the model's limits, API key,
rate limit), then sent to the provider the router picks; when that provider errors, sheds load,
times out or loses its replicas, the next provider gets it, until one answers or none is left.

No `from __future__ import annotations` here: FastAPI must see real annotations on the
methods Serve wraps (`request: Request`), not strings.
"""

import asyncio
import base64
import logging
import os
import random
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from ray import serve

from config import EaselConfig, ModelConfig
from serve_apps.errors import ApiError, error_response, install_error_handlers
from serve_apps.images import decode_reference_image, encode_png
from serve_apps.metrics import ingress_metrics
from serve_apps.responses import header_request_id, model_card, result_headers, wants_json
from serve_apps.router_actor import get_router
from serve_apps.routing import deployment_name
from serve_apps.schemas import (
    MAX_SEED,
    GenerateRequest,
    ImagesRequest,
    RoutingUpdate,
    new_request_id,
    parse_size,
    read_json_body,
    resolve_generate,
)
from serve_apps.tenants import TenantAuth, bearer_token

__all__ = ["EaselIngress", "api"]

_log = logging.getLogger(__name__)
# While an attempt waits longer than this, the ingress checks that its provider still has a
# running replica (else it moves on, if another provider has one), so a lost node costs about
# this much, not the whole request timeout.
_HEALTH_POLL_S = 0.5


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    # The handlers read the body themselves (to cap its size and shape every error), so the
    # request schema is declared for the OpenAPI page by hand.
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# Helpers the ingress methods use are defined before the class: Serve pickles the deployment
# class when it is decorated, so anything defined after it would be missing in the replica.


class _InFlight:
    """Bounds the requests one ingress replica holds: beyond the bound, 503 at once."""

    def __init__(self, ingress: "EaselIngress") -> None:
        self._ingress = ingress

    def __enter__(self) -> None:
        ing = self._ingress
        if ing._in_flight >= ing.cfg.serve.ingress_max_in_flight:
            raise ApiError(
                503,
                f"the ingress holds {ing._in_flight} requests, its limit; retry later",
                code="overloaded",
                retry_after=1,
            )
        ing._in_flight += 1

    def __exit__(self, *exc: object) -> None:
        self._ingress._in_flight -= 1


async def _awaited(response: Any) -> Any:
    return await response


api = FastAPI(
    title="easel",
    version="0.1.0",
    description="Text-to-image models on Ray Serve: generate, OpenAI-compatible images, "
    'routing across providers. Errors: {"error": {"code", "message"}}.',
)
install_error_handlers(api)


@serve.deployment
@serve.ingress(api)
class EaselIngress:
    """The ingress deployment; `handles` maps `<model>--<provider>` to its deployment."""

    def __init__(self, config: dict[str, Any], handles: dict[str, Any], digest: str) -> None:
        import ray

        self.cfg = EaselConfig.model_validate(config)
        self._models: dict[str, ModelConfig] = {m.name: m for m in self.cfg.models}
        self._handles = {name: h.options(method_name="generate") for name, h in handles.items()}
        self._auth = TenantAuth(self.cfg.serve.tenants)
        if self._auth.missing_keys:
            _log.warning(
                "tenants without an API key in the environment: %s", self._auth.missing_keys
            )
        self._router = get_router()
        ctx = serve.get_replica_context()
        ray.get(self._router.configure.remote(config, digest, ctx.app_name))
        self._in_flight = 0
        self._rng = random.SystemRandom()

    # --- model requests -----------------------------------------------------------------------

    @api.post(
        "/v1/generate",
        openapi_extra=_body_schema(GenerateRequest),
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
        summary="Generate one image (PNG, or JSON with base64 on Accept: application/json)",
    )
    async def generate(self, request: Request) -> Response:
        start = time.perf_counter()
        model_name, provider, status = "", "", 500
        try:
            with self._slot():
                body = await read_json_body(request, GenerateRequest, self.cfg.serve.max_body_bytes)
                model_name = body.model
                model = self._model(body.model)
                tenant = self._auth.authenticate(request.headers.get("authorization"), model.name)
                reference = None
                if body.reference_image is not None:
                    reference = encode_png(
                        decode_reference_image(
                            body.reference_image,
                            max_pixels=self.cfg.serve.max_reference_pixels,
                            max_bytes=self.cfg.serve.max_body_bytes,
                        )
                    )
                resolved = resolve_generate(
                    model=model,
                    request_id=body.request_id or header_request_id(request) or new_request_id(),
                    prompt=body.prompt,
                    width=body.width,
                    height=body.height,
                    steps=body.steps,
                    guidance=body.guidance,
                    seed=body.seed,
                    negative_prompt=body.negative_prompt,
                    reference_png=reference,
                    niche=body.niche,
                    default_seed=self._rng.randint(0, MAX_SEED),
                )
                result = await self._dispatch(model, resolved.to_dict(), tenant)
                provider = result["provider"]
                headers = result_headers(resolved.request_id, model.name, result)
                headers["X-Easel-Seed"] = str(resolved.seed)
                status = 200
                if wants_json(request):
                    return JSONResponse(
                        {
                            "request_id": resolved.request_id,
                            "model": model.name,
                            "provider": provider,
                            "replica": result["replica"],
                            "queue_ms": result["queue_ms"],
                            "inference_ms": result["inference_ms"],
                            "batch_size": result["batch_size"],
                            "cold_start": result["cold_start"],
                            "attempts": result["attempts"],
                            "seed": resolved.seed,
                            "width": resolved.width,
                            "height": resolved.height,
                            "steps": resolved.steps,
                            "format": "png",
                            "image_b64": base64.b64encode(result["png"]).decode(),
                        },
                        headers=headers,
                    )
                return Response(result["png"], media_type="image/png", headers=headers)
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            self._count(model_name, provider, status, start)

    @api.post(
        "/v1/images/generations",
        openapi_extra=_body_schema(ImagesRequest),
        summary="OpenAI Images API: n images as b64_json (or data: URLs)",
    )
    async def images_generations(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        model_name, provider, status = "", "", 500
        try:
            with self._slot():
                body = await read_json_body(request, ImagesRequest, self.cfg.serve.max_body_bytes)
                model_name = body.model
                model = self._model(body.model)
                tenant = self._auth.authenticate(request.headers.get("authorization"), model.name)
                width, height = parse_size(body.size)
                request_id = header_request_id(request) or new_request_id()
                base_seed = self._rng.randint(0, MAX_SEED) if body.seed is None else body.seed
                resolved = [
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
                # All-or-nothing like the OpenAI API: the first failure answers the request.
                results = await asyncio.gather(
                    *(self._dispatch(model, r.to_dict(), tenant) for r in resolved)
                )
                provider = results[0]["provider"]
                status = 200
                fmt = body.response_format or "b64_json"
                data = []
                for res in results:
                    b64 = base64.b64encode(res["png"]).decode()
                    data.append(
                        {"b64_json": b64}
                        if fmt == "b64_json"
                        else {"url": f"data:image/png;base64,{b64}"}
                    )
                first = resolved[0]
                return JSONResponse(
                    {
                        "created": int(time.time()),
                        "data": data,
                        "size": f"{first.width}x{first.height}",
                        "output_format": "png",
                    },
                    headers=result_headers(request_id, model.name, results[0]),
                )
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            self._count(model_name, provider, status, start)

    async def _dispatch(
        self, model: ModelConfig, payload: dict[str, Any], tenant: str | None
    ) -> dict[str, Any]:
        """Send one image request to providers in the router's order until one answers."""
        deadline = time.monotonic() + self.cfg.routing.request_timeout_s
        tried: list[str] = []
        failures: list[tuple[str, str, str]] = []  # (provider, outcome, message)
        retry_after = 1.0
        while True:
            choice = await self._router.choose.remote(model.name, tried, None if tried else tenant)
            if "rate_limited" in choice:
                raise ApiError(
                    429,
                    f"tenant {tenant!r} is over its rate limit",
                    retry_after=choice["rate_limited"],
                )
            if "unavailable" in choice:
                retry_after = max(retry_after, choice["unavailable"])
                break
            provider = choice["provider"]
            tried.append(provider)
            t0 = time.perf_counter()
            outcome, result = await self._attempt(model.name, provider, payload, deadline, tried)
            latency_ms = (time.perf_counter() - t0) * 1000
            self._router.finish.remote(model.name, provider, outcome, latency_ms)
            if outcome == "ok":
                result["attempts"] = len(tried)
                return result
            if outcome == "client_error":
                raise ApiError(result["status"], result["message"], code=result["code"])
            if result.get("retry_after"):
                retry_after = max(retry_after, float(result["retry_after"]))
            failures.append((provider, outcome, result.get("message", "")))
            ingress_metrics()["failovers"].inc(
                tags={"model": model.name, "provider": provider, "reason": outcome}
            )
            if time.monotonic() >= deadline:
                break
        detail = "; ".join(f"{p}: {o} ({m})" if m else f"{p}: {o}" for p, o, m in failures)
        timed_out = time.monotonic() >= deadline
        if failures and (
            all(o == "timeout" for _, o, _ in failures)
            or (timed_out and failures[-1][1] == "timeout")
        ):
            raise ApiError(
                504,
                f"model {model.name!r}: no answer within {self.cfg.routing.request_timeout_s:g}s "
                f"({detail})",
                code="upstream_timeout",
            )
        if failures and all(o == "shed" for _, o, _ in failures):
            raise ApiError(
                503,
                f"model {model.name!r} is overloaded: every provider's queue is full ({detail})",
                code="overloaded",
                retry_after=retry_after,
            )
        if failures:
            raise ApiError(
                503,
                f"model {model.name!r}: every provider failed ({detail})",
                code="all_providers_failed",
                retry_after=retry_after,
            )
        raise ApiError(
            503,
            f"model {model.name!r}: no healthy, undrained provider",
            code="no_healthy_provider",
            retry_after=retry_after,
        )

    async def _attempt(
        self,
        model: str,
        provider: str,
        payload: dict[str, Any],
        deadline: float,
        tried: list[str],
    ) -> tuple[str, dict[str, Any]]:
        """One try on one provider: (outcome, record). Never raises for provider trouble."""
        from ray.serve.exceptions import BackPressureError

        handle = self._handles[deployment_name(model, provider)]
        response = handle.remote(payload)
        task = asyncio.ensure_future(_awaited(response))
        while not task.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.cancel()
                task.cancel()
                return "timeout", {"message": "timed out"}
            await asyncio.wait({task}, timeout=min(_HEALTH_POLL_S, remaining))
            if not task.done() and await self._router.should_abandon.remote(model, provider, tried):
                response.cancel()
                task.cancel()
                return "error", {"message": "provider lost its replicas"}
        try:
            result = task.result()
        except BackPressureError as exc:
            return "shed", {"message": str(exc), "retry_after": exc.retry_after_s}
        except Exception as exc:  # a dead replica, a lost node, a failed deployment
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BackPressureError):
                return "shed", {"message": str(cause), "retry_after": cause.retry_after_s}
            _log.warning("%s on %s failed: %r", model, provider, exc)
            return "error", {"message": type(exc).__name__}
        if result.get("ok"):
            return "ok", result
        return result.get("outcome", "error"), result

    # --- information --------------------------------------------------------------------------

    @api.get("/v1/models", summary="The models served, with their limits (OpenAI list shape)")
    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(m) for m in self.cfg.models]}

    @api.get("/healthz", summary="Liveness: the ingress answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="Readiness: every model has a healthy, undrained provider")
    async def readyz(self) -> Response:
        view = await self._router.view.remote()
        ready: dict[str, list[str]] = {m: [] for m in self._models}
        for row in view["providers"]:
            if row["healthy"] and not row["drained"]:
                ready[row["model"]].append(row["provider"])
        missing = sorted(m for m, ps in ready.items() if not ps)
        if missing:
            return error_response(
                503, "not_ready", f"no healthy provider for models {missing}", retry_after=1
            )
        return JSONResponse({"status": "ready", "models": ready})

    # --- admin --------------------------------------------------------------------------------

    @api.get("/v1/admin/routing", summary="Routing state per (model, provider) [admin]")
    async def get_routing(self, request: Request) -> dict[str, Any]:
        self._check_admin(request)
        return await self._router.view.remote()

    @api.put(
        "/v1/admin/routing",
        openapi_extra=_body_schema(RoutingUpdate),
        summary="Change policy, weights, drains live, no redeploy [admin]",
    )
    async def put_routing(self, request: Request) -> dict[str, Any]:
        self._check_admin(request)
        body = await read_json_body(request, RoutingUpdate, self.cfg.serve.max_body_bytes)
        out = await self._router.update.remote(body.model_dump(exclude_none=True))
        if "error" in out:
            status, message = out["error"]
            raise ApiError(status, message)
        return out

    @api.get("/v1/admin/usage", summary="Per-replica usage for GPU-second costing [admin]")
    async def get_usage(self, request: Request) -> dict[str, Any]:
        from serve_apps.usage import read_usage_async

        self._check_admin(request)
        return {"replicas": await read_usage_async()}

    # --- helpers ------------------------------------------------------------------------------

    def _check_admin(self, request: Request) -> None:
        env = self.cfg.serve.admin_key_env
        key = os.environ.get(env) if env else None
        if not key:
            raise ApiError(
                403,
                f"admin routes are disabled: set {env or 'serve.admin_key_env'} in the serving "
                "processes' environment (the Ray workers) to enable them",
                code="admin_disabled",
            )
        import hmac

        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ApiError(401, "admin routes need 'Authorization: Bearer <admin key>'")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "invalid admin key")

    def _model(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise ApiError(
                404,
                f"unknown model {name!r} (known: {sorted(self._models)})",
                code="model_not_found",
            )
        return model

    def _slot(self) -> "_InFlight":
        return _InFlight(self)

    def _count(self, model: str, provider: str, status: int, start: float) -> None:
        m = ingress_metrics()
        tags = {"model": model or "-", "provider": provider or "-", "status": str(status)}
        m["requests"].inc(tags=tags)
        if status == 200:
            m["latency"].observe(
                (time.perf_counter() - start) * 1000, tags={"model": model, "provider": provider}
            )
