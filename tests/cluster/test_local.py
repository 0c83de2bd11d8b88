"""A real three-provider Ray cluster on this machine (`LocalCluster`), with the real serving app
on it, driven over HTTP: requests land where the routing policy says, a drain under load fails
no request, and (chaos) losing a provider's node under load loses no request after retries.

One cluster per module: a head plus one node per provider, each with `provider:<name>`; the app
serves only SDXL-Turbo (tiny, one step) on all three providers to keep it fast.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from itertools import count

import httpx
import pytest

from cluster.local import LocalCluster
from cluster.routing_client import RoutingClient
from config import load_config, parse_config
from tests._util import free_port, wait_for

PROVIDERS = ["lambda-sim", "runpod-sim", "azure-sim"]
MODEL = "sdxl-turbo"
KEY = "local-cluster-test-key"


def _small_config(port: int):
    data = load_config().model_dump(mode="json")
    (turbo,) = [m for m in data["models"] if m["name"] == MODEL]
    turbo["providers"] = list(PROVIDERS)
    turbo["autoscaling"] = {"min_replicas": 1, "max_replicas": 1}
    data["models"] = [turbo]
    data["traffic"]["model_mix"] = {}
    data["routing"].update(policy="least_outstanding", request_timeout_s=60)
    data["serve"].update(port=port, admin_key_env="EASEL_ADMIN_KEY")
    return parse_config(data, "<test_local small config>")


def test_cluster_up_and_down_cli(tmp_path, capsys):
    """`easel cluster up --local` leaves a cluster a driver can join; `down` stops all of it.

    Runs before the module's app cluster starts (tests run in file order).
    """
    import json
    import subprocess
    import sys

    from cluster.local import read_state, running
    from easel.cli import main

    config = tmp_path / "one-provider.yaml"
    data = load_config().model_dump(mode="json")
    data["providers"] = data["providers"][:1]
    for m in data["models"]:
        m["providers"] = [data["providers"][0]["name"]]
    config.write_text(json.dumps(data))
    state = tmp_path / "local-cluster.json"
    argv = ["--state", str(state)]
    assert main(["cluster", "up", "--local", "--config", str(config), *argv]) == 0
    try:
        recorded = read_state(state)
        assert recorded and recorded["providers"] == ["lambda-sim"]
        assert main(["cluster", "status", *argv]) == 0
        probe = (
            f"import json, ray; ray.init(address={recorded['address']!r}, log_to_driver=False); "
            "print(json.dumps(ray.cluster_resources()))"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120, check=True).stdout  # fmt: skip
        assert json.loads(out.strip().splitlines()[-1])["provider:lambda-sim"] == 100
        assert main(["cluster", "up", "--local", "--config", str(config), *argv]) == 1
        assert "already running" in capsys.readouterr().err
    finally:
        assert main(["cluster", "down", *argv]) == 0
    assert not state.exists()
    assert main(["cluster", "status", *argv]) == 1
    assert not running(recorded)


@pytest.fixture(scope="module")
def app():
    """(url, cluster): the app deployed on a fresh three-provider local cluster."""
    import ray

    from serve_apps.app import run_app

    if ray.is_initialized():
        ray.shutdown()
    old_key = os.environ.get("EASEL_ADMIN_KEY")
    os.environ["EASEL_ADMIN_KEY"] = KEY  # read by the ingress replicas, started below
    cluster = LocalCluster(PROVIDERS, head_cpus=1, node_cpus=2).start()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cfg = _small_config(free_port())
        url = run_app(cfg, host="127.0.0.1")
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout=180)
        yield url, cluster
    finally:
        # Killing the cluster takes Serve and every replica with it; serve.shutdown() would
        # wait out each replica's graceful-shutdown timeout first.
        ray.shutdown()
        cluster.shutdown()
        if old_key is None:
            os.environ.pop("EASEL_ADMIN_KEY", None)
        else:
            os.environ["EASEL_ADMIN_KEY"] = old_key


@pytest.fixture
def routing(app):
    url, _ = app
    with RoutingClient(url, KEY, timeout=30) as client:
        client.update(policy="least_outstanding", weights=dict.fromkeys(PROVIDERS, 1.0),
                      undrain=PROVIDERS)  # fmt: skip
        yield client


_seeds = count()


@dataclass
class Result:
    sent: float
    done: float
    status: int
    provider: str | None
    attempts: int


def _generate(client: httpx.Client, retries: int = 5) -> Result:
    """One image; retries 503/504 after Retry-After like a well-behaved client. Never raises."""
    sent = time.monotonic()
    status, provider, attempts = 0, None, 0
    while attempts <= retries:
        attempts += 1
        wait = 1.0
        try:
            r = client.post("/v1/generate", json={"model": MODEL, "prompt": "a red cube",
                                                  "steps": 1, "seed": next(_seeds)})  # fmt: skip
            status, provider = r.status_code, r.headers.get("X-Easel-Provider")
            wait = float(r.headers.get("Retry-After", 1))
        except httpx.HTTPError:
            status = 0
        if status not in (0, 503, 504):
            break
        if attempts <= retries:
            time.sleep(min(wait, 2))
    return Result(sent, time.monotonic(), status, provider, attempts)


class Load:
    """`workers` closed-loop clients sending until stopped; every result kept."""

    def __init__(self, url: str, workers: int = 3) -> None:
        self.url = url
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=90) as client:
            while not self._stop.is_set():
                result = _generate(client)
                with self._lock:
                    self.results.append(result)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)


def test_requests_land_on_the_provider_the_policy_picks(app, routing):
    url, _ = app
    with httpx.Client(base_url=url, timeout=60) as client:
        for only in ("azure-sim", "lambda-sim"):
            weights = {p: 1.0 if p == only else 0.0 for p in PROVIDERS}
            routing.update(policy="weighted", weights=weights)
            providers = {_generate(client, retries=0).provider for _ in range(4)}
            assert providers == {only}
        routing.update(policy="cheapest_healthy", weights=dict.fromkeys(PROVIDERS, 1.0))
        cheapest = min(load_config().providers, key=lambda p: p.price_per_gpu_hour).name
        assert {_generate(client, retries=0).provider for _ in range(4)} == {cheapest}
    view = routing.show().by_provider()
    assert all(view[p].requests >= 4 for p in ("azure-sim", "lambda-sim", cheapest))


def test_drain_under_load_fails_no_request(app, routing):
    url, _ = app
    drained = "lambda-sim"
    with Load(url, workers=3) as load:
        wait_for(lambda: load.count() >= 6, timeout=120)
        before = routing.show().by_provider()[drained].requests
        routing.update(drain=[drained])
        drained_at = time.monotonic()
        routing.wait_drained([drained], timeout=60)
        sent_at_drain = load.count()
        wait_for(lambda: load.count() >= sent_at_drain + 6, timeout=120)
    results = load.results
    assert results and all(r.status == 200 and r.attempts == 1 for r in results), [
        (r.status, r.provider, r.attempts) for r in results if r.status != 200 or r.attempts > 1
    ]
    assert before > 0  # the drained provider was serving before the drain
    late = [r for r in results if r.sent > drained_at]
    assert late and all(r.provider != drained for r in late)
    after = routing.show().by_provider()[drained]
    assert after.drained and after.outstanding == 0


@pytest.mark.chaos
def test_node_removal_under_load_loses_no_request(app, routing, record_property):
    import ray

    url, cluster = app
    # The ingress replica may sit on any node; take away a provider node it does not use, so
    # the drill measures provider failover, not the loss of the HTTP entry point.
    ingress_nodes = {
        a["Address"]["NodeID"]
        for a in ray._private.state.actors().values()
        if a["State"] == "ALIVE" and "EaselIngress" in (a.get("Name") or "")
    }
    victim = next(p for p, n in cluster.node_ids().items() if n not in ingress_nodes)
    with Load(url, workers=3) as load:
        wait_for(lambda: load.count() >= 9, timeout=120)
        removed_at = time.monotonic()
        cluster.remove_provider(victim)
        wait_for(lambda: not routing.show().by_provider()[victim].healthy, timeout=120)
        detected_s = time.monotonic() - removed_at
        sent_after = load.count()
        wait_for(lambda: load.count() >= sent_after + 9, timeout=180)
    results = load.results
    lost = [r for r in results if r.status != 200]
    assert not lost, [(r.status, r.attempts) for r in lost]
    before = [r.done - r.sent for r in results if r.done < removed_at]
    baseline = statistics.quantiles(before, n=20)[-1] if len(before) >= 2 else max(before)
    slowed = [r for r in results if r.done >= removed_at and r.done - r.sent > 3 * baseline]
    recovery_s = max((r.done for r in slowed), default=removed_at) - removed_at
    retried = sum(r.attempts > 1 for r in results)
    late = [r for r in results if r.sent > removed_at + detected_s]
    assert late and all(r.provider != victim for r in late)
    record_property("recovery_s", round(recovery_s, 2))
    record_property("detected_s", round(detected_s, 2))
    print(
        f"\nnode removal of {victim}: {len(results)} requests, 0 lost, {retried} retried by the "
        f"client; unhealthy in the routing view after {detected_s:.1f}s; recovery (last request "
        f"slowed beyond 3x the pre-removal p95 of {baseline:.2f}s done) {recovery_s:.1f}s"
    )
