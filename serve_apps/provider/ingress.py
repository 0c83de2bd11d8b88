"""A provider app's HTTP ingress: easel's native API in front of the provider's model deployments.

Routes (docs/api.md has the contract): `POST /v1/generate`, `POST /v1/images/generations`,
`POST /v1/images/edits` (multipart `image[]`), `GET /v1/models`, `GET /healthz`, `GET /readyz`,
`GET /v1/stats`. A request is checked as the gateway checks it (the same `serve_apps.api` code),
then handed to the model's deployment: Serve's own router, batching, autoscaling and
`max_queued_requests` do the rest. No tenants or admin routes here: a provider endpoint is
reached by the gateway, on the provider's network.

Every error answer carries `X-Easel-Outcome` (whose fault it was), so the gateway knows whether
to fail over. `/v1/stats` is what the gateway's probes and the cost stage read.

No `from __future__ import annotations` here: FastAPI must see real annotations on the
methods Serve wraps (`request: Request`), not strings.
"""

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from config import EaselConfig, ModelConfig, ProviderConfig
from serve_apps.api.asgi import new_app
from serve_apps.api.edits import read_edits_form
from serve_apps.api.errors import ApiError, error_response, install_error_handlers
from serve_apps.api.requests import (
    decode_references,
    find_model,
    images_body,
    resolve_body,
    resolve_images,
)
from serve_apps.api.responses import ImageMeta, model_card, wants_json
from serve_apps.api.schemas import MAX_SEED, GenerateRequest, ImagesRequest, read_json_body
from serve_apps.provider.model_route import image_meta
from serve_apps.provider.results import ErrorResult, ImageResult

__all__ = ["ProviderIngress", "api"]

_log = logging.getLogger(__name__)
# Serve's deployment status is refreshed in the background at most this often, and answers come
# from the last refresh: under load a status call takes up to a second here, and a probe must
# not wait for it (probes from many gateway processes then cost one call per interval, too).
_STATUS_TTL_S = 1.0
# The ingress only parses, checks and awaits; on cores it shares with model replicas it should
# not take a forward pass's core. A lower CPU priority (niceness added to the process's) gives
# the replicas the cores when both want one, and the ingress every idle cycle otherwise.
INGRESS_NICE = 5

api = new_app(
    title="easel provider",
    version="0.1.0",
    description="One provider cluster's models (called by the easel gateway). Errors: "
    '{"error": {"code", "message"}} with X-Easel-Outcome.',
)
install_error_handlers(api, with_outcome=True)


# Serve pickles the deployment class when it is decorated: helpers it uses come before it.


def _replica_counts(apps: dict[str, str]) -> dict[str, tuple[int, int]]:
    """{deployment: (RUNNING replicas, all replicas Serve wants)}; `apps` maps each deployment
    to its Serve application."""
    status = serve.status().applications
    out = {}
    for name, app_name in apps.items():
        app = status.get(app_name)
        dep = None if app is None else app.deployments.get(name)
        if dep is None:
            continue
        states = {getattr(k, "value", k): n for k, n in dep.replica_states.items()}
        out[name] = (states.get("RUNNING", 0), sum(states.values()))
    return out


@serve.deployment
@serve.ingress(api)
class ProviderIngress:
    """The ingress of provider `provider`, in front of its models' applications (`units`: each
    model's unit, `app.model_units`).

    Each model runs in a Serve application of its own beside this one, named `<this app>--<model>`
    (or `<this app>--tiny-models` for local mode's shared tiny replica, `app.py`); this ingress
    calls their deployments through handles, taken at the first request (the applications
    deploy together, in any order).
    """

    def __init__(self, config: dict[str, Any], provider: str, units: dict[str, str]) -> None:
        from serve_apps.provider.app import deployment_name

        with contextlib.suppress(OSError):
            os.nice(INGRESS_NICE)
        self.cfg = EaselConfig.model_validate(config)
        self.provider: ProviderConfig = self.cfg.provider(provider)
        models = list(units)
        self._models: dict[str, ModelConfig] = {name: self.cfg.model(name) for name in models}
        # Each model's unit: its own deployment and application, or the one a provider's tiny
        # builds share (`serve.share_tiny_replicas`).
        self._units = dict(units)
        self._deployments = {m: deployment_name(u, provider) for m, u in self._units.items()}
        self._handles: dict[str, Any] = {}
        self._ongoing = dict.fromkeys(models, 0)
        self._in_flight = 0
        self._rng = random.SystemRandom()
        self._status: dict[str, tuple[int, int]] | None = None
        self._status_at = -1e9
        self._refresh: asyncio.Task[None] | None = None

    def _app_of(self, model: str) -> str:
        from serve_apps.provider.app import model_app_name

        return model_app_name(serve.get_replica_context().app_name, self._units[model])

    def _handle(self, model: str) -> Any:
        handle = self._handles.get(model)
        if handle is None:
            handle = serve.get_deployment_handle(
                self._deployments[model], self._app_of(model), _check_exists=False
            ).options(method_name="generate")
            self._handles[model] = handle
        return handle

    # --- model requests -----------------------------------------------------------------------

    @api.post("/v1/generate", summary="Generate one image (PNG, or JSON on Accept)")
    async def generate(self, request: Request) -> Response:
        sv = self.cfg.serve
        body = await read_json_body(request, GenerateRequest, sv.max_body_bytes, sv.body_timeout_s)
        model = find_model(self._models, body.model)
        resolved = await resolve_body(
            body, model, request, sv, self._rng.randint(0, MAX_SEED), self.cfg.models
        )
        result = await self._run(model, resolved)
        meta = self._meta(resolved, result)
        if wants_json(request):
            return JSONResponse(meta.json_body(result.png), headers=meta.headers())
        return Response(result.png, media_type="image/png", headers=meta.headers())

    @api.post("/v1/images/generations", summary="OpenAI Images API: n images as b64_json")
    async def images_generations(self, request: Request) -> JSONResponse:
        body = await read_json_body(
            request, ImagesRequest, self.cfg.serve.max_body_bytes, self.cfg.serve.body_timeout_s
        )
        model = find_model(self._models, body.model)
        resolved = resolve_images(body, model, request, self._rng.randint(0, MAX_SEED))
        return await self._images_answer(model, resolved, body.response_format)

    @api.post("/v1/images/edits", summary="OpenAI Images API edits: multipart image[] parts")
    async def images_edits(self, request: Request) -> JSONResponse:
        sv = self.cfg.serve
        body, images = await read_edits_form(request, sv.max_body_bytes, sv.body_timeout_s)
        model = find_model(self._models, body.model)
        refs = await asyncio.to_thread(
            decode_references, images, model, sv, all_models=self.cfg.models, field="image"
        )
        resolved = resolve_images(body, model, request, self._rng.randint(0, MAX_SEED), refs)
        return await self._images_answer(model, resolved, body.response_format)

    async def _images_answer(
        self, model: ModelConfig, resolved: list[Any], fmt: Any
    ) -> JSONResponse:
        # All-or-nothing like the OpenAI API: the first failure answers the request.
        results = await asyncio.gather(*(self._run(model, r) for r in resolved))
        meta = self._meta(resolved[0], results[0])
        return JSONResponse(
            images_body(resolved, [r.png for r in results], fmt), headers=meta.headers()
        )

    async def _run(self, model: ModelConfig, resolved: Any) -> ImageResult:
        """One image from the model's deployment; ApiError (with its outcome) otherwise."""
        from ray.serve.exceptions import BackPressureError

        if self._in_flight >= self.cfg.serve.ingress_max_in_flight:
            raise ApiError(
                503,
                f"provider {self.provider.name!r} holds {self._in_flight} requests, its limit",
                code="overloaded",
                retry_after=1,
            )
        self._in_flight += 1
        self._ongoing[model.name] += 1
        try:
            result = await self._handle(model.name).remote(resolved)
        except BackPressureError as exc:
            raise ApiError(
                503,
                f"model {model.name!r} on {self.provider.name!r} is overloaded: {exc}",
                code="overloaded",
                retry_after=max(1.0, float(exc.retry_after_s or 1.0)),
            ) from None
        except Exception as exc:  # a dead replica, a failed deployment: this provider's fault
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BackPressureError):
                raise ApiError(
                    503, f"model {model.name!r} is overloaded", code="overloaded", retry_after=1
                ) from None
            _log.warning("%s on %s failed: %r", model.name, self.provider.name, exc)
            raise ApiError(
                503,
                f"model {model.name!r} on {self.provider.name!r}: replica failed "
                f"({type(exc).__name__})",
                code="replica_failed",
                retry_after=1,
            ) from None
        finally:
            self._in_flight -= 1
            self._ongoing[model.name] -= 1
        if isinstance(result, ErrorResult):
            raise ApiError(
                result.status, result.message, code=result.code, retry_after=result.retry_after
            )
        return result

    def _meta(self, resolved: Any, result: ImageResult) -> ImageMeta:
        return image_meta(resolved, result, self.provider.name)

    # --- information --------------------------------------------------------------------------

    @api.get("/v1/models", summary="The models this provider serves, with their limits")
    async def list_models(self) -> dict[str, Any]:
        cards = [model_card(m, [self.provider.name]) for m in self._models.values()]
        return {"object": "list", "data": cards}

    @api.get("/healthz", summary="Liveness: the ingress answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "provider": self.provider.name}

    @api.get("/readyz", summary="Readiness: every model has a running replica")
    async def readyz(self) -> Response:
        models = await self._model_stats()
        missing = sorted(m["model"] for m in models if not m["healthy"])
        if missing:
            return error_response(
                503,
                "not_ready",
                f"provider {self.provider.name!r}: no running replica for models {missing}",
                retry_after=1,
            )
        return JSONResponse({"status": "ready", "provider": self.provider.name})

    @api.get("/v1/stats", summary="Replicas, queues and capacity per model; the usage ledger")
    async def stats(self, usage: bool = True) -> dict[str, Any]:
        """`usage=false` leaves out the ledger's rows (what the gateway's probes ask for)."""
        from serve_apps.provider.usage import read_usage_async

        out = {
            "provider": self.provider.name,
            "time_s": time.time(),
            "models": await self._model_stats(),
        }
        if usage:
            out["usage"] = await read_usage_async(self.provider.name)
        return out

    async def _model_stats(self) -> list[dict[str, Any]]:
        counts = await self._replica_counts()
        out = []
        for name, model in self._models.items():
            running, target = counts.get(self._deployments[name], (0, 0))
            out.append(
                {
                    "model": name,
                    "deployment": self._deployments[name],
                    "replicas_running": running,
                    "replicas_target": target,
                    "ongoing": self._ongoing[name],
                    "max_ongoing_requests": model.max_ongoing_requests,
                    "max_queued_requests": model.max_queued_requests,
                    "capacity": running * model.max_ongoing_requests,
                    # Scaled to zero is healthy: the next request scales it up.
                    "healthy": running > 0 or target == 0,
                }
            )
        return out

    async def _replica_counts(self) -> dict[str, tuple[int, int]]:
        """The last known replica counts; a refresh runs in the background when they are old."""
        stale = time.monotonic() - self._status_at > _STATUS_TTL_S
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_status())
        if self._status is None:  # nothing known yet: the first answer waits for it
            await asyncio.shield(self._refresh)  # type: ignore[arg-type]
        return self._status or {}

    async def _refresh_status(self) -> None:
        apps = {dep: self._app_of(m) for m, dep in self._deployments.items()}
        try:
            self._status = await asyncio.to_thread(_replica_counts, apps)
        except Exception as exc:  # Serve starting or stopping: keep the last answer
            _log.debug("serve status failed: %r", exc)
        self._status_at = time.monotonic()
