"""The one place routing state lives: a named, detached Ray actor every ingress replica calls.

`RouterActor` (`easel-router` in namespace `easel`, pinned to the head node, which outlives
provider nodes) holds the `Router` of `routing.py` and the tenants' token buckets. One place
means a drain or a new weight holds for every ingress replica from its next request on, and
outstanding counts and health are cluster-wide; the price is one actor call per attempt
(measured, as part of the whole stack, by `benchmarks/serving_overhead.py`). It also polls Serve
for which (model, provider) deployments have a running replica, so a lost node stops traffic
before requests time out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from config import EaselConfig
from serve_apps.routing import Outcome, Router, deployment_name, routes_from_config
from serve_apps.tenants import RateLimiter

__all__ = ["NAMESPACE", "ROUTER_NAME", "RouterActor", "get_router"]

_log = logging.getLogger(__name__)

ROUTER_NAME = "easel-router"
NAMESPACE = "easel"
# How often the actor asks Serve which deployments have a running replica.
_PROBE_INTERVAL_S = 0.5


class RouterActor:
    """The Ray actor that holds the one Router (and the tenants' rate limiter).

    Ingress replicas call `configure` when they start; a new config (a different digest)
    replaces the state, the same config keeps live changes (weights, drains) and counters.
    """

    def __init__(self) -> None:
        self._router: Router | None = None
        self._limiter = RateLimiter([])
        self._digest: str | None = None
        self._app_name: str | None = None
        self._probe_task: asyncio.Task | None = None

    async def configure(self, cfg_json: dict[str, Any], digest: str, app_name: str) -> bool:
        """Load the routes of a config; returns True when the state was (re)built."""
        self._app_name = app_name
        if self._probe_task is None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        if digest == self._digest and self._router is not None:
            return False
        cfg = EaselConfig.model_validate(cfg_json)
        self._router = Router(
            routes_from_config(cfg),
            policy=cfg.routing.policy,
            unhealthy_after_errors=cfg.routing.unhealthy_after_errors,
            recheck_after_s=cfg.routing.recheck_after_s,
            seed=cfg.seed,
        )
        self._limiter = RateLimiter(cfg.serve.tenants)
        self._digest = digest
        return True

    def _need(self) -> Router:
        if self._router is None:
            raise RuntimeError("router not configured yet")
        return self._router

    async def choose(
        self, model: str, exclude: list[str], tenant: str | None = None
    ) -> dict[str, Any]:
        """{'provider': p}, {'rate_limited': seconds} or {'unavailable': seconds}."""
        router = self._need()
        if tenant is not None:
            wait = self._limiter.admit(tenant)
            if wait is not None:
                return {"rate_limited": wait}
        provider = router.choose(model, exclude)
        if provider is None:
            return {"unavailable": router.retry_after(model)}
        return {"provider": provider}

    async def finish(
        self, model: str, provider: str, outcome: Outcome, latency_ms: float | None = None
    ) -> None:
        self._need().finish(model, provider, outcome, latency_ms)

    async def should_abandon(self, model: str, provider: str, tried: list[str]) -> bool:
        return self._need().should_abandon(model, provider, tried)

    async def view(self) -> dict[str, Any]:
        return self._need().view()

    async def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a PUT body; {'error': (status, message)} instead of raising on bad input."""
        try:
            return self._need().update(**body)
        except LookupError as exc:
            return {"error": (404, str(exc).strip("'\""))}
        except (ValueError, TypeError) as exc:
            return {"error": (422, str(exc))}

    async def _probe_loop(self) -> None:
        # Serve knows first when a deployment lost all its replicas (e.g. its node died);
        # polling it lets the router stop sending there before requests time out.
        prev_running: dict[str, int] = {}
        lost: set[str] = set()
        while True:
            await asyncio.sleep(_PROBE_INTERVAL_S)
            if self._router is None or self._app_name is None:
                continue
            try:
                counts = await asyncio.to_thread(_replica_counts, self._app_name)
            except Exception as exc:  # Serve may be starting or shutting down
                _log.debug("serve status probe failed: %r", exc)
                continue
            if counts is None:
                continue
            state = {}
            for model in self._router.models:
                for provider in self._router.providers(model):
                    name = deployment_name(model, provider)
                    if name in counts:
                        state[(model, provider)] = _deployment_up(
                            name, counts[name], prev_running, lost
                        )
            self._router.set_deployment_up(state)


def _deployment_up(
    name: str, counts: tuple[int, int], prev_running: dict[str, int], lost: set[str]
) -> bool:
    """Whether a deployment can take requests, given its (running, wanted) replica counts.

    Down only when it *lost* its running replicas while replicas are still wanted (a dead node
    or crashed replicas being replaced), until one runs again. A deployment starting up or
    scaled to zero counts as up: a request must reach it for it to scale up.
    """
    running, wanted = counts
    before = prev_running.get(name, 0)
    prev_running[name] = running
    if running > 0 or wanted == 0:
        lost.discard(name)
        return True
    if before > 0:
        lost.add(name)
    return name not in lost


def _replica_counts(app_name: str) -> dict[str, tuple[int, int]] | None:
    """{deployment: (RUNNING replicas, all replicas)} of a Serve app; None if it is unknown."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return None
    out = {}
    for name, dep in app.deployments.items():
        states = {getattr(k, "value", k): n for k, n in dep.replica_states.items()}
        out[name] = (states.get("RUNNING", 0), sum(states.values()))
    return out


def get_router() -> Any:
    """The handle of the router actor, created on first use (detached, on the head node)."""
    import ray

    cls = ray.remote(RouterActor)
    return cls.options(
        name=ROUTER_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        # The head node outlives provider nodes: routing state must survive losing one.
        resources={"node:__internal_head__": 0.001},
    ).remote()
