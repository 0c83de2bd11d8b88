"""The operator's policy (pure): per model, weights by price and ceiling, capacity by errors
and queue depth, within bounds and headroom."""

from __future__ import annotations

import pytest

from cluster.operator_policy import RouteState, decide
from config import OperatorConfig

CFG = OperatorConfig(
    queue_high=4,
    queue_low=0.5,
    max_error_rate=0.05,
    min_requests=10,
    cooldown_s=60,
    scale_step=1,
    drain_timeout_s=5,
)
PRICES = {"lambda": 1.79, "aws": 5.12, "azure": 4.10}


def _route(provider: str, model: str = "m", **kw: object) -> RouteState:
    base = dict(
        model=model,
        provider=provider,
        price_per_gpu_hour=PRICES[provider],
        ceiling=2,
        floor=1,
        weight=1.0,
        healthy=True,
        drained=False,
        outstanding=1,
        window_requests=0,
        window_errors=0,
        seconds_since_scaled=1e9,
    )
    base.update(kw)
    return RouteState(**base)  # type: ignore[arg-type]


def _three(changes: dict[str, dict] | None = None) -> list[RouteState]:
    return [_route(p, **(changes or {}).get(p, {})) for p in PRICES]


def room(limit: int = 4):
    """A fits() where every provider holds up to `limit` replicas of model 'm'."""
    return lambda provider, ceilings: ceilings.get("m", 0) <= limit


def _by(plan, action):
    return {d.provider: d for d in plan.decisions if d.action == action}


def test_weights_follow_price_and_ceiling():
    plan = decide(_three(), CFG, room())
    w = plan.weights["m"]
    assert abs(sum(w.values()) - 1) < 0.01
    assert w["lambda"] > w["azure"] > w["aws"] > 0
    assert w["aws"] == pytest.approx(w["lambda"] * 1.79 / 5.12, abs=0.01)
    assert not _by(plan, "scale")
    settled = [_route(p, weight=w[p]) for p in PRICES]
    assert decide(settled, CFG, room()).weights == {}


def test_erroring_route_loses_weight_and_capacity():
    plan = decide(
        _three({"aws": dict(ceiling=3, window_requests=40, window_errors=12)}), CFG, room()
    )
    scales = _by(plan, "scale")
    assert (scales["aws"].before, scales["aws"].after) == (3, 2)
    assert "error rate 30% (12/40) > 5%: moving 1 replica(s) to lambda" in scales["aws"].reason
    assert (scales["lambda"].before, scales["lambda"].after) == (2, 3)
    assert plan.weights["m"]["aws"] == 0
    assert "no new traffic" in _by(plan, "weight")["aws"].reason


def test_few_requests_are_not_judged_and_unhealthy_moves_weight_only():
    plan = decide(_three({"aws": dict(window_requests=4, window_errors=3)}), CFG, room())
    assert plan.weights["m"]["aws"] > 0
    plan = decide(_three({"azure": dict(healthy=False, ceiling=3)}), CFG, room())
    assert not _by(plan, "scale") and plan.weights["m"]["azure"] == 0


def test_queue_high_raises_the_cheapest_with_headroom():
    plan = decide(_three({"lambda": dict(outstanding=40)}), CFG, room())
    (up,) = _by(plan, "scale").values()
    assert (up.provider, up.before, up.after) == ("lambda", 2, 3)
    assert "queue 7.0/replica > 4" in up.reason
    # lambda full (its worker groups hold no more): the next cheapest, azure.
    full_lambda = lambda p, c: c.get("m", 0) <= (2 if p == "lambda" else 4)  # noqa: E731
    (up,) = _by(
        decide(_three({"lambda": dict(outstanding=40)}), CFG, full_lambda), "scale"
    ).values()
    assert up.provider == "azure"
    # No one has headroom: a reasoned hold.
    plan = decide(_three({"lambda": dict(outstanding=40)}), CFG, room(2))
    assert not _by(plan, "scale") and "no healthy provider has headroom" in plan.decisions[0].reason


def test_queue_low_lowers_the_most_expensive_above_its_floor():
    plan = decide(_three({p: dict(outstanding=0) for p in PRICES}), CFG, room())
    (down,) = _by(plan, "scale").values()
    assert (down.provider, down.after) == ("aws", 1)
    at_floor = _three({p: dict(outstanding=0, ceiling=1) for p in PRICES})
    assert not _by(decide(at_floor, CFG, room()), "scale")


def test_bounds_and_drained_routes():
    routes = [
        _route("lambda", ceiling=0),
        _route("aws", ceiling=6),
        _route("azure", drained=True, weight=5.0),
    ]
    plan = decide(routes, CFG, room())
    scales = _by(plan, "scale")
    assert scales["lambda"].after == 1 and "below its floor" in scales["lambda"].reason
    assert scales["aws"].after == 4 and "no longer fit" in scales["aws"].reason
    assert "azure" not in plan.weights["m"]  # a drain stays the cluster operator's call
