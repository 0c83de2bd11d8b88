"""`easel operator`: the policy (pure), and the loop against simulated provider clusters (the
simulated Kubernetes API and KubeRay controller, one per provider's kube context) and a fake
gateway admin route."""

from __future__ import annotations

import json

import pytest
import yaml

from cluster.kuberay import render
from cluster.operator import Operator, RouteState, decide
from cluster.routing_client import RoutingClient
from cluster.scaling import ProviderCluster, custom_objects_api
from config import OperatorConfig, load_config, shipped_config_path
from tests.cluster.fake_admin import KEY, FakeAdmin
from tests.cluster.simulated_k8s import SimulatedKubeApi
from tests.cluster.simulated_kuberay import SimulatedKubeRay

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
PROD = shipped_config_path("production.example.yaml")
MODELS = ("flux2-dev", "flux2-schnell", "sdxl-lightning", "sdxl-turbo")


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


# --- the loop against simulated provider clusters and a fake gateway ------------------------


@pytest.fixture
def world(tmp_path):
    """The production example: each provider its own simulated Kubernetes cluster and context."""
    cfg = load_config(PROD)
    objs = render(cfg)
    log: list = []
    servers, controllers = {}, {}
    try:
        for p in PRICES:
            servers[p] = SimulatedKubeApi().start()
            controllers[p] = SimulatedKubeRay(servers[p])
            servers[p].apply(objs[f"{p}/40-rayservice.yaml"])
            servers[p].watch(lambda event, obj, p=p: log.append(("kube", p, obj["kind"])))
        first, *rest = PRICES
        kubeconfig = str(
            servers[first].write_kubeconfig(
                tmp_path / "kubeconfig",
                namespace="easel",
                context=first,
                others={p: servers[p] for p in rest},
            )
        )
        with FakeAdmin(list(PRICES), models=MODELS, log=log) as admin:
            for p in PRICES:
                admin.set(p, outstanding=0)
            yield cfg, servers, controllers, admin, kubeconfig, log
    finally:
        for s in servers.values():
            s.stop()


def _clusters(cfg, kubeconfig):
    return {
        p: ProviderCluster(
            custom_objects_api(kubeconfig, p), "easel", f"easel-production-example-{p}"
        )
        for p in PRICES
    }


def _ceiling(server, provider: str, model: str) -> int:
    rs = server.get("rayservices", "easel", f"easel-production-example-{provider}")
    (app,) = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    (d,) = [d for d in app["deployments"] if d["name"] == f"{model}--{provider}"]
    return d["autoscaling_config"]["max_replicas"]


def test_queue_high_raises_a_serve_ceiling_in_place(world):
    cfg, servers, controllers, admin, kubeconfig, _log = world
    for p in PRICES:
        admin.set(p, "sdxl-turbo", outstanding=12)  # 36 over 6 replicas of ceiling: > 4
    logged = []
    with RoutingClient(admin.url, KEY) as routing:
        op = Operator(
            cfg, routing, _clusters(cfg, kubeconfig), clock=lambda: 1000.0, emit=logged.append
        )
        decisions = op.step()
    (up,) = [d for d in decisions if d.action == "scale" and d.after > d.before]
    assert (up.model, up.provider, up.before, up.after) == ("sdxl-turbo", "lambda", 2, 3)
    assert _ceiling(servers["lambda"], "lambda", "sdxl-turbo") == 3
    ctl = controllers["lambda"]
    (cluster,) = ctl.created
    assert len(ctl.submissions[cluster]) == 2  # applied to the running cluster, in place
    weights = [b for b in admin.puts if "weights" in b]
    assert {b["model"] for b in weights} == set(MODELS)  # one map per model
    assert logged == decisions and all(d.reason for d in decisions)


def test_scale_in_drains_first(world):
    cfg, servers, _controllers, admin, kubeconfig, log = world
    admin.set("aws", "flux2-dev", outstanding=1)  # in flight there until the drain
    sleeps = []

    def sleep(_s: float) -> None:
        sleeps.append(1)
        admin.set("aws", "flux2-dev", outstanding=0)  # the request finished

    with RoutingClient(admin.url, KEY) as routing:
        op = Operator(
            cfg,
            routing,
            _clusters(cfg, kubeconfig),
            clock=lambda: 1000.0,
            emit=lambda d: None,
            sleep=sleep,
        )
        decisions = op.step()
    downs = [d for d in decisions if d.action == "scale" and d.model == "flux2-dev"]
    assert [(d.provider, d.before, d.after) for d in downs] == [("aws", 4, 3)]
    assert "(drained first)" in downs[0].reason and sleeps
    # Every idle model gives one replica of ceiling at aws, each drained, patched, undrained.
    events = [
        ("admin", next(iter(e[1])), e[1]["model"]) if e[0] == "admin" else e[:2]
        for e in log
        if e[0] == "kube" or "weights" not in e[1]
    ]
    assert events[:3] == [
        ("admin", "drain", "flux2-dev"),
        ("kube", "aws"),
        ("admin", "undrain", "flux2-dev"),
    ]
    assert [b["model"] for b in admin.puts if "drain" in b] == list(MODELS)
    assert all(b["drain"] == ["aws"] for b in admin.puts if "drain" in b)
    assert _ceiling(servers["aws"], "aws", "flux2-dev") == 3


def test_a_drain_that_does_not_finish_holds_the_scale_in(world):
    cfg, servers, _controllers, admin, kubeconfig, _log = world
    admin.set("aws", "flux2-dev", outstanding=1)  # never finishes
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += 10  # past drain_timeout_s after one poll

    with RoutingClient(admin.url, KEY) as routing:
        op = Operator(
            cfg,
            routing,
            _clusters(cfg, kubeconfig),
            clock=lambda: now[0],
            emit=lambda d: None,
            sleep=sleep,
        )
        decisions = op.step()
    (hold,) = [d for d in decisions if d.action == "hold" and d.model == "flux2-dev"]
    assert "did not finish within" in hold.reason
    assert _ceiling(servers["aws"], "aws", "flux2-dev") == 4
    assert {"undrain": ["aws"], "model": "flux2-dev"} in admin.puts  # traffic back


def test_the_only_serving_route_is_not_drained(world):
    cfg, servers, _controllers, admin, kubeconfig, _log = world
    admin.set("lambda", healthy=False)
    admin.set("azure", healthy=False)
    with RoutingClient(admin.url, KEY) as routing:
        op = Operator(
            cfg, routing, _clusters(cfg, kubeconfig), clock=lambda: 1000.0, emit=lambda d: None
        )
        decisions = op.step()
    downs = [d for d in decisions if d.action == "scale"]
    assert downs and all(d.provider == "aws" for d in downs)
    assert not [b for b in admin.puts if "drain" in b]
    assert _ceiling(servers["aws"], "aws", "flux2-dev") == 3


def test_dry_run_changes_nothing(world):
    cfg, servers, _controllers, admin, kubeconfig, _log = world
    admin.set("lambda", "sdxl-turbo", outstanding=40)
    with RoutingClient(admin.url, KEY) as routing:
        decisions = Operator(
            cfg, routing, _clusters(cfg, kubeconfig), dry_run=True, emit=lambda d: None
        ).step()
    assert any(d.action == "scale" for d in decisions)
    assert not admin.puts
    assert not [c for s in servers.values() for c in s.calls if c.method == "PATCH"]


def test_operator_cli_logs_json_decisions(world, monkeypatch, capsys):
    from easel.cli import main

    _cfg, servers, _controllers, admin, kubeconfig, _log = world
    monkeypatch.setenv("EASEL_ADMIN_KEY", KEY)
    admin.set("lambda", "sdxl-turbo", outstanding=40)
    argv = [
        "operator",
        "--config",
        str(PROD),
        "--url",
        admin.url,
        "--kubeconfig",
        kubeconfig,
        "--iterations",
        "1",
    ]
    assert main(argv) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    ups = [x for x in lines if x["action"] == "scale" and x["after"] > x["before"]]
    assert [(x["model"], x["provider"]) for x in ups] == [("sdxl-turbo", "lambda")]
    assert _ceiling(servers["lambda"], "lambda", "sdxl-turbo") == 3
    assert main([*argv[:-2], "--iterations", "0"]) == 2


def test_operator_config_rejects_crossed_watermarks():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="queue_low"):
        OperatorConfig(queue_low=5, queue_high=4)


def test_without_kubernetes_only_weights_move(world):
    cfg, servers, _controllers, admin, _kubeconfig, _log = world
    admin.set("lambda", "sdxl-turbo", outstanding=40)
    with RoutingClient(admin.url, KEY) as routing:
        decisions = Operator(cfg, routing, None, emit=lambda d: None).step()
    assert decisions and not [d for d in decisions if d.action == "scale"]
    assert [b for b in admin.puts if "weights" in b]
    assert not [c for s in servers.values() for c in s.calls if c.method == "PATCH"]


def test_an_unreadable_provider_holds_and_the_others_still_move(world):
    cfg, servers, _controllers, admin, kubeconfig, _log = world
    admin.set("lambda", "sdxl-turbo", outstanding=40)
    servers["lambda"].stop()  # lambda's API server is gone
    with RoutingClient(admin.url, KEY) as routing:
        decisions = Operator(
            cfg, routing, _clusters(cfg, kubeconfig), clock=lambda: 1000.0, emit=lambda d: None
        ).step()
    assert any(
        d.action == "hold" and d.provider == "lambda" and "cannot read" in d.reason
        for d in decisions
    )
    ups = [d for d in decisions if d.action == "scale" and d.after > d.before]
    assert [(d.model, d.provider) for d in ups] == [("sdxl-turbo", "azure")]  # next cheapest
