"""`easel operator`: the loop against simulated provider clusters (the simulated Kubernetes API
and KubeRay controller, one per provider's kube context) and a fake gateway admin route."""

from __future__ import annotations

import json

import pytest
import yaml

from cluster.kuberay import render
from cluster.operator import Operator
from cluster.routing_client import RoutingClient
from cluster.scaling import ProviderCluster, custom_objects_api
from config import OperatorConfig, load_config, shipped_config_path
from tests.cluster.fake_admin import KEY, FakeAdmin
from tests.cluster.simulated_k8s import SimulatedKubeApi
from tests.cluster.simulated_kuberay import SimulatedKubeRay

PRICES = {"lambda": 1.79, "aws": 5.12, "azure": 4.10}
PROD = shipped_config_path("production.example.yaml")
MODELS = ("flux2-dev", "flux2-schnell", "sdxl-lightning", "sdxl-turbo")


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
    apps = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    (d,) = [
        d for a in apps for d in a.get("deployments", []) if d["name"] == f"{model}--{provider}"
    ]
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
