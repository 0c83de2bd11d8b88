"""Router policies, health, failover order, drains and live updates (plain Python, no Ray).

The node-removal failover drill on a real multi-node Ray (`ray.cluster_utils.Cluster`) is at the
end, marked `chaos`.
"""

from __future__ import annotations

import collections

import pytest

from config import load_config
from serve_apps.routing import Route, Router, routes_from_config


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _router(policy: str = "least_outstanding", **kw) -> tuple[Router, _Clock]:
    clock = _Clock()
    routes = [
        Route("m", "a", weight=1.0, cost=4.0),
        Route("m", "b", weight=1.0, cost=1.6),
        Route("m", "c", weight=1.0, cost=1.8),
        Route("other", "a"),
    ]
    kw.setdefault("unhealthy_after_errors", 2)
    kw.setdefault("recheck_after_s", 5.0)
    return Router(routes, policy=policy, clock=clock, **kw), clock


def test_least_outstanding_spreads_load():
    r, _ = _router()
    picks = [r.choose("m") for _ in range(6)]
    assert collections.Counter(picks) == {"a": 2, "b": 2, "c": 2}
    r.finish("m", "a", "ok", 10)
    r.finish("m", "a", "ok", 10)
    assert r.choose("m") == "a"  # now the least loaded


def test_cheapest_healthy_prefers_price_then_skips_unhealthy():
    r, _ = _router("cheapest_healthy")
    assert r.choose("m") == "b"
    r.finish("m", "b", "error")
    assert r.choose("m") == "b"
    r.finish("m", "b", "error")  # second error in a row: unhealthy
    assert r.choose("m") == "c"


def test_weighted_follows_weights_and_zero_means_none():
    r, _ = _router("weighted", seed=7)
    r.update(weights={"a": 3.0, "b": 1.0, "c": 0.0}, model="m")
    picks = collections.Counter(r.choose("m") for _ in range(4000))
    assert picks["c"] == 0
    assert 2.6 < picks["a"] / picks["b"] < 3.4


def test_failover_order_excludes_tried_and_ends_with_none():
    r, _ = _router("cheapest_healthy")
    first = r.choose("m")
    second = r.choose("m", exclude=[first])
    third = r.choose("m", exclude=[first, second])
    assert [first, second, third] == ["b", "c", "a"]
    assert r.choose("m", exclude=["a", "b", "c"]) is None


def test_unhealthy_provider_gets_one_probe_after_recheck():
    r, clock = _router("cheapest_healthy")
    for p in ("a", "b", "c"):
        for _ in range(2):
            assert r.choose("m", exclude=[q for q in "abc" if q != p]) == p
            r.finish("m", p, "error")
    assert r.choose("m") is None
    assert r.retry_after("m") == pytest.approx(5.0)
    clock.now += 5.0
    probe = r.choose("m")
    assert probe is not None
    assert r.choose("m") in {q for q in "abc" if q != probe}  # one probe each, never two
    r.finish("m", probe, "ok", 12.0)
    assert r.view()["providers"][["a", "b", "c"].index(probe)]["healthy"] is True


def test_failed_probe_stays_unhealthy():
    r, clock = _router()
    r.update(drain=["b", "c"], model="m")
    for _ in range(2):
        assert r.choose("m") == "a"
        r.finish("m", "a", "timeout")
    assert r.choose("m") is None
    clock.now += 6
    assert r.choose("m") == "a"
    r.finish("m", "a", "error")
    assert r.choose("m") is None


def test_shed_and_client_errors_do_not_mark_unhealthy():
    r, _ = _router(unhealthy_after_errors=1)
    for outcome in ("shed", "client_error"):
        p = r.choose("m")
        r.finish("m", p, outcome)
    assert all(row["healthy"] for row in r.view()["providers"])
    assert sum(row["shed"] for row in r.view()["providers"]) == 1
    assert sum(row["errors"] for row in r.view()["providers"]) == 0


def test_drain_moves_new_traffic_and_undrain_restores():
    r, _ = _router()
    r.update(drain=["a", "b"], model="m")
    assert {r.choose("m") for _ in range(5)} == {"c"}
    assert r.choose("other") == "a"  # the drain was limited to model m
    r.update(undrain=["a"])
    assert "a" in {r.choose("m") for _ in range(10)}


def test_deployment_down_is_skipped_at_once_unless_nothing_else_is_left():
    r, _ = _router()
    r.set_deployment_up({("m", "a"): False, ("m", "b"): False})
    assert {r.choose("m") for _ in range(3)} == {"c"}
    assert not r.is_up("m", "a")
    assert r.should_abandon("m", "a", tried=["a"])  # c has a running replica
    assert not r.should_abandon("m", "a", tried=["a", "c"])
    assert not r.should_abandon("m", "c", tried=["c"])
    # Everything else tried: wait for a replacement replica rather than fail.
    assert r.choose("m", exclude=["c"]) in {"a", "b"}
    row = next(x for x in r.view()["providers"] if x["provider"] == "a" and x["model"] == "m")
    assert row["healthy"] is False and row["deployment_up"] is False


def test_view_counts_and_p95():
    r, _ = _router()
    r.update(drain=["b", "c"], model="m")
    for i in range(1, 101):
        assert r.choose("m") == "a"
        r.finish("m", "a", "ok", float(i))
    row = r.view()["providers"][0]
    assert row == {
        "model": "m",
        "provider": "a",
        "weight": 1.0,
        "drained": False,
        "healthy": True,
        "outstanding": 0,
        "p95_ms": 95.0,
        "requests": 100,
        "errors": 0,
        "shed": 0,
        "deployment_up": True,
    }
    assert r.view()["providers"][1]["p95_ms"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"policy": "round_robin"}, "unknown 'round_robin'"),
        ({"policy": "weighted", "model": "m"}, "policy applies to every model"),
        ({"weights": {"zz": 1.0}}, "['zz']"),
        ({"weights": {"a": -1.0}}, ">= 0"),
        ({"drain": ["a"], "undrain": ["a"]}, "both drain and undrain"),
        ({"drain": ["b"], "model": "other"}, "do not serve model 'other'"),
    ],
)
def test_update_rejects_bad_input_without_changing_anything(body, needle):
    r, _ = _router()
    before = r.view()
    with pytest.raises(ValueError) as info:
        r.update(**body)
    assert needle in str(info.value)
    assert r.view() == before


def test_update_unknown_model_is_lookup_error():
    r, _ = _router()
    with pytest.raises(LookupError, match="unknown model"):
        r.update(drain=["a"], model="nope")


def test_routes_from_default_config_cover_every_model_provider():
    cfg = load_config()
    routes = routes_from_config(cfg)
    assert {(x.model, x.provider) for x in routes} == {
        (m.name, p) for m in cfg.models for p in m.providers
    }
    by = {(x.model, x.provider): x for x in routes}
    # GPU models cost the provider's hourly price, API models their price per image.
    assert by[("flux2-dev", "azure-sim")].cost > by[("flux2-dev", "lambda-sim")].cost
    assert by[("proprietary-a", "azure-sim")].cost == pytest.approx(0.04)


# --- failover when a provider's node is lost (real multi-node Ray) ---------------------------


@pytest.mark.chaos
def test_node_removal_fails_over_with_no_failed_request():
    """A head node plus one node per provider; the lambda-sim node is removed mid-burst."""
    import asyncio
    import os

    import httpx
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from config import parse_config
    from serve_apps.app import run_app
    from serve_apps.simulated_vendor import ensure_simulated_vendor
    from tests._util import free_port, wait_for
    from tests.serve_apps._configs import api_model

    data = load_config().model_dump(mode="json")
    # CPU-free replicas on CPU-free provider nodes: only the ingress, the router and the
    # simulated vendor can go to the head, so removing a provider node kills model replicas only.
    data["models"] = [api_model("api-mid", 1500, 1800, num_cpus=0)]
    data["traffic"]["model_mix"] = {}
    data["routing"] = {"policy": "least_outstanding", "request_timeout_s": 30}
    data["serve"] = {"ingress_num_cpus": 0.1}
    cfg = parse_config(data, "<chaos config>")
    os.environ["EASEL_ADMIN_KEY"] = "chaos-admin"
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    nodes = {
        p: cluster.add_node(num_cpus=0, resources={f"provider:{p}": 10})
        for p in ("lambda-sim", "runpod-sim")
    }
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        ensure_simulated_vendor(cfg.model("api-mid"))  # on the head: it outlives both nodes
        port = free_port()
        # Every node of this Cluster shares one IP: proxies on the provider nodes would share
        # the port, and connections to a removed node's proxy would drop. Real nodes have
        # their own IPs; here the one proxy is the head's.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        url = run_app(cfg, host="127.0.0.1", port=port)

        async def burst(n: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                return await asyncio.gather(
                    *(
                        c.post("/v1/generate", json={"model": "api-mid", "prompt": f"p{i}"})
                        for i in range(n)
                    )
                )

        admin = {"Authorization": "Bearer chaos-admin"}

        def outstanding() -> int:
            view = httpx.get(f"{url}/v1/admin/routing", headers=admin, timeout=10).json()
            return sum(x["outstanding"] for x in view["providers"])

        async def drill() -> list[httpx.Response]:
            task = asyncio.ensure_future(burst(8))
            await asyncio.to_thread(wait_for, lambda: outstanding() >= 8, 30)
            await asyncio.to_thread(cluster.remove_node, nodes["lambda-sim"])
            return await task

        responses = asyncio.run(drill())
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
        moved = [r for r in responses if r.headers["x-easel-attempts"] == "2"]
        assert moved and {r.headers["x-easel-provider"] for r in moved} == {"runpod-sim"}
        # New traffic goes to the surviving provider only.
        after = asyncio.run(burst(4))
        assert {r.headers["x-easel-provider"] for r in after} == {"runpod-sim"}
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop("EASEL_ADMIN_KEY", None)
