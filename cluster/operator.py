"""`easel operator`: a control loop that moves routing weight and capacity between providers.

Each interval it reads the app's routing state (outstanding requests, health, requests and
errors per provider) and the worker groups' sizes from Kubernetes, decides, applies, and logs
every decision with its reason as one JSON line. The rules (`decide`, a pure function):

1. Bounds: a provider below its lowest or above its highest replica count is brought back.
2. Errors: a provider whose failed share over the last `cooldown_s` exceeds `max_error_rate`
   (judged from `min_requests` requests) gets weight 0 and gives `scale_step` replicas to the
   cheapest provider with headroom. An unhealthy view without failed requests (pods starting, a
   provider scaled to 0) costs weight only, never capacity.
3. Queue depth: outstanding requests per healthy replica above `queue_high` adds `scale_step`
   replicas at the cheapest provider with headroom (healthy ones first; one at 0 replicas counts
   as healthy); below `queue_low` removes them from the most expensive healthy one, never taking
   the last replica of a model's last healthy provider.
4. Price: healthy providers' weights are proportional to replicas × (cheapest price / price) **
   `price_exponent`; drained providers are left as the operator of the cluster set them.

A provider is scaled at most once per `cooldown_s`; every number is bounded by the config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from cluster.providers import replica_bounds
from cluster.routing_client import RoutingClient, RoutingView
from cluster.scaling import GroupScale, Scaler
from config import EaselConfig, OperatorConfig

__all__ = ["Decision", "Operator", "Plan", "ProviderState", "decide"]

logger = logging.getLogger("easel.operator")
_WEIGHT_EPS = 0.01


@dataclass(frozen=True)
class ProviderState:
    """What the policy knows about one provider at one decision."""

    provider: str
    price_per_gpu_hour: float
    low: int
    high: int
    replicas: int
    weight: float
    healthy: bool
    drained: bool
    outstanding: int
    window_requests: int
    window_errors: int
    seconds_since_scaled: float
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """One change (or a reasoned refusal to change): 'weight', 'scale' or 'hold'."""

    action: Literal["weight", "scale", "hold"]
    provider: str
    before: float
    after: float
    reason: str

    def to_json(self) -> str:
        return json.dumps({"ts": round(time.time(), 3), **asdict(self)}, sort_keys=False)


@dataclass(frozen=True)
class Plan:
    """One interval's decisions, and the full weight map to send when any weight changes."""

    decisions: list[Decision]
    weights: dict[str, float] | None


def decide(states: list[ProviderState], cfg: OperatorConfig) -> Plan:
    """The plan for one interval (pure: the same states give the same plan)."""
    decisions: list[Decision] = []
    replicas = {s.provider: s.replicas for s in states}
    scaled: set[str] = set()
    by_name = {s.provider: s for s in states}

    def scale(s: ProviderState, to: int, reason: str) -> None:
        decisions.append(Decision("scale", s.provider, replicas[s.provider], to, reason))
        replicas[s.provider] = to
        scaled.add(s.provider)

    def can_scale(s: ProviderState) -> bool:
        return s.provider not in scaled and s.seconds_since_scaled >= cfg.cooldown_s

    # 1. bounds
    for s in states:
        if s.replicas < s.low:
            scale(s, s.low, f"below its lowest replica count {s.low}")
        elif s.replicas > s.high:
            scale(s, s.high, f"above its highest replica count {s.high}")

    # 2. errors: failed requests move capacity away; an unhealthy view alone only moves weight,
    # since a provider whose pods are still starting (or scaled to 0) looks unhealthy too.
    erroring: dict[str, str] = {}
    for s in states:
        if not s.drained and s.window_requests >= cfg.min_requests:
            rate = s.window_errors / s.window_requests
            if rate > cfg.max_error_rate:
                erroring[s.provider] = (
                    f"error rate {rate:.0%} ({s.window_errors}/{s.window_requests}) > "
                    f"{cfg.max_error_rate:.0%}"
                )
    bad = dict(erroring)
    bad.update({s.provider: "unhealthy" for s in states
                if not s.drained and not s.healthy and s.provider not in erroring})  # fmt: skip
    good = [s for s in states if not s.drained and s.provider not in bad]

    def cheapest_with_headroom() -> ProviderState | None:
        room = [s for s in states if not s.drained and s.provider not in erroring
                and replicas[s.provider] < s.high and can_scale(s)]  # fmt: skip

        # Healthy providers first; one with no replicas counts as healthy (nothing to fail).
        def rank(s: ProviderState) -> tuple[bool, float, str]:
            usable = s.healthy or replicas[s.provider] == 0
            return (not usable, s.price_per_gpu_hour, s.provider)

        return min(room, key=rank, default=None)

    for name, why in erroring.items():
        s = by_name[name]
        if replicas[name] > s.low and can_scale(s):
            target = cheapest_with_headroom()
            to = max(s.low, replicas[name] - cfg.scale_step)
            moved = replicas[name] - to
            where = f"to {target.provider}" if target else "(no other provider has headroom)"
            scale(s, to, f"{why}: moving {moved} replica(s) {where}")
            if target is not None:
                up = min(target.high, replicas[target.provider] + moved)
                scale(target, up, f"taking capacity from {name} ({why})")

    # 3. queue depth, per replica that serves now
    serving = sum(replicas[s.provider] for s in good)
    outstanding = sum(s.outstanding for s in states)
    queue = outstanding / max(serving, 1)
    if queue > cfg.queue_high:
        target = cheapest_with_headroom()
        if target is None:
            why = f"queue {queue:.1f}/replica > {cfg.queue_high:g} but no provider has headroom now"
            decisions.append(Decision("hold", "*", serving, serving, why))
        else:
            to = min(target.high, replicas[target.provider] + cfg.scale_step)
            scale(target, to, f"queue {queue:.1f}/replica > {cfg.queue_high:g}; cheapest "
                  f"provider with headroom (${target.price_per_gpu_hour:g}/GPU-h)")  # fmt: skip
    elif queue < cfg.queue_low:
        for s in sorted(good, key=lambda s: (-s.price_per_gpu_hour, s.provider)):
            if replicas[s.provider] <= s.low or not can_scale(s):
                continue
            to = max(s.low, replicas[s.provider] - cfg.scale_step)
            if to == 0 and _last_host(s, good, replicas):
                continue
            why = (f"queue {queue:.1f}/replica < {cfg.queue_low:g}; most expensive healthy "
                   f"provider above its lowest (${s.price_per_gpu_hour:g}/GPU-h)")  # fmt: skip
            scale(s, to, why)
            break

    # 4. weights
    cheapest = min((s.price_per_gpu_hour for s in good), default=1.0)
    raw = {
        s.provider: replicas[s.provider] * (cheapest / s.price_per_gpu_hour) ** cfg.price_exponent
        for s in good
    }
    total = sum(raw.values())
    if total <= 0:
        if good or bad:
            why = "no healthy provider has replicas; weights left as they are"
            decisions.append(Decision("hold", "*", 0, 0, why))
        return Plan(decisions, None)
    current_total = sum(s.weight for s in states if not s.drained) or 1.0
    weights = {
        s.provider: round(raw.get(s.provider, 0.0) / total, 3) for s in states if not s.drained
    }
    changed = False
    for s in states:
        if s.drained:
            continue
        new = weights[s.provider]
        old = s.weight / current_total
        if abs(new - old) <= _WEIGHT_EPS:
            continue
        changed = True
        if s.provider in bad:
            reason = f"{bad[s.provider]}: no new traffic"
        else:
            reason = (
                f"{replicas[s.provider]} replica(s) at ${s.price_per_gpu_hour:g}/GPU-h "
                f"(cheapest healthy ${cheapest:g})"
            )
        decisions.append(Decision("weight", s.provider, round(old, 3), new, reason))
    return Plan(decisions, weights if changed else None)


def _last_host(s: ProviderState, good: list[ProviderState], replicas: dict[str, int]) -> bool:
    """True when some model of `s` has no other healthy provider with replicas."""
    for model in s.models:
        others = [g for g in good if g.provider != s.provider and model in g.models]
        if not any(replicas[g.provider] > 0 for g in others):
            return True
    return False


class Operator:
    """Reads, decides, applies and logs, once per `step()`; `run()` loops."""

    def __init__(
        self,
        cfg: EaselConfig,
        routing: RoutingClient,
        scaler: Scaler | None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[Decision], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.routing = routing
        self.scaler = scaler
        self.dry_run = dry_run
        self.clock = clock
        self.emit = emit or (lambda d: logger.info(d.to_json()))
        self._history: dict[str, deque[tuple[float, int, int]]] = {}
        self._last_scaled: dict[str, float] = {}

    def step(self) -> list[Decision]:
        """One interval: read the app and Kubernetes, decide, apply (unless dry run), log."""
        now = self.clock()
        view = self.routing.show()
        groups = self.scaler.groups() if self.scaler else {}
        states = self._states(view, groups, now)
        plan = decide(states, self.cfg.operator)
        if not self.dry_run:
            self._apply(plan, now)
        for d in plan.decisions:
            self.emit(d)
        return plan.decisions

    def run(self, iterations: int | None = None, stop: threading.Event | None = None) -> None:
        """Step every `operator.interval_s` until `iterations` are done or `stop` is set."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (iterations is None or done < iterations):
            try:
                self.step()
            except Exception as exc:  # one bad interval (app restarting) must not end the loop
                self.emit(Decision("hold", "*", 0, 0, f"interval failed: {exc}"))
            done += 1
            if iterations is None or done < iterations:
                stop.wait(self.cfg.operator.interval_s)

    def _states(
        self, view: RoutingView, groups: dict[str, GroupScale], now: float
    ) -> list[ProviderState]:
        summary = view.by_provider()
        window = max(self.cfg.operator.cooldown_s, self.cfg.operator.interval_s)
        states = []
        for p in self.cfg.providers:
            s = summary.get(p.name)
            if s is None:
                continue  # the app serves nothing there
            low, high = replica_bounds(p)
            group = groups.get(p.name)
            if group is not None:
                low, high = max(low, group.min_replicas), min(high, group.max_replicas)
                replicas = group.replicas
            else:
                # Without Kubernetes the operator moves weight only: capacity is fixed at 1.
                low = high = replicas = 1
            requests, errors = self._window(p.name, now, s.requests, s.errors, window)
            states.append(
                ProviderState(
                    provider=p.name,
                    price_per_gpu_hour=p.price_per_gpu_hour,
                    low=low,
                    high=max(low, high),
                    replicas=replicas,
                    weight=s.weight,
                    healthy=s.healthy,
                    drained=s.drained,
                    outstanding=s.outstanding,
                    window_requests=requests,
                    window_errors=errors,
                    seconds_since_scaled=now - self._last_scaled.get(p.name, float("-inf")),
                    models=tuple(m.name for m in self.cfg.models if p.name in m.providers),
                )
            )
        return states

    def _window(
        self, provider: str, now: float, requests: int, errors: int, window: float
    ) -> tuple[int, int]:
        """Requests and errors over the last `window` seconds, from cumulative counters."""
        hist = self._history.setdefault(provider, deque())
        if hist and (requests < hist[-1][1] or errors < hist[-1][2]):
            hist.clear()  # the app restarted: its counters began again
        hist.append((now, requests, errors))
        while len(hist) > 1 and hist[1][0] <= now - window:
            hist.popleft()
        if len(hist) == 1:
            return requests, errors
        return requests - hist[0][1], errors - hist[0][2]

    def _apply(self, plan: Plan, now: float) -> None:
        if self.scaler is not None:
            for d in plan.decisions:
                if d.action == "scale":
                    self.scaler.scale(d.provider, replicas=int(d.after))
                    self._last_scaled[d.provider] = now
        if plan.weights is not None:
            # The whole map, so every provider's share is on the same scale.
            self.routing.update(weights=plan.weights)
