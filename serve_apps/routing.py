"""Per-provider routing: which provider serves a request for a model, and live changes to that.

`Router` is plain Python (unit-tested without Ray): a policy picks among the providers that host
a model (`weighted`, `least_outstanding`, `cheapest_healthy`); drained providers get no new
requests; a provider with `unhealthy_after_errors` errors in a row is skipped until
`recheck_after_s` has passed, then one probe request decides whether it is healthy again; a
provider whose deployment has no running replica (e.g. its node is gone) is skipped at once.

`RouterActor` holds the one `Router` every ingress replica consults: a named, detached Ray actor
(`easel-router` in namespace `easel`) pinned to the head node. One place means a drain or a new
weight takes effect for every ingress replica at the next request, and outstanding counts are
cluster-wide, at the price of one actor call per attempt (well under a millisecond locally,
measured by `benchmarks/serving_overhead.py`). The same actor keeps the tenants' token buckets.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from easel.config import EaselConfig
from serve_apps.tenants import RateLimiter

__all__ = [
    "NAMESPACE",
    "POLICIES",
    "ROUTER_NAME",
    "Outcome",
    "Route",
    "Router",
    "RouterActor",
    "deployment_name",
    "get_router",
    "routes_from_config",
]

_log = logging.getLogger(__name__)

POLICIES = ("weighted", "least_outstanding", "cheapest_healthy")
ROUTER_NAME = "easel-router"
NAMESPACE = "easel"
# How often the router asks Serve which deployments have a running replica.
_PROBE_INTERVAL_S = 0.5
_LATENCY_WINDOW = 512

Outcome = Literal["ok", "client_error", "error", "timeout", "shed"]


def deployment_name(model: str, provider: str) -> str:
    """The Serve deployment name of (model, provider)."""
    return f"{model}--{provider}"


@dataclass(frozen=True)
class Route:
    """One (model, provider) a request can go to, with what the policies need to know."""

    model: str
    provider: str
    weight: float = 1.0
    cost: float = 0.0  # USD per hour of one replica (GPU models) or per image (API models)


def routes_from_config(cfg: EaselConfig) -> list[Route]:
    """Every (model, provider) of the config, with its configured weight and cost."""
    out = []
    for m in cfg.models:
        for p in m.providers:
            prov = cfg.provider(p)
            if m.backend == "http_api":
                cost = float(m.price_per_image or 0.0)
            else:
                gpus = m.num_gpus or prov.gpus_per_replica
                cost = prov.price_per_gpu_hour * gpus
            out.append(Route(m.name, p, float(cfg.routing.weights.get(p, 1.0)), cost))
    return out


@dataclass
class _Slot:
    route: Route
    weight: float
    drained: bool = False
    deployment_up: bool = True
    outstanding: int = 0
    requests: int = 0
    errors: int = 0
    shed: int = 0
    consecutive_errors: int = 0
    unhealthy_since: float | None = None
    probing: bool = False
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    @property
    def healthy(self) -> bool:
        return self.unhealthy_since is None and self.deployment_up

    def p95_ms(self) -> float | None:
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        # Nearest-rank percentile: an observed value, never an interpolation.
        return data[max(0, -(-95 * len(data) // 100) - 1)]


class Router:
    """Routing state and policies for every (model, provider) route.

    Args:
        routes: The (model, provider) pairs and their weights and costs.
        policy: One of POLICIES.
        unhealthy_after_errors: Errors in a row that mark a provider unhealthy.
        recheck_after_s: How long an unhealthy provider is skipped before one probe request.
        seed: Seed of the random choices (weighted policy, tie breaks).
        clock: Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        policy: str = "least_outstanding",
        unhealthy_after_errors: int = 3,
        recheck_after_s: float = 5.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r} (allowed: {list(POLICIES)})")
        self.policy = policy
        self._threshold = unhealthy_after_errors
        self._recheck_s = recheck_after_s
        self._rng = random.Random(seed)
        self._clock = clock
        self._slots: dict[str, dict[str, _Slot]] = {}
        for r in routes:
            self._slots.setdefault(r.model, {})[r.provider] = _Slot(r, r.weight)

    @property
    def models(self) -> list[str]:
        return list(self._slots)

    def providers(self, model: str | None = None) -> list[str]:
        """Providers of `model` (all providers when None), in config order."""
        seen: dict[str, None] = {}
        for m, slots in self._slots.items():
            if model is None or m == model:
                seen.update(dict.fromkeys(slots))
        return list(seen)

    # --- per request --------------------------------------------------------------------------

    def choose(self, model: str, exclude: Iterable[str] = ()) -> str | None:
        """Pick a provider for one attempt and count it as outstanding; None when none is left.

        Drained providers, providers without a running replica and those in `exclude` (already
        tried by this request) are never picked. Healthy providers come first; when none is
        healthy, an unhealthy one whose recheck time has passed gets a single probe request.
        """
        slots = self._slots.get(model)
        if not slots:
            raise KeyError(model)
        excluded = set(exclude)
        open_ = [
            s for p, s in slots.items() if p not in excluded and not s.drained and s.deployment_up
        ]
        if self.policy == "weighted":
            open_ = [s for s in open_ if s.weight > 0]
        healthy = [s for s in open_ if s.unhealthy_since is None]
        if healthy:
            slot = self._pick(healthy)
        else:
            now = self._clock()
            due = [
                s
                for s in open_
                if not s.probing and now - (s.unhealthy_since or now) >= self._recheck_s
            ]
            if not due:
                return None
            slot = min(due, key=lambda s: s.unhealthy_since or 0.0)
            slot.probing = True
        slot.outstanding += 1
        slot.requests += 1
        return slot.route.provider

    def _pick(self, slots: list[_Slot]) -> _Slot:
        if len(slots) == 1:
            return slots[0]
        if self.policy == "weighted":
            return self._rng.choices(slots, weights=[s.weight for s in slots])[0]
        tie = {id(s): self._rng.random() for s in slots}
        if self.policy == "least_outstanding":
            return min(slots, key=lambda s: (s.outstanding, tie[id(s)]))
        return min(slots, key=lambda s: (s.route.cost, s.outstanding, tie[id(s)]))

    def finish(
        self, model: str, provider: str, outcome: Outcome, latency_ms: float | None = None
    ) -> None:
        """Record how an attempt chosen by `choose` ended.

        `ok` and `client_error` (the request was bad, the provider fine) count as success;
        `error` and `timeout` count towards unhealthy; `shed` (the provider's queue was full)
        is overload, not ill health, and only moves the request on.
        """
        slot = self._slots.get(model, {}).get(provider)
        if slot is None:
            return
        slot.outstanding = max(0, slot.outstanding - 1)
        if outcome == "shed":
            slot.shed += 1
            return
        if outcome in ("ok", "client_error"):
            slot.consecutive_errors = 0
            slot.unhealthy_since = None
            slot.probing = False
            if outcome == "ok" and latency_ms is not None:
                slot.latencies.append(float(latency_ms))
            return
        slot.errors += 1
        slot.consecutive_errors += 1
        now = self._clock()
        if slot.probing:
            slot.probing = False
            slot.unhealthy_since = now
        elif slot.unhealthy_since is None and slot.consecutive_errors >= self._threshold:
            slot.unhealthy_since = now
            _log.warning("provider %s marked unhealthy for model %s", provider, model)

    def retry_after(self, model: str) -> float:
        """Seconds until a provider of `model` may take requests again (at least 1)."""
        now = self._clock()
        waits = [
            self._recheck_s - (now - s.unhealthy_since)
            for s in self._slots.get(model, {}).values()
            if s.unhealthy_since is not None and not s.drained and s.deployment_up
        ]
        return max(1.0, min(waits, default=1.0))

    def set_deployment_up(self, up: dict[tuple[str, str], bool]) -> None:
        """Mark which (model, provider) deployments have a running replica."""
        for (model, provider), is_up in up.items():
            slot = self._slots.get(model, {}).get(provider)
            if slot is not None:
                slot.deployment_up = is_up

    def is_up(self, model: str, provider: str) -> bool:
        slot = self._slots.get(model, {}).get(provider)
        return bool(slot and slot.deployment_up)

    # --- admin --------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The routing state as `GET /v1/admin/routing` shows it."""
        rows = []
        for model, slots in self._slots.items():
            for provider, s in slots.items():
                p95 = s.p95_ms()
                rows.append(
                    {
                        "model": model,
                        "provider": provider,
                        "weight": s.weight,
                        "drained": s.drained,
                        "healthy": s.healthy,
                        "outstanding": s.outstanding,
                        "p95_ms": None if p95 is None else round(p95, 3),
                        "requests": s.requests,
                        "errors": s.errors,
                        "shed": s.shed,
                        "deployment_up": s.deployment_up,
                    }
                )
        return {"policy": self.policy, "providers": rows}

    def update(
        self,
        *,
        policy: str | None = None,
        weights: dict[str, float] | None = None,
        drain: list[str] | None = None,
        undrain: list[str] | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Change policy, weights or drains live; ValueError (nothing changed) on bad input.

        `model` limits weights and drains to one model; the policy is global.
        """
        if model is not None and model not in self._slots:
            raise LookupError(f"unknown model {model!r} (known: {self.models})")
        if policy is not None and policy not in POLICIES:
            raise ValueError(f"policy: unknown {policy!r} (allowed: {list(POLICIES)})")
        if policy is not None and model is not None:
            raise ValueError("policy applies to every model; leave out `model` to change it")
        known = set(self.providers(model))
        for key, names in (
            ("weights", list(weights or {})),
            ("drain", drain or []),
            ("undrain", undrain or []),
        ):
            unknown = sorted(set(names) - known)
            if unknown:
                scope = f"model {model!r}" if model else "any model"
                raise ValueError(
                    f"{key}: providers {unknown} do not serve {scope} (known: {sorted(known)})"
                )
        for p, w in (weights or {}).items():
            if not isinstance(w, int | float) or w < 0 or w != w:
                raise ValueError(f"weights: {p}={w!r} must be a number >= 0")
        overlap = set(drain or []) & set(undrain or [])
        if overlap:
            raise ValueError(f"providers {sorted(overlap)} are in both drain and undrain")
        if policy is not None:
            self.policy = policy
        for m, slots in self._slots.items():
            if model is not None and m != model:
                continue
            for p, s in slots.items():
                if weights and p in weights:
                    s.weight = float(weights[p])
                if drain and p in drain:
                    s.drained = True
                if undrain and p in undrain:
                    s.drained = False
        return self.view()


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

    async def is_up(self, model: str, provider: str) -> bool:
        return self._need().is_up(model, provider)

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
