"""The admin routing client and `easel route ...`, against a fake admin route over real HTTP.

The same client runs against the real serving app in tests/cluster/test_local.py.
"""

from __future__ import annotations

import json

import pytest

from cluster.routing_client import RoutingClient, RoutingError, format_view
from tests._util import free_port
from tests.cluster.fake_admin import KEY, FakeAdmin

PROVIDERS = ["lambda-sim", "runpod-sim", "azure-sim"]


@pytest.fixture(scope="module")
def admin():
    with FakeAdmin(PROVIDERS, models=("sdxl-turbo", "flux2-dev")) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(admin):
    for p in PROVIDERS:
        admin.set(p, weight=1.0, drained=False, healthy=True, outstanding=0, requests=0, errors=0)
    admin.puts.clear()


def test_show_parses_the_view(admin):
    admin.set("azure-sim", healthy=False, outstanding=3, p95_ms=812.5, requests=10, errors=4)
    with RoutingClient(admin.url, KEY) as client:
        view = client.show()
    assert view.policy == "weighted" and len(view.routes) == 6
    azure = view.by_provider()["azure-sim"]
    assert (azure.healthy, azure.outstanding, azure.requests, azure.errors) == (False, 6, 20, 8)
    assert azure.p95_ms == 812.5 and set(azure.models) == {"sdxl-turbo", "flux2-dev"}
    text = format_view(view)
    assert "UNHEALTHY" in text and "812" in text


def test_update_sends_only_what_changes(admin):
    with RoutingClient(admin.url, KEY) as client:
        view = client.update(weights={"lambda-sim": 3}, model="flux2-dev")
        assert admin.puts[-1] == {"weights": {"lambda-sim": 3}, "model": "flux2-dev"}
        weights = {(r.model, r.provider): r.weight for r in view.routes}
        assert weights[("flux2-dev", "lambda-sim")] == 3
        assert weights[("sdxl-turbo", "lambda-sim")] == 1
        client.update(drain=["runpod-sim"])
        assert client.show().by_provider()["runpod-sim"].drained
        client.update(undrain=["runpod-sim"], policy="least_outstanding")
        assert admin.puts[-1] == {"policy": "least_outstanding", "undrain": ["runpod-sim"]}
        with pytest.raises(RoutingError, match="nothing to change"):
            client.update()
        with pytest.raises(RoutingError, match="weights must be >= 0"):
            client.update(weights={"lambda-sim": -1})
        with pytest.raises(RoutingError, match="404: not_found: unknown providers"):
            client.update(drain=["gcp"])


def test_auth_and_reachability_errors(admin):
    with (
        RoutingClient(admin.url, "wrong") as client,
        pytest.raises(RoutingError, match="refused the admin key"),
    ):
        client.show()
    with (
        RoutingClient(f"http://127.0.0.1:{free_port()}", KEY) as client,
        pytest.raises(RoutingError, match="cannot reach"),
    ):
        client.show()
    with pytest.raises(RoutingError, match="must start with http"):
        RoutingClient("127.0.0.1:8000", KEY)


def test_wait_drained_waits_for_in_flight(admin):
    admin.set("lambda-sim", outstanding=2)
    with RoutingClient(admin.url, KEY) as client:
        with pytest.raises(RoutingError, match="still in flight"):
            client.wait_drained(["lambda-sim"], timeout=0.3, interval=0.05)
        admin.set("lambda-sim", outstanding=0)
        client.wait_drained(["lambda-sim"], timeout=5, interval=0.05)


def test_route_cli(admin, monkeypatch, capsys):
    from easel.cli import main

    monkeypatch.setenv("EASEL_ADMIN_KEY", KEY)
    url = ["--url", admin.url]
    assert main(["route", "set", *url, "--weight", "lambda-sim=2", "--weight", "azure-sim=0"]) == 0
    assert admin.puts[-1] == {"weights": {"lambda-sim": 2.0, "azure-sim": 0.0}}
    assert main(["route", "drain", *url, "azure-sim", "--wait", "--timeout", "5"]) == 0
    assert admin.puts[-1] == {"drain": ["azure-sim"]}
    assert main(["route", "undrain", *url, "azure-sim"]) == 0
    capsys.readouterr()
    assert main(["route", "show", *url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    rows = {(r["model"], r["provider"]): r for r in shown["providers"]}
    assert rows[("sdxl-turbo", "lambda-sim")]["weight"] == 2.0
    assert not rows[("sdxl-turbo", "azure-sim")]["drained"]
    assert main(["route", "set", *url, "--weight", "lambda-sim"]) == 2
    monkeypatch.delenv("EASEL_ADMIN_KEY")
    assert main(["route", "show", *url]) == 1
    assert "refused the admin key" in capsys.readouterr().err
