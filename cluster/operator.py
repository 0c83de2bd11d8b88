"""`easel operator`: a control loop that moves traffic and capacity between providers.

Each provider is its own Ray cluster, and inside it Serve autoscales every model's deployment
within its bounds (the Ray autoscaler adds the pods). The operator works one level up, per
(model, provider) *route*: it moves the gateway's traffic weights between a model's providers
(price, headroom, health) through the routing admin API, and moves capacity by changing the
*ceiling* of a route (its deployment's Serve `max_replicas` in that provider's serveConfigV2,
`easel scale`'s mechanism). Each interval it reads the gateway's routing view and every
provider's RayService, decides (`decide`, pure), applies, and logs each decision with its reason
as one JSON line. The rules, per model:

1. Bounds: a ceiling below the route's floor (its Serve `min_replicas`, at least 1) is raised to
   it; one that no longer fits the provider's worker groups is lowered until it does.
2. Errors: a route whose failed share over the last `cooldown_s` exceeds `max_error_rate`
   (judged from `min_requests` requests) gets weight 0 and gives `scale_step` of its ceiling to
   the cheapest other healthy provider with headroom. Unhealthy without failed requests (pods
   starting) costs weight only, never capacity.
3. Queue depth: the model's outstanding requests per replica of ceiling above `queue_high`
   raise the ceiling at the cheapest healthy provider with headroom; below `queue_low` lower it
   at the most expensive healthy provider above its floor.
4. Price: healthy routes' weights are proportional to ceiling x (cheapest price / price) **
   `price_exponent`; drained routes are left as the cluster's operator set them.

Scaling in drains first: before a ceiling goes down the route is drained at the gateway and the
operator waits (at most `drain_timeout_s`) for its requests in flight to finish, then patches,
then undrains. A model's only serving route is not drained (its customers would get 503s):
Serve's graceful replica shutdown drains the replica it removes. A route is scaled at most once
per `cooldown_s`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from cluster import capacity
from cluster.kuberay import serve_deployment_name
from cluster.routing_client import RoutingClient, RoutingView
from cluster.scaling import ClusterState, ProviderCluster, ScaleError, scale_provider
from config import EaselConfig, OperatorConfig

__all__ = ["Decision", "Operator", "Plan", "RouteState", "decide"]

logger = logging.getLogger("easel.operator")
_WEIGHT_EPS = 0.01
Fits = Callable[[str, Mapping[str, int]], bool]


@dataclass(frozen=True)
class RouteState:
    """What the policy knows about one (model, provider) route at one decision."""

    model: str
    provider: str
    price_per_gpu_hour: float
    ceiling: int
    floor: int
    weight: float
    healthy: bool
    drained: bool
    outstanding: int
    window_requests: int
    window_errors: int
    seconds_since_scaled: float
    scalable: bool = True  # its provider's RayService could be read this interval


@dataclass(frozen=True)
class Decision:
    """One change, or a reasoned refusal to change: 'weight', 'scale' or 'hold'."""

    action: Literal["weight", "scale", "hold"]
    model: str
    provider: str
    before: float
    after: float
    reason: str

    def to_json(self) -> str:
        return json.dumps({"ts": round(time.time(), 3), **asdict(self)}, sort_keys=False)


@dataclass(frozen=True)
class Plan:
    """One interval's decisions, and per model the full weight map to send when one moved."""

    decisions: list[Decision]
    weights: dict[str, dict[str, float]]


def decide(states: list[RouteState], cfg: OperatorConfig, fits: Fits) -> Plan:
    """The plan for one interval (pure: the same states give the same plan).

    Args:
        fits: fits(provider, ceilings by model) -> whether the provider's worker groups hold
            its routes at those ceilings (routes not named stay as they are).
    """
    decisions: list[Decision] = []
    ceilings = {(s.model, s.provider): s.ceiling for s in states}
    scaled: set[tuple[str, str]] = set()

    def provider_ceilings(provider: str, **change: int) -> dict[str, int]:
        out = {m: c for (m, p), c in ceilings.items() if p == provider}
        out.update(change)
        return out

    def scale(s: RouteState, to: int, reason: str) -> None:
        key = (s.model, s.provider)
        decisions.append(Decision("scale", s.model, s.provider, ceilings[key], to, reason))
        ceilings[key] = to
        scaled.add(key)

    def can_scale(s: RouteState) -> bool:
        return (
            s.scalable
            and (s.model, s.provider) not in scaled
            and s.seconds_since_scaled >= cfg.cooldown_s
        )

    def headroom(s: RouteState, step: int) -> int:
        """How much of `step` the provider can add to this route's ceiling."""
        key = (s.model, s.provider)
        for add in range(step, 0, -1):
            if fits(s.provider, provider_ceilings(s.provider, **{s.model: ceilings[key] + add})):
                return add
        return 0

    by_model: dict[str, list[RouteState]] = defaultdict(list)
    for s in states:
        by_model[s.model].append(s)
    weights: dict[str, dict[str, float]] = {}
    for model, routes in sorted(by_model.items()):
        # 1. bounds
        for s in routes:
            if not s.scalable:
                continue
            low = max(1, s.floor)
            if ceilings[(model, s.provider)] < low:
                scale(s, low, f"below its floor ({low}: Serve min_replicas, at least 1)")
            elif not fits(s.provider, provider_ceilings(s.provider)):
                to = ceilings[(model, s.provider)]
                while to > low and not fits(
                    s.provider, provider_ceilings(s.provider, **{model: to})
                ):
                    to -= 1
                if to != ceilings[(model, s.provider)]:
                    scale(s, to, "its replicas no longer fit the provider's worker groups")

        # 2. errors: failed requests move capacity away; unhealthy alone moves weight only.
        erroring = {}
        for s in routes:
            if not s.drained and s.window_requests >= cfg.min_requests:
                rate = s.window_errors / s.window_requests
                if rate > cfg.max_error_rate:
                    erroring[s.provider] = (
                        f"error rate {rate:.0%} ({s.window_errors}/"
                        f"{s.window_requests}) > {cfg.max_error_rate:.0%}"
                    )
        bad = dict(erroring)
        bad |= {
            s.provider: "unhealthy"
            for s in routes
            if not s.drained and not s.healthy and s.provider not in erroring
        }
        good = [s for s in routes if not s.drained and s.provider not in bad]

        def cheapest_with_headroom(
            exclude: str | None = None, routes: list[RouteState] = routes, good: list = good
        ) -> RouteState | None:
            room = [s for s in good if s.provider != exclude and can_scale(s) and headroom(s, 1)]
            return min(room, key=lambda s: (s.price_per_gpu_hour, s.provider), default=None)

        for s in routes:
            if s.provider not in erroring:
                continue
            key = (model, s.provider)
            low = max(1, s.floor)
            if ceilings[key] > low and can_scale(s):
                to = max(low, ceilings[key] - cfg.scale_step)
                moved = ceilings[key] - to
                target = cheapest_with_headroom(exclude=s.provider)
                where = f"to {target.provider}" if target else "(no other provider has headroom)"
                scale(s, to, f"{erroring[s.provider]}: moving {moved} replica(s) {where}")
                if target is not None:
                    add = headroom(target, moved)
                    tkey = (model, target.provider)
                    scale(
                        target,
                        ceilings[tkey] + add,
                        f"taking capacity from {s.provider} ({erroring[s.provider]})",
                    )

        # 3. queue depth over the model's healthy capacity
        capacity_now = sum(ceilings[(model, s.provider)] for s in good)
        outstanding = sum(s.outstanding for s in routes if not s.drained)
        queue = outstanding / max(capacity_now, 1)
        if good and queue > cfg.queue_high:
            target = cheapest_with_headroom()
            if target is None:
                why = (
                    f"queue {queue:.1f}/replica > {cfg.queue_high:g} but no healthy provider "
                    "has headroom now"
                )
                decisions.append(Decision("hold", model, "*", capacity_now, capacity_now, why))
            else:
                key = (model, target.provider)
                add = headroom(target, cfg.scale_step)
                scale(
                    target,
                    ceilings[key] + add,
                    f"queue {queue:.1f}/replica > {cfg.queue_high:g}; cheapest provider with "
                    f"headroom (${target.price_per_gpu_hour:g}/GPU-h)",
                )
        elif good and queue < cfg.queue_low:
            for s in sorted(good, key=lambda s: (-s.price_per_gpu_hour, s.provider)):
                key = (model, s.provider)
                low = max(1, s.floor)
                if ceilings[key] <= low or not can_scale(s):
                    continue
                to = max(low, ceilings[key] - cfg.scale_step)
                scale(
                    s,
                    to,
                    f"queue {queue:.1f}/replica < {cfg.queue_low:g}; most expensive "
                    f"healthy provider above its floor "
                    f"(${s.price_per_gpu_hour:g}/GPU-h)",
                )
                break

        # 4. weights
        new = _weights(routes, good, bad, ceilings, cfg)
        if new is None:
            if good or bad:
                decisions.append(
                    Decision(
                        "hold",
                        model,
                        "*",
                        0,
                        0,
                        "no healthy provider has capacity; weights left as they are",
                    )
                )
            continue
        changed, lines = _weight_changes(routes, new, bad, ceilings)
        decisions += lines
        if changed:
            weights[model] = new
    return Plan(decisions, weights)


def _weights(
    routes: list[RouteState],
    good: list[RouteState],
    bad: dict[str, str],
    ceilings: dict[tuple[str, str], int],
    cfg: OperatorConfig,
) -> dict[str, float] | None:
    cheapest = min((s.price_per_gpu_hour for s in good), default=1.0)
    raw = {
        s.provider: ceilings[(s.model, s.provider)]
        * (cheapest / s.price_per_gpu_hour) ** cfg.price_exponent
        for s in good
    }
    total = sum(raw.values())
    if total <= 0:
        return None
    return {s.provider: round(raw.get(s.provider, 0.0) / total, 3) for s in routes if not s.drained}


def _weight_changes(
    routes: list[RouteState],
    new: dict[str, float],
    bad: dict[str, str],
    ceilings: dict[tuple[str, str], int],
) -> tuple[bool, list[Decision]]:
    current_total = sum(s.weight for s in routes if not s.drained) or 1.0
    cheapest = min((s.price_per_gpu_hour for s in routes if s.provider not in bad), default=0)
    changed, lines = False, []
    for s in routes:
        if s.drained:
            continue
        old = s.weight / current_total
        if abs(new[s.provider] - old) <= _WEIGHT_EPS:
            continue
        changed = True
        if s.provider in bad:
            reason = f"{bad[s.provider]}: no new traffic"
        else:
            reason = (
                f"ceiling {ceilings[(s.model, s.provider)]} replica(s) at "
                f"${s.price_per_gpu_hour:g}/GPU-h (cheapest healthy ${cheapest:g})"
            )
        lines.append(
            Decision("weight", s.model, s.provider, round(old, 3), new[s.provider], reason)
        )
    return changed, lines


class Operator:
    """Reads, decides, applies and logs, once per `step()`; `run()` loops.

    Args:
        clusters: per provider, its RayService on Kubernetes; None moves weights only.
        clock, sleep: injectable for tests (the drain wait polls with `sleep`).
    """

    def __init__(
        self,
        cfg: EaselConfig,
        routing: RoutingClient,
        clusters: Mapping[str, ProviderCluster] | None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[Decision], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.routing = routing
        self.clusters = dict(clusters or {})
        self.dry_run = dry_run
        self.clock = clock
        self.sleep = sleep
        self.emit = emit or (lambda d: logger.info(d.to_json()))
        self._history: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}
        self._last_scaled: dict[tuple[str, str], float] = {}

    def step(self) -> list[Decision]:
        """One interval: read the gateway and Kubernetes, decide, apply (unless dry run), log."""
        now = self.clock()
        view = self.routing.show()
        cluster_states, unread = {}, []
        for p, c in self.clusters.items():
            try:
                cluster_states[p] = c.read()
            except ScaleError as exc:  # one provider's API down: the others still move
                unread.append(Decision("hold", "*", p, 0, 0, f"cannot read its cluster: {exc}"))
        states = self._states(view, cluster_states, now)
        plan = decide(states, self.cfg.operator, self._fits(cluster_states))
        done = unread + (plan.decisions if self.dry_run else self._apply(plan, states, now))
        for d in done:
            self.emit(d)
        return done

    def run(self, iterations: int | None = None, stop: threading.Event | None = None) -> None:
        """Step every `operator.interval_s` until `iterations` are done or `stop` is set."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (iterations is None or done < iterations):
            try:
                self.step()
            except Exception as exc:  # one bad interval (a cluster restarting) must not end it
                self.emit(Decision("hold", "*", "*", 0, 0, f"interval failed: {exc}"))
            done += 1
            if iterations is None or done < iterations:
                stop.wait(self.cfg.operator.interval_s)

    # --- reading -----------------------------------------------------------------------------

    def _states(
        self, view: RoutingView, clusters: dict[str, ClusterState], now: float
    ) -> list[RouteState]:
        window = max(self.cfg.operator.cooldown_s, self.cfg.operator.interval_s)
        states = []
        for r in view.routes:
            try:
                p = self.cfg.provider(r.provider)
                m = self.cfg.model(r.model)
            except KeyError:
                continue  # a route the config does not know (another config's gateway)
            if m.backend != "diffusers":
                continue  # closed models: the vendor's capacity, not ours
            bounds = clusters[p.name].serve_bounds() if p.name in clusters else {}
            b = bounds.get(serve_deployment_name(m.name, p.name))
            ceiling = b.max_replicas if b else m.autoscaling.max_replicas
            floor = b.min_replicas if b else m.autoscaling.min_replicas
            requests, errors = self._window((m.name, p.name), now, r.requests, r.errors, window)
            last = self._last_scaled.get((m.name, p.name), float("-inf"))
            states.append(
                RouteState(
                    model=m.name,
                    provider=p.name,
                    price_per_gpu_hour=p.price_per_gpu_hour,
                    ceiling=ceiling,
                    floor=floor,
                    weight=r.weight,
                    healthy=r.healthy,
                    drained=r.drained,
                    outstanding=r.outstanding,
                    window_requests=requests,
                    window_errors=errors,
                    seconds_since_scaled=now - last,
                    # Without its cluster (--no-k8s, or unreadable) a route moves weight only.
                    scalable=p.name in clusters,
                )
            )
        return states

    def _fits(self, clusters: dict[str, ClusterState]) -> Fits:
        def fits(provider: str, ceilings: Mapping[str, int]) -> bool:
            state = clusters.get(provider)
            if state is None:
                return False
            p = self.cfg.provider(provider)
            group_max = {g: s.max_replicas for g, s in state.worker_groups().items()}
            bounds = state.serve_bounds()
            replicas = {}
            for m in capacity.hosted_models(self.cfg, p):
                live = bounds.get(serve_deployment_name(m.name, provider))
                ceiling = live.max_replicas if live else m.autoscaling.max_replicas
                replicas[m.name] = ceilings.get(m.name, ceiling)
            return capacity.fits(self.cfg, p, replicas, group_max)

        return fits

    def _window(
        self, key: tuple[str, str], now: float, requests: int, errors: int, window: float
    ) -> tuple[int, int]:
        """Requests and errors over the last `window` seconds, from cumulative counters."""
        hist = self._history.setdefault(key, deque())
        if hist and (requests < hist[-1][1] or errors < hist[-1][2]):
            hist.clear()  # the gateway restarted: its counters began again
        hist.append((now, requests, errors))
        while len(hist) > 1 and hist[1][0] <= now - window:
            hist.popleft()
        if len(hist) == 1:
            return requests, errors
        return requests - hist[0][1], errors - hist[0][2]

    # --- applying ----------------------------------------------------------------------------

    def _apply(self, plan: Plan, states: list[RouteState], now: float) -> list[Decision]:
        """Scale out, then scale in (draining first), then send weights; returns what was done
        (a scale-in whose drain timed out becomes a 'hold')."""
        done = [d for d in plan.decisions if d.action != "scale"]
        scales = [d for d in plan.decisions if d.action == "scale"]
        ups = [d for d in scales if d.after > d.before]
        downs = [d for d in scales if d.after < d.before]
        by_provider: dict[str, list[Decision]] = defaultdict(list)
        for d in ups:
            by_provider[d.provider].append(d)
        for provider, ds in by_provider.items():
            self._patch(provider, ds, now)
            done += ds
        for d in downs:
            done += self._scale_in(d, states, now)
        for model, weights in plan.weights.items():
            self.routing.update(weights=weights, model=model)
        return done

    def _patch(self, provider: str, decisions: list[Decision], now: float) -> None:
        cluster = self.clusters[provider]
        serve = {d.model: (None, int(d.after)) for d in decisions}
        scale_provider(self.cfg, self.cfg.provider(provider), cluster, serve=serve)
        for d in decisions:
            self._last_scaled[(d.model, d.provider)] = now

    def _scale_in(self, d: Decision, states: list[RouteState], now: float) -> list[Decision]:
        others = [
            s
            for s in states
            if s.model == d.model and s.provider != d.provider and s.healthy and not s.drained
        ]
        if not others:
            # Draining the model's only route would turn its traffic into 503s; Serve drains
            # the replica it removes (graceful shutdown) instead.
            self._patch(d.provider, [d], now)
            return [d]
        self.routing.update(drain=[d.provider], model=d.model)
        try:
            drained = self._wait_drained(d.model, d.provider)
            if drained:
                self._patch(d.provider, [d], now)
        finally:
            self.routing.update(undrain=[d.provider], model=d.model)
        if not drained:
            why = (
                f"drain of {d.provider} for {d.model} did not finish within "
                f"{self.cfg.operator.drain_timeout_s:g}s; not scaling in ({d.reason})"
            )
            return [Decision("hold", d.model, d.provider, d.before, d.before, why)]
        return [
            Decision("scale", d.model, d.provider, d.before, d.after, f"{d.reason} (drained first)")
        ]

    def _wait_drained(self, model: str, provider: str) -> bool:
        deadline = self.clock() + self.cfg.operator.drain_timeout_s
        while True:
            view = self.routing.show()
            left = [
                r.outstanding for r in view.routes if r.model == model and r.provider == provider
            ]
            if not left or left[0] == 0:
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(0.25)
