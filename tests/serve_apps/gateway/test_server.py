"""`easel gateway`: the gateway as its own command, N processes on one port, live changes in all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from easel.cli import main as easel
from tests._util import free_port, wait_for
from tests.serve_apps._configs import small_config

KEY = "server-test-admin"
ADMIN = {"Authorization": f"Bearer {KEY}"}
ALPHA = {"Authorization": "Bearer alpha-key"}


def test_a_config_without_upstream_addresses_is_refused_before_binding(capsys):
    # The embedded default config names no provider endpoints (the local modes fill them in).
    assert easel(["gateway", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "have no endpoint" in err and "providers[].endpoint" in err


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    from serve_apps.gateway.core import with_upstreams
    from simulators import start_vendors

    cfg = small_config()
    vendors = start_vendors(cfg.models)
    path = Path(tmp_path_factory.mktemp("gw")) / "gateway.yaml"
    path.write_text(with_upstreams(cfg, {}, {m: v.url for m, v in vendors.items()}).to_yaml())
    port = free_port()
    env = {**os.environ, "EASEL_ADMIN_KEY": KEY, "EASEL_TEST_ALPHA_KEY": "alpha-key",
           "EASEL_TEST_BETA_KEY": "beta-key"}  # fmt: skip
    cmd = [sys.executable, "-m", "easel.cli", "gateway", "--config", str(path)]
    proc = subprocess.Popen([*cmd, "--port", str(port), "--workers", "2"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, timeout=60)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for v in vendors.values():
            v.stop()


def _workers(proc: subprocess.Popen) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_two_processes_share_the_port_and_answer_for_each_other(gateway):
    url, proc = gateway
    assert len(_workers(proc)) == 2
    with httpx.Client(base_url=url, headers=ALPHA, timeout=30) as c:
        for _ in range(10):
            assert (
                c.post("/v1/generate", json={"model": "api-fast", "prompt": "x"}).status_code == 200
            )

        def both_counted() -> bool:
            view = c.get("/v1/admin/routing", headers=ADMIN).json()
            served = sum(r["requests"] for r in view["providers"] if r["model"] == "api-fast")
            return view["processes"] == 2 and served >= 10

        wait_for(both_counted, timeout=10, interval=0.2)  # snapshots are written every second
        text = c.get("/metrics", headers=ADMIN).text
        series = 'easel_gateway_requests_total{model="api-fast",status="200"}'
        ok = [line for line in text.splitlines() if line.startswith(series)]
        assert ok and float(ok[0].split()[-1]) >= 10


def test_a_drain_reaches_every_process(gateway):
    url, _ = gateway
    with httpx.Client(base_url=url, headers=ALPHA, timeout=30) as c:
        r = c.put("/v1/admin/routing", json={"drain": ["lambda-sim"], "model": "api-fast"},
                  headers=ADMIN)  # fmt: skip
        assert r.status_code == 200 and r.json()["version"] >= 1
        try:

            def everywhere() -> bool:
                seen = {c.post("/v1/generate", json={"model": "api-fast", "prompt": "x"})
                        .headers["x-easel-provider"] for _ in range(12)}  # fmt: skip
                return seen == {"runpod-sim"}

            wait_for(everywhere, timeout=10, interval=0.1)
        finally:
            c.put("/v1/admin/routing", json={"undrain": ["lambda-sim"]}, headers=ADMIN)


def test_sigterm_stops_every_process(gateway):
    url, proc = gateway
    workers = _workers(proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in workers), timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
