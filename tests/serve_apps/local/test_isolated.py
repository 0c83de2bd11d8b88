"""The isolated mode: each provider its own Ray cluster (own ports, temp folder, auth token).

Default run: one provider cluster with one tiny model, its app deployed by a driver of its own,
answering over HTTP, and gone (every process) when killed. `chaos`: two isolated providers of one
model behind the gateway at 4 req/s, one provider's processes killed mid-run: no request fails.
"""

from __future__ import annotations

import httpx
import pytest

from config import load_config, parse_config
from tests._util import set_env, wait_for


def _config(providers: list[str]):
    data = load_config().model_dump(mode="json")
    (turbo,) = [m for m in data["models"] if m["name"] == "sdxl-turbo"]
    turbo["providers"] = providers
    data["models"] = [turbo]
    data["traffic"]["model_mix"] = {}
    return parse_config(data, "<isolated test config>")


def test_an_isolated_provider_is_a_cluster_of_its_own(tmp_path):
    from serve_apps.local.providers import IsolatedProviders

    cfg = _config(["lambda-sim"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    providers = IsolatedProviders(cfg, path, num_cpus=2)
    try:
        endpoint = providers.start()["lambda-sim"]
        head = providers.heads["lambda-sim"]
        assert endpoint.startswith("http://127.0.0.1:") and endpoint != f"http://{head.address}"
        assert httpx.get(f"{endpoint}/readyz", timeout=30).status_code == 200
        r = httpx.post(
            f"{endpoint}/v1/generate", json={"model": "sdxl-turbo", "prompt": "a fox"}, timeout=60
        )
        assert r.status_code == 200 and r.headers["x-easel-provider"] == "lambda-sim"
        pids = providers.pids("lambda-sim")
        assert len(pids) >= 4  # GCS, raylet, Serve's controller and proxy, the replicas, ...
        assert set(providers.kill("lambda-sim")) == set(pids)
        wait_for(lambda: providers.pids("lambda-sim") == [], timeout=30)

        def refused() -> bool:
            try:
                httpx.get(f"{endpoint}/readyz", timeout=5)
            except httpx.ConnectError:
                return True
            return False

        wait_for(refused, timeout=30)
    finally:
        providers.stop()


@pytest.mark.chaos
def test_killing_an_isolated_provider_under_load_fails_no_request(record_property):
    from serve_apps.local.drill import failover_drill
    from serve_apps.local.stack import LocalStack

    key = "isolated-chaos-admin"
    cfg = _config(["lambda-sim", "runpod-sim"])
    with (
        set_env({"EASEL_ADMIN_KEY": key}),
        LocalStack(cfg, isolated=True, gateway_env={"EASEL_ADMIN_KEY": key}) as stack,
    ):
        result = failover_drill(
            stack.url, "sdxl-turbo", "runpod-sim", lambda: stack.kill_provider("runpod-sim"),
            admin_key=key, rate=4.0, kill_after_s=10.0, after_s=15.0,
        )  # fmt: skip
    for key_, value in result.to_dict().items():
        record_property(key_, value)
    print(f"\n{result}")
    assert result.killed_pids > 0
    assert result.failed == 0, result.errors
    assert result.detected_s is not None and result.detected_s < 2.0
    assert result.served_after_by.get("runpod-sim", 0) <= 2  # only what raced the kill
