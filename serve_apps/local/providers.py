"""The providers of a local run: Serve applications of one Ray, or one Ray cluster each.

Both kinds give every provider that serves a self-hosted model the same provider app
(`serve_apps.provider`) at an HTTP endpoint of its own, which is all the gateway knows of it:

- `SharedRayProviders` (the default): one Ray (this process's, started here when there is none),
  per provider its ingress application `provider-<name>` at route prefix `/<name>` of Serve's one
  HTTP proxy and its model applications `provider-<name>--<model>` at `/<name>/models/<model>`.
  Cheap: one set of Ray processes for all.
- `IsolatedProviders` (`--isolated`): one independent Ray cluster per provider (`RayHead`: its
  own ports, temp folder and auth token), each with Serve's proxy on a port of its own and the
  app at `/`, deployed by a short-lived driver process. Killing one provider's processes is a
  real outage of that provider and nothing else.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.local import RayHead, free_port
from config import EaselConfig
from serve_apps.provider.app import (
    build_provider_apps,
    model_app_name,
    model_units,
    provider_models,
)

__all__ = ["IsolatedProviders", "SharedRayProviders", "served_providers"]

_log = logging.getLogger(__name__)
# Logical CPUs a local Ray offers at least, so fractional replicas, the load test's Ray Data
# tasks and the scorers all find a place on a 2-core machine (they mostly wait, not compute).
_MIN_CPUS = 4


def served_providers(cfg: EaselConfig) -> list[str]:
    """Providers that serve at least one self-hosted model (the ones that need a cluster)."""
    return [p.name for p in cfg.providers if provider_models(cfg, p.name)]


def app_name(provider: str, prefix: str = "") -> str:
    return f"{prefix}provider-{provider}"


class SharedRayProviders:
    """Every provider as a Serve application of one Ray.

    Args:
        cfg: The config.
        address: A Ray to join; None starts a local one when this process has none.
        host: Where Serve's HTTP proxy binds.
        prefix: Put before every app name and route, so that two federations can share a Ray.
    """

    mode = "default"

    def __init__(
        self,
        cfg: EaselConfig,
        *,
        address: str | None = None,
        host: str = "127.0.0.1",
        prefix: str = "",
    ) -> None:
        self.cfg = cfg
        self.address = address
        self.host = host
        self.prefix = prefix
        self.providers = served_providers(cfg)
        self.started_ray = False
        self.endpoints: dict[str, str] = {}
        self.ray_address: str | None = None
        self.metrics_port: int | None = None

    def metrics_url(self, provider: str) -> str | None:
        """Ray's Prometheus endpoint (Serve's and the replicas' metrics) for `provider`."""
        return (
            None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}/metrics"
        )

    def start(self) -> dict[str, str]:
        """Deploy every provider's app (all at once) and return {provider: endpoint}."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                real = [p.name for p in self.cfg.providers if not p.simulated]
                if real:
                    raise RuntimeError(
                        f"providers {real} are not simulated: a local Ray cannot host them; give "
                        "their clusters' endpoints in the config, or join a Ray with --address"
                    )
                ray.init(
                    address="local",
                    num_cpus=max(_MIN_CPUS, os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    resources={p.resource: 1000 for p in self.cfg.providers},
                )
            self.started_ray = True
        self.ray_address = ray.get_runtime_context().gcs_address
        self.metrics_port = ray._private.worker.global_worker.node.metrics_export_port
        serve.start(http_options={"host": self.host, "port": free_port(self.host)})
        from ray.serve.context import _get_global_client

        port = _get_global_client().http_config.port  # an existing Serve keeps its own port
        targets = [
            serve.RunTarget(target=a.app, name=a.name, route_prefix=a.route_prefix)
            for p in self.providers
            for a in build_provider_apps(
                self.cfg, p, name=app_name(p, self.prefix), route_prefix=f"/{self.prefix}{p}"
            )
        ]
        if targets:
            serve.run_many(targets, wait_for_applications_running=True)
        self.endpoints = {p: f"http://127.0.0.1:{port}/{self.prefix}{p}" for p in self.providers}
        return self.endpoints

    def _apps(self, provider: str) -> list[str]:
        """`provider`'s Serve applications: its ingress's and one per model."""
        name = app_name(provider, self.prefix)
        units = dict.fromkeys(model_units(self.cfg, provider).values())  # once each, in order
        return [name, *(model_app_name(name, unit) for unit in units)]

    def pids(self, provider: str) -> list[int]:
        """The processes of `provider`'s apps: its ingress and model replicas."""
        import ray

        prefixes = tuple(f"SERVE_REPLICA::{a}#" for a in self._apps(provider))
        out = []
        for a in ray._private.state.actors().values():  # GCS, no dashboard needed
            if a.get("State") == "ALIVE" and (a.get("Name") or "").startswith(prefixes):
                pid = a.get("Pid")
                if pid:
                    out.append(int(pid))
        return sorted(out)

    def stop(self) -> None:
        """Remove the apps, or shut down the Ray this object started (taking them with it)."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        if self.started_ray:
            # Killing the cluster takes Serve and every replica with it at once; serve.shutdown()
            # would first wait out every replica's graceful-shutdown timeout.
            ray.shutdown()
            self.started_ray = False
            return
        # A shared cluster: remove only what this run deployed, all at once.
        try:
            names = {a for p in self.providers for a in self._apps(p)}
            for name in names:
                serve.delete(name, _blocking=False)
            deadline = time.monotonic() + 60
            while names & set(serve.status().applications) and time.monotonic() < deadline:
                time.sleep(0.2)
        except Exception:  # tearing down must not hide what the caller was doing
            _log.warning("removing the provider apps failed", exc_info=True)


class IsolatedProviders:
    """Every provider as a Ray cluster of its own on this machine.

    Args:
        cfg: The config.
        config_path: The config as a file, for the deploying driver processes.
        num_cpus: Logical CPUs per provider cluster.
    """

    mode = "isolated"

    def __init__(self, cfg: EaselConfig, config_path: str | Path, *, num_cpus: float = 4) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path)
        self.providers = served_providers(cfg)
        self.heads = {
            p: RayHead(p, num_cpus=num_cpus, resources={cfg.provider(p).resource: 1000})
            for p in self.providers
        }
        self.endpoints: dict[str, str] = {}

    def start(self, timeout_s: float = 600) -> dict[str, str]:
        """Start every cluster and deploy its app, all at once; {provider: endpoint}."""
        try:
            for head in self.heads.values():
                head.launch()
            for head in self.heads.values():
                head.wait()
            ports = {p: free_port() for p in self.providers}
            drivers = {p: self._deploy(p, head, ports[p]) for p, head in self.heads.items()}
            deadline = time.monotonic() + timeout_s
            for p, proc in drivers.items():
                try:
                    out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise RuntimeError(f"deploying provider {p} took over {timeout_s:g}s") from None
                if proc.returncode != 0:
                    tail = out.decode(errors="replace")[-3000:]
                    raise RuntimeError(f"deploying provider {p} failed:\n{tail}")
        except BaseException:
            self.stop()
            raise
        self.endpoints = {p: f"http://127.0.0.1:{ports[p]}" for p in self.providers}
        return self.endpoints

    def _deploy(self, provider: str, head: RayHead, port: int) -> subprocess.Popen[bytes]:
        """A driver process that deploys `provider`'s app on `head` (in its environment)."""
        cmd = [sys.executable, "-m", "serve_apps.local.deploy", "--config", str(self.config_path)]
        cmd += ["--provider", provider, "--port", str(port)]
        return subprocess.Popen(
            cmd, env=head.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def pids(self, provider: str) -> list[int]:
        """Every process of `provider`'s Ray cluster."""
        return self.heads[provider].pids()

    def address(self, provider: str) -> str:
        return self.heads[provider].address

    def metrics_url(self, provider: str) -> str | None:
        return self.heads[provider].metrics_url

    def kill(self, provider: str) -> list[int]:
        """An outage: SIGKILL every process of `provider`'s cluster; returns their pids."""
        return self.heads[provider].kill()

    def stop(self) -> None:
        for head in self.heads.values():
            head.stop()


def status_of(providers: Any, provider: str) -> dict[str, Any]:
    """The `easel cluster status` row of one provider (its health is read by the caller)."""
    address = (
        providers.address(provider)
        if isinstance(providers, IsolatedProviders)
        else providers.ray_address
    )
    return {
        "name": provider,
        "endpoint": providers.endpoints.get(provider),
        "ray_address": address,
        "pids": providers.pids(provider),
        "models": [m.name for m in provider_models(providers.cfg, provider)],
        "metrics_url": providers.metrics_url(provider),
    }
