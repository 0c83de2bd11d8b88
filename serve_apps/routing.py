"""Per-provider routing: which provider serves a request for a model, and live changes to that.

`Router` is plain Python (unit-tested without Ray): a policy picks among the providers that host
a model (`weighted`, `least_outstanding`, `cheapest_healthy`); drained providers get no new
requests; a provider with `unhealthy_after_errors` errors in a row is skipped until
`recheck_after_s` has passed, then one probe request decides whether it is healthy again; a
provider whose deployment lost its running replicas (e.g. its node is gone) is skipped while any
other provider is left. The one `Router` every ingress replica consults lives in a Ray actor,
see `router_actor.py`.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from config import EaselConfig

__all__ = [
    "POLICIES",
    "Outcome",
    "Route",
    "Router",
    "deployment_name",
    "routes_from_config",
]

_log = logging.getLogger(__name__)

POLICIES = ("weighted", "least_outstanding", "cheapest_healthy")
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

        Drained providers and those in `exclude` (already tried by this request) are never
        picked. Providers with a running replica come first; one that lost its replicas is
        picked only when no other is left (its request then waits for the replacement, as a
        redeploy's would). Among those, healthy providers come first; when none is healthy,
        an unhealthy one whose recheck time has passed gets a single probe request.
        """
        slots = self._slots.get(model)
        if not slots:
            raise KeyError(model)
        excluded = set(exclude)
        open_ = [s for p, s in slots.items() if p not in excluded and not s.drained]
        if self.policy == "weighted":
            open_ = [s for s in open_ if s.weight > 0]
        for pool in (
            [s for s in open_ if s.deployment_up],
            [s for s in open_ if not s.deployment_up],
        ):
            slot = self._choose_in(pool)
            if slot is not None:
                slot.outstanding += 1
                slot.requests += 1
                return slot.route.provider
        return None

    def _choose_in(self, pool: list[_Slot]) -> _Slot | None:
        healthy = [s for s in pool if s.unhealthy_since is None]
        if healthy:
            return self._pick(healthy)
        now = self._clock()
        due = [
            s for s in pool if not s.probing and now - (s.unhealthy_since or now) >= self._recheck_s
        ]
        if not due:
            return None
        slot = min(due, key=lambda s: s.unhealthy_since or 0.0)
        slot.probing = True
        return slot

    def should_abandon(self, model: str, provider: str, tried: Iterable[str]) -> bool:
        """Whether a request waiting on `provider` should move on: it lost its replicas and
        another open provider of `model` (not in `tried`) has a running one."""
        slots = self._slots.get(model, {})
        slot = slots.get(provider)
        if slot is None or slot.deployment_up:
            return False
        done = set(tried)
        return any(
            s.deployment_up and not s.drained and p not in done and p != provider
            for p, s in slots.items()
        )

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
