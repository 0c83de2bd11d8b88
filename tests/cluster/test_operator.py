"""`easel operator`: the policy (pure), and the loop's calls against the simulated Kubernetes API
and a fake admin route."""

from __future__ import annotations

import json

import pytest

from cluster.kuberay import render
from cluster.operator import Operator, ProviderState, decide
from cluster.routing_client import RoutingClient
from cluster.scaling import Scaler, custom_objects_api
from cluster.simulated_k8s import SimulatedKubeApi
from config import OperatorConfig, load_config
from tests.cluster.fake_admin import KEY, FakeAdmin

CFG = OperatorConfig(queue_high=4, queue_low=0.5, max_error_rate=0.05, min_requests=10,
                     cooldown_s=60, scale_step=1)  # fmt: skip
PRICES = {"lambda-sim": 1.79, "runpod-sim": 1.64, "azure-sim": 4.10}


def _state(provider: str, **kw: object) -> ProviderState:
    base = dict(provider=provider, price_per_gpu_hour=PRICES[provider], low=0, high=8,
                replicas=1, weight=1.0, healthy=True, drained=False, outstanding=1,
                window_requests=0, window_errors=0, seconds_since_scaled=1e9,
                models=("m",))  # fmt: skip
    base.update(kw)
    return ProviderState(**base)  # type: ignore[arg-type]


def _three(changes: dict[str, dict] | None = None) -> list[ProviderState]:
    return [_state(p, **(changes or {}).get(p, {})) for p in PRICES]


def _by(plan, action):
    return {d.provider: d for d in plan.decisions if d.action == action}


def test_weights_follow_price_and_replicas():
    plan = decide(_three(), CFG)
    w = plan.weights
    assert w is not None and abs(sum(w.values()) - 1) < 0.01
    assert w["runpod-sim"] > w["lambda-sim"] > w["azure-sim"] > 0
    assert w["azure-sim"] == pytest.approx(w["runpod-sim"] * 1.64 / 4.10, abs=0.01)
    assert not _by(plan, "scale")
    # Already at those weights: nothing to send.
    settled = [_state(p, weight=w[p]) for p in PRICES]
    assert decide(settled, CFG).weights is None


def test_erroring_provider_loses_weight_and_capacity():
    states = _three({"azure-sim": dict(replicas=2, window_requests=40, window_errors=12)})
    plan = decide(states, CFG)
    scales = _by(plan, "scale")
    assert (scales["azure-sim"].before, scales["azure-sim"].after) == (2, 1)
    assert "error rate 30% (12/40) > 5%" in scales["azure-sim"].reason
    assert (scales["runpod-sim"].before, scales["runpod-sim"].after) == (1, 2)
    assert "taking capacity from azure-sim" in scales["runpod-sim"].reason
    assert plan.weights["azure-sim"] == 0
    assert "no new traffic" in _by(plan, "weight")["azure-sim"].reason


def test_few_requests_are_not_judged_and_unhealthy_is():
    plan = decide(_three({"azure-sim": dict(window_requests=4, window_errors=3)}), CFG)
    assert plan.weights["azure-sim"] > 0
    unhealthy = [_state(p, healthy=p != "lambda-sim") for p in PRICES]
    plan = decide(unhealthy, CFG)
    assert plan.weights["lambda-sim"] == 0
    assert _by(plan, "weight")["lambda-sim"].reason.startswith("unhealthy")


def test_queue_high_adds_at_cheapest_with_headroom_and_cooldown():
    plan = decide(_three({"runpod-sim": dict(outstanding=20)}), CFG)
    (up,) = _by(plan, "scale").values()
    assert (up.provider, up.before, up.after) == ("runpod-sim", 1, 2)
    assert "queue 7.3/replica > 4" in up.reason
    # runpod at its bound, lambda just scaled: the next cheapest, azure, grows.
    states = _three({"runpod-sim": dict(outstanding=60, replicas=8, high=8),
                     "lambda-sim": dict(seconds_since_scaled=5)})  # fmt: skip
    (up,) = _by(decide(states, CFG), "scale").values()
    assert up.provider == "azure-sim"
    # Nobody has headroom: a reasoned hold, no scaling.
    full = [_state(p, replicas=1, high=1, outstanding=20) for p in PRICES]
    plan = decide(full, CFG)
    assert not _by(plan, "scale") and "no provider has headroom" in plan.decisions[0].reason


def test_queue_low_removes_from_most_expensive_but_keeps_last_hosts():
    states = [_state(p, outstanding=0, replicas=2, models=("m",)) for p in PRICES]
    (down,) = _by(decide(states, CFG), "scale").values()
    assert (down.provider, down.after) == ("azure-sim", 1)
    # azure is the only host of 'closed': it keeps its last replica; lambda goes down instead.
    states = [_state(p, outstanding=0, replicas=1, models=("m", "closed") if p == "azure-sim"
                     else ("m",)) for p in PRICES]  # fmt: skip
    (down,) = _by(decide(states, CFG), "scale").values()
    assert (down.provider, down.after) == ("lambda-sim", 0)


def test_unhealthy_alone_moves_weight_not_capacity():
    """Pods still starting (or scaled to 0) look unhealthy: no capacity is taken from them, and
    an idle provider at 0 replicas is the first to grow when it is the cheapest."""
    starting = _three({"azure-sim": dict(healthy=False, replicas=2)})
    plan = decide(starting, CFG)
    assert not _by(plan, "scale") and plan.weights["azure-sim"] == 0
    idle = _three({"runpod-sim": dict(healthy=False, replicas=0),
                   "lambda-sim": dict(outstanding=20)})  # fmt: skip
    (up,) = _by(decide(idle, CFG), "scale").values()
    assert (up.provider, up.before, up.after) == ("runpod-sim", 0, 1)
    # A provider that is unhealthy with replicas is passed over for one that is healthy.
    broken = _three({"runpod-sim": dict(healthy=False), "lambda-sim": dict(outstanding=20)})
    (up,) = _by(decide(broken, CFG), "scale").values()
    assert up.provider == "lambda-sim"


def test_bounds_and_drained_providers():
    states = [_state("lambda-sim", replicas=9, high=8), _state("runpod-sim", low=2, replicas=1),
              _state("azure-sim", drained=True, weight=5.0)]  # fmt: skip
    plan = decide(states, CFG)
    scales = _by(plan, "scale")
    assert scales["lambda-sim"].after == 8 and scales["runpod-sim"].after == 2
    assert "azure-sim" not in plan.weights  # a drain stays the cluster operator's call


# --- the loop against the simulated Kubernetes API and a fake admin route ---------------------


@pytest.fixture
def world(tmp_path):
    cfg = load_config()
    rayservice = render(cfg)["rayservice.yaml"]
    with SimulatedKubeApi([rayservice]) as kube, FakeAdmin(list(PRICES)) as admin:
        kubeconfig = str(kube.write_kubeconfig(tmp_path / "kubeconfig"))
        yield cfg, kube, admin, kubeconfig


def _replicas(kube) -> dict[str, int]:
    obj = kube.get("rayservices", "easel", "easel-default")
    return {
        g["groupName"]: g["replicas"] for g in obj["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    }


def test_operator_step_makes_the_expected_calls(world):
    cfg, kube, admin, kubeconfig = world
    now = [1000.0]
    logged = []
    scaler = Scaler(custom_objects_api(kubeconfig), "easel", "easel-default")
    with RoutingClient(admin.url, KEY) as routing:
        op = Operator(cfg, routing, scaler, clock=lambda: now[0], emit=logged.append)
        admin.set("azure-sim", requests=50, errors=20)
        admin.set("lambda-sim", outstanding=3)  # 3 per 3 healthy replicas: queue in band
        kube.calls.clear()
        decisions = op.step()
    assert _replicas(kube) == {"lambda-sim": 1, "runpod-sim": 2, "azure-sim": 0}
    patches = [c for c in kube.calls if c.method == "PATCH"]
    assert [p.body[-1]["path"].split("/")[-2:] for p in patches] == [
        ["2", "replicas"],
        ["1", "replicas"],
    ]
    assert [p.body[-1]["value"] for p in patches] == [0, 2]
    (put,) = admin.puts
    assert put["weights"]["azure-sim"] == 0 and put["weights"]["runpod-sim"] > 0
    assert logged == decisions and all(d.reason for d in decisions)
    # Within the cooldown the same errors move nothing more.
    now[0] += 5
    kube.calls.clear()
    with RoutingClient(admin.url, KEY) as routing:
        op.routing = routing
        op.step()
    assert not [c for c in kube.calls if c.method == "PATCH"]


def test_dry_run_changes_nothing(world):
    cfg, kube, admin, kubeconfig = world
    admin.set("runpod-sim", outstanding=40)
    scaler = Scaler(custom_objects_api(kubeconfig), "easel", "easel-default")
    with RoutingClient(admin.url, KEY) as routing:
        decisions = Operator(cfg, routing, scaler, dry_run=True, emit=lambda d: None).step()
    assert any(d.action == "scale" for d in decisions)
    assert not [c for c in kube.calls if c.method == "PATCH"] and not admin.puts


def test_operator_cli_logs_json_decisions(world, monkeypatch, capsys):
    from easel.cli import main

    _, kube, admin, kubeconfig = world
    monkeypatch.setenv("EASEL_ADMIN_KEY", KEY)
    admin.set("runpod-sim", outstanding=40)
    argv = ["operator", "--url", admin.url, "--kubeconfig", kubeconfig, "--iterations", "1"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    scale = [x for x in lines if x["action"] == "scale"]
    assert scale == [dict(scale[0], provider="runpod-sim", before=1, after=2)]
    assert _replicas(kube)["runpod-sim"] == 2
    assert main([*argv[:-2], "--iterations", "0"]) == 2


def test_operator_config_rejects_crossed_watermarks():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="queue_low"):
        OperatorConfig(queue_low=5, queue_high=4)
