"""The routing state of one gateway process: every (model, provider) upstream and its health.

`RoutingTable` is plain Python (unit-tested without a server): it holds one `UpstreamState` per
(model, provider) of the config, applies a whole `RoutingDocument` (policy, weights, drains) in
place when one arrives, and offers the policy the candidates for a request: healthy, undrained,
not full. Health is this process's own:

- passive, from the outcome of every attempt: a refused connection marks an upstream unhealthy
  (*down*) at once; `unhealthy_after_errors` errors or timeouts in a row mark it (*sick*); a
  client's mistake, overload (`shed`) and a cancelled request never count against it;
- active, from the probes of `health.py`: a provider that refuses the probe's connection is down
  at once (every model of it); `_PROBE_FAILURES` slow or failed probes in a row make it sick (a
  busy provider answers late, which is not an outage); a probe that shows no running replica for a
  model makes that model sick;
- recovery: any successful attempt; a good probe (at once for a provider that was unreachable,
  once `recheck_after_s` has passed for one marked for errors); for a closed model's vendor,
  which has no probe, a successful request.

Unhealthy upstreams get no traffic while a healthy one serves the model. When none is healthy, a
request still goes to the sick ones (a slow answer beats a failed request) and, once
`recheck_after_s` has passed since it was marked, one trial request at a time goes to a down one.
When an upstream goes down, loses its last running replica or stops answering its probes, while
another healthy one serves the model, its attempts in flight are abandoned (cancelled) so that
they fail over at once instead of waiting for a replacement or for the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from config import EaselConfig, ModelConfig
from serve_apps.gateway.availability import Episode, UpstreamStats
from serve_apps.gateway.document import RoutingDocument
from serve_apps.gateway.policies import Policy, make_policy

__all__ = ["Choice", "RoutingTable", "UpstreamState", "admission_limit", "route_cost"]

_log = logging.getLogger(__name__)

Kind = Literal["provider", "vendor"]
# Why an upstream is unreachable, not merely slow or failing: it gets trial requests only.
_DOWN = frozenset({"connect", "unreachable"})
# Why its attempts in flight will not be answered soon: abandon them (when another can serve). A
# model without a running replica parks them in Serve's queue until a new replica is up; so does
# a provider whose ingress died beside its replicas while Serve's proxy lives on (its probes are
# parked in the same queue and time out): a stats route that has not answered `_PROBE_FAILURES`
# probes in a row says nothing about its attempts but that they are waiting too.
_ABANDON = _DOWN | {"no_replica", "probe"}
# Slow or failed probes in a row before a provider that accepts connections is marked.
_PROBE_FAILURES = 3


def route_cost(cfg: EaselConfig, model: ModelConfig, provider: str) -> float:
    """What `cheapest_healthy` compares: USD per replica-hour (self-hosted) or per image (API)."""
    if model.backend == "http_api":
        return float(model.price_per_image or 0.0)
    prov = cfg.provider(provider)
    return prov.price_per_gpu_hour * (model.num_gpus or prov.gpus_per_replica)


@dataclass(eq=False)
class UpstreamState:
    """One (model, provider) upstream as one gateway process sees it."""

    model: str
    provider: str
    kind: Kind
    cost: float
    config_weight: float
    # In-flight requests that fill it: a provider's replicas x max_ongoing_requests from its
    # probe (the config's until the first probe), a vendor's max_ongoing + max_queued.
    capacity: float
    # Most requests this process sends at once: what the upstream can hold (its capacity plus
    # its queue), times this process's share. Beyond it the gateway answers 503 itself, with no
    # round trip (admission control); None: unbounded.
    limit: int | None
    stats: UpstreamStats
    queue: float = 0.0  # requests the upstream queues beyond its capacity
    share: float = 1.0  # this process's part of the limit (1 / gateway processes)
    weight: float = 1.0
    drained: bool = False
    outstanding: int = 0
    consecutive_errors: int = 0
    unhealthy_since: float | None = None  # monotonic
    reason: str | None = None
    trial: bool = False  # a trial request is in flight
    probe_failures: int = 0  # slow or failed probes in a row
    streak_start_s: float | None = None  # wall time of the first failure since the last success
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def healthy(self) -> bool:
        return self.unhealthy_since is None

    @property
    def down(self) -> bool:
        """Marked unhealthy for being unreachable (not merely slow or failing)."""
        return self.reason in _DOWN

    @property
    def load(self) -> float:
        """In-flight requests per unit of capacity (what `least_outstanding` compares)."""
        return self.outstanding / max(1.0, self.capacity)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.outstanding >= self.limit

    def set_capacity(self, capacity: float) -> None:
        """A new capacity (from a probe): the admission limit follows it."""
        self.capacity = capacity
        self.limit = admission_limit(capacity, self.queue, self.share)


def admission_limit(capacity: float, queue: float, share: float) -> int:
    """Requests one gateway process lets in flight on an upstream: (capacity + queue) x share,
    at least one (so that every process can still reach a small upstream)."""
    return max(1, math.ceil((capacity + queue) * share))


@dataclass(frozen=True)
class Choice:
    """What the table offers for one attempt: an upstream, or why there is none."""

    upstream: UpstreamState | None
    # none: no open upstream left; full: every healthy one is at its limit; unhealthy: none
    # is healthy or sick, and no down one is due for a trial yet.
    why: Literal["ok", "none", "full", "unhealthy"] = "ok"
    retry_after: float = 1.0


class RoutingTable:
    """Routing state and policy for every (model, provider) of a config, in one process.

    Args:
        cfg: The config (routes, weights, health settings).
        share: This process's part of each upstream's admission limit (1 / gateway processes).
        clock: Monotonic clock; `wall`: wall clock (both injectable for tests).
    """

    def __init__(
        self,
        cfg: EaselConfig,
        *,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        r = cfg.routing
        self._threshold = r.unhealthy_after_errors
        self._recheck_s = r.recheck_after_s
        self.policy: Policy = make_policy(r.policy, cfg.seed)
        self.document = RoutingDocument(policy=r.policy)
        self._states: dict[str, dict[str, UpstreamState]] = {}
        started = wall()
        for m in cfg.models:
            kind: Kind = "vendor" if m.backend == "http_api" else "provider"
            for p in m.providers:
                replicas = m.autoscaling.initial_replicas or m.autoscaling.min_replicas or 1
                per = m.max_ongoing_requests
                if kind == "vendor":
                    capacity, queue = float(per + m.max_queued_requests), 0.0
                else:
                    # Serve queues max_queued_requests per caller: per ingress replica.
                    capacity = float(replicas * per)
                    queue = float(m.max_queued_requests * cfg.serve.ingress_replicas)
                self._states.setdefault(m.name, {})[p] = UpstreamState(
                    model=m.name,
                    provider=p,
                    kind=kind,
                    cost=route_cost(cfg, m, p),
                    config_weight=float(r.weights.get(p, 1.0)),
                    capacity=capacity,
                    limit=admission_limit(capacity, queue, share),
                    stats=UpstreamStats(m.name, p, started),
                    queue=queue,
                    share=share,
                )
        self.apply(self.document)

    # --- what there is --------------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        return list(self._states)

    def providers(self, model: str | None = None) -> list[str]:
        """Providers of `model` (of any model when None), in config order."""
        if model is not None:
            return list(self._states.get(model, {}))
        return list(dict.fromkeys(p for slots in self._states.values() for p in slots))

    def states(self, model: str | None = None) -> list[UpstreamState]:
        if model is not None:
            return list(self._states.get(model, {}).values())
        return [s for slots in self._states.values() for s in slots.values()]

    def state(self, model: str, provider: str) -> UpstreamState:
        return self._states[model][provider]

    # --- live settings ------------------------------------------------------------------------

    def apply(self, doc: RoutingDocument) -> None:
        """Take a whole new routing document in place: policy, weights and drains at once."""
        if doc.policy != self.policy.name:
            self.policy = make_policy(doc.policy, self.policy._rng.randrange(2**31))
        for model, slots in self._states.items():
            weights = doc.weights.get(model, {})
            drained = set(doc.drained.get(model, ()))
            for p, s in slots.items():
                s.weight = float(weights.get(p, s.config_weight))
                s.drained = p in drained
        self.document = doc

    # --- choosing -----------------------------------------------------------------------------

    def choose(self, model: str, exclude: Iterable[str] = ()) -> Choice:
        """An upstream of `model` for the next attempt, not one of `exclude` (already tried).

        Healthy, undrained ones that are not full go to the policy; with none, the sick ones do;
        with none of those, a down one whose recheck time has passed gets one trial request.
        KeyError for an unknown model.
        """
        slots = self._states[model]
        done = set(exclude)
        open_ = [s for p, s in slots.items() if p not in done and not s.drained]
        if self.policy.name == "weighted":
            open_ = [s for s in open_ if s.weight > 0]
        healthy = [s for s in open_ if s.healthy]
        ready = [s for s in healthy if not s.full]
        if ready:
            return Choice(self.policy.select(ready))
        if healthy:
            return Choice(None, "full")
        sick = [s for s in open_ if not s.down and not s.full]
        if sick:
            return Choice(self.policy.select(sick))
        now = self._clock()
        due = [
            s for s in open_ if not s.trial and now - (s.unhealthy_since or now) >= self._recheck_s
        ]
        if due:
            s = min(due, key=lambda s: s.unhealthy_since or 0.0)
            s.trial = True
            return Choice(s)
        if not open_:
            return Choice(None, "none")
        waits = [self._recheck_s - (now - (s.unhealthy_since or now)) for s in open_]
        return Choice(None, "unhealthy", max(1.0, min(waits)))

    def begin(self, s: UpstreamState) -> None:
        """An attempt goes to `s` (the policy's before-hook)."""
        self.policy.before(s)

    def end(self, s: UpstreamState, outcome: str, latency_ms: float | None = None) -> None:
        """The attempt on `s` ended with `outcome`: counts released, health and stats updated.

        Called from a `finally`, so a cancelled attempt (`cancelled`) gives its count back and
        clears its trial flag too.
        """
        self.policy.after(s)
        s.trial = False
        s.stats.record(outcome, latency_ms)
        if outcome == "ok" and s.kind == "vendor" and latency_ms is not None:
            s.stats.record_vendor_image(latency_ms / 1000, self._wall())
        if outcome in ("ok", "client_error"):
            s.consecutive_errors = 0
            s.streak_start_s = None
            if not s.healthy:
                self._recover(s)
        elif outcome in ("error", "timeout", "connect"):
            s.consecutive_errors += 1
            if s.streak_start_s is None:
                s.streak_start_s = self._wall()
            if s.healthy and (outcome == "connect" or s.consecutive_errors >= self._threshold):
                self.mark_unhealthy(s, outcome)
            elif not s.healthy:
                s.unhealthy_since = self._clock()  # failed again: wait another recheck
                if outcome == "connect" and not s.down:  # sick, now unreachable too
                    s.reason = "connect"

    # --- health -------------------------------------------------------------------------------

    def mark_unhealthy(self, s: UpstreamState, reason: str) -> None:
        """Take `s` out of rotation; if it is down or has no replica, abandon its attempts in
        flight when another healthy upstream can serve them."""
        if not s.healthy:
            if reason in _ABANDON and s.reason not in _ABANDON:
                s.reason = reason  # sick before, unreachable (or without a replica) now
                self._abandon(s)
            return
        now_wall = self._wall()
        s.unhealthy_since = self._clock()
        s.reason = reason
        first = s.streak_start_s if s.streak_start_s is not None else now_wall
        s.stats.episodes.append(Episode(first, now_wall, reason))
        _log.warning("%s/%s marked unhealthy (%s)", s.model, s.provider, reason)
        if reason in _ABANDON:
            self._abandon(s)

    def _abandon(self, s: UpstreamState) -> None:
        others = [o for o in self.states(s.model) if o is not s and o.healthy and not o.drained]
        if others:
            for task in list(s.inflight):
                task.cancel()

    def _recover(self, s: UpstreamState) -> None:
        s.unhealthy_since = None
        s.reason = None
        s.consecutive_errors = 0
        s.streak_start_s = None
        if s.stats.episodes and s.stats.episodes[-1].recovered_s is None:
            s.stats.episodes[-1].recovered_s = self._wall()
        _log.warning("%s/%s healthy again", s.model, s.provider)

    def probe_result(
        self,
        provider: str,
        models: dict[str, bool] | None,
        capacity: dict[str, float],
        *,
        unreachable: bool = False,
    ) -> None:
        """A probe of `provider` ended: `models` {model: has a running replica}, None if it failed.

        A refused connection (`unreachable`) marks every model of the provider down at once;
        `_PROBE_FAILURES` other failures in a row mark them sick. A good probe restores a model
        marked for being unreachable (or unprobed) at once, one marked for errors once
        `recheck_after_s` has passed.
        """
        now = self._clock()
        for s in self.states():
            if s.provider != provider or s.kind != "provider":
                continue
            if models is None:
                s.probe_failures += 1
                if s.streak_start_s is None:
                    s.streak_start_s = self._wall()
                if unreachable:
                    self.mark_unhealthy(s, "unreachable")
                elif s.probe_failures >= _PROBE_FAILURES:
                    self.mark_unhealthy(s, "probe")
                continue
            s.probe_failures = 0
            if s.model in capacity:
                s.set_capacity(capacity[s.model])
            up = models.get(s.model, False)
            if not up:
                if s.streak_start_s is None:
                    s.streak_start_s = self._wall()
                self.mark_unhealthy(s, "no_replica")
            elif not s.healthy and (
                s.reason in ("probe", "connect", "unreachable", "no_replica")
                or now - (s.unhealthy_since or now) >= self._recheck_s
            ):
                self._recover(s)

    def retry_after(self, model: str) -> float:
        """Seconds until an upstream of `model` may take requests again (at least 1)."""
        now = self._clock()
        waits = [
            self._recheck_s - (now - s.unhealthy_since)
            for s in self.states(model)
            if s.unhealthy_since is not None and not s.drained
        ]
        return max(1.0, min(waits, default=1.0))

    # --- admin --------------------------------------------------------------------------------

    def view_rows(self) -> list[dict[str, Any]]:
        """One row per (model, provider): what `GET /v1/admin/routing` shows of this process."""
        rows = []
        for s in self.states():
            p95 = s.stats.p95_ms()
            rows.append(
                {
                    "model": s.model,
                    "provider": s.provider,
                    "kind": s.kind,
                    "weight": s.weight,
                    "drained": s.drained,
                    "healthy": s.healthy,
                    "reason": s.reason,
                    "outstanding": s.outstanding,
                    "capacity": s.capacity,
                    "p95_ms": None if p95 is None else round(p95, 3),
                    "requests": s.stats.requests,
                    "errors": s.stats.errors,
                    "shed": s.stats.attempts["shed"],
                    "failovers": s.stats.failovers,
                }
            )
        return rows
