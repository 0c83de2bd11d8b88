"""The operator's policy: one interval's decisions from the routes' states (pure).

Per model, over the providers that serve it (the rules are in `cluster.operator`'s docstring):
bounds, errors, queue depth, price. Each decision carries its reason; the caller applies them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from config import OperatorConfig

__all__ = ["Decision", "Fits", "Plan", "RouteState", "decide"]

_WEIGHT_EPS = 0.01
# fits(provider, ceilings by model) -> whether the provider's worker groups hold those ceilings
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
