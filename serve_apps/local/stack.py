"""A whole local federation: simulated vendors, provider clusters and the gateway in front.

`LocalStack(cfg).start()` is what `easel serve`, `easel cluster up --local` and `easel bench` run:

1. one SIMULATED vendor process per closed model with `api.simulated` (`simulators`);
2. the providers (`providers.py`): Serve apps of one Ray by default, or one Ray cluster each
   with `isolated=True`;
3. the gateway (`python -m serve_apps.gateway.server`, its own process, on a socket bound here so
   its port is known before it starts), with a config whose provider endpoints and vendor base
   URLs are the ones just started (written to the stack's state folder);

and returns once the gateway answers `/readyz`. The same code path serves production, where the
config names the endpoints and only the gateway is started. `stop()` ends it all, gateway first.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from cluster.local import pid_alive
from config import EaselConfig
from serve_apps.gateway.core import with_upstreams
from serve_apps.gateway.server import bind
from serve_apps.local.providers import IsolatedProviders, SharedRayProviders, status_of
from simulators import SimulatedVendorProcess, start_vendors

__all__ = ["LocalStack"]

_log = logging.getLogger(__name__)


class LocalStack:
    """Vendors, providers and the gateway of `cfg`, on this machine.

    Args:
        cfg: The config.
        isolated: One Ray cluster per provider instead of one Ray for all.
        host, port: Where the gateway binds (port 0: a free port).
        workers: Gateway processes.
        address: A Ray to join for the providers (default mode only).
        state_dir: Where the stack keeps its files (default: a new temp folder, removed by stop).
        gateway_env: Extra environment for the gateway process (e.g. the admin key).
        app_prefix: Default mode: put before the provider apps' names and routes, so that two
            stacks can share one Ray (a benchmark comparing two configs does).
    """

    def __init__(
        self,
        cfg: EaselConfig,
        *,
        isolated: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 1,
        address: str | None = None,
        state_dir: str | Path | None = None,
        gateway_env: dict[str, str] | None = None,
        app_prefix: str = "",
    ) -> None:
        if isolated and address:
            raise ValueError("--isolated starts its own clusters; it does not join --address")
        self.cfg = cfg
        self.isolated = isolated
        self.host, self.port, self.workers = host, port, workers
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="easel-local-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.gateway_env = dict(gateway_env or {})
        self.vendors: dict[str, SimulatedVendorProcess] = {}
        self.providers: SharedRayProviders | IsolatedProviders
        if isolated:
            config_path = self.state_dir / "config.yaml"
            config_path.write_text(cfg.to_yaml())
            self.providers = IsolatedProviders(cfg, config_path)
        else:
            self.providers = SharedRayProviders(cfg, address=address, prefix=app_prefix)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.gateway_cfg: EaselConfig | None = None

    def start(self, timeout_s: float = 600) -> LocalStack:
        """Start everything; returns once the gateway is ready. Stops what it started on failure."""
        started = time.monotonic()
        try:
            # The vendors (processes of their own) start while the providers deploy: neither
            # needs the other, and the replicas' loading dominates.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-vendors") as pool:
                vendors = pool.submit(start_vendors, self.cfg.models)
                try:
                    endpoints = self.providers.start()
                except BaseException:
                    with contextlib.suppress(Exception):  # to stop them; the providers' error wins
                        self.vendors = vendors.result()
                    raise
                self.vendors = vendors.result()
            self.gateway_cfg = with_upstreams(
                self.cfg, endpoints, {m: v.url for m, v in self.vendors.items()}
            )
            self._start_gateway(timeout_s - (time.monotonic() - started))
        except BaseException:
            self.stop()
            raise
        _log.info("local stack up in %.1fs at %s", time.monotonic() - started, self.url)
        return self

    def _start_gateway(self, timeout_s: float) -> None:
        import os

        assert self.gateway_cfg is not None
        path = self.state_dir / "gateway.yaml"
        path.write_text(self.gateway_cfg.to_yaml())
        sock = bind(self.host, self.port)
        port = sock.getsockname()[1]
        self.url = f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{port}"
        log = open(self.state_dir / "gateway.log", "wb")  # noqa: SIM115 (the child holds it)
        cmd = [
            sys.executable, "-m", "serve_apps.gateway.server", "--fd", str(sock.fileno()),
            "--config", str(path), "--workers", str(self.workers),
        ]  # fmt: skip
        self.gateway = subprocess.Popen(
            cmd, pass_fds=(sock.fileno(),), stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.gateway_env},
        )  # fmt: skip
        sock.close()
        log.close()
        deadline = time.monotonic() + max(10.0, timeout_s)
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise RuntimeError(
                    f"the gateway exited ({self.gateway.returncode}):\n{self._log()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway was not ready in time:\n{self._log()}")

    def _log(self) -> str:
        try:
            text = (self.state_dir / "gateway.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-30:])

    # --- what is running ----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.providers.mode

    def status(self) -> dict[str, Any]:
        """What `easel cluster status --json` prints (health read from each provider now)."""
        rows = []
        for p in self.providers.providers:
            row = status_of(self.providers, p)
            try:
                row["healthy"] = (
                    httpx.get(f"{row['endpoint']}/readyz", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                row["healthy"] = False
            rows.append(row)
        return {
            "mode": self.mode,
            "gateway": {
                "url": self.url,
                "pid": None if self.gateway is None else self.gateway.pid,
                "workers": self.workers,
            },
            "providers": rows,
            "vendors": [
                {"model": m, "url": v.url, "pid": v.process.pid, "simulated": True}
                for m, v in self.vendors.items()
            ],
            "state_dir": str(self.state_dir),
        }

    def kill_provider(self, provider: str) -> list[int]:
        """An outage: SIGKILL every process of `provider` (its Ray cluster when isolated, its
        app's replicas on the shared Ray otherwise); returns their pids."""
        import os
        import signal

        if isinstance(self.providers, IsolatedProviders):
            return self.providers.kill(provider)
        pids = self.providers.pids(provider)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def alive(self) -> bool:
        return self.gateway is not None and pid_alive(self.gateway.pid)

    # --- stopping -----------------------------------------------------------------------------

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            if self.gateway.poll() is None:
                self.gateway.terminate()
                try:
                    self.gateway.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.gateway.kill()
                    self.gateway.wait()
            self.gateway = None

    def stop(self) -> None:
        """Stop the gateway, the providers and the vendors. Safe to call twice."""
        self.stop_gateway()
        self.providers.stop()
        for v in self.vendors.values():
            v.stop()
        self.vendors = {}
        if self._own_dir:
            import shutil

            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
