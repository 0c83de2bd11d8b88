"""A real multi-node Ray cluster on this machine: a head plus one Ray node per provider.

Each provider node carries the `provider:<name>` resource, so the per-(model, provider)
deployments land on it exactly as they land on that provider's GPU nodes in the cloud, and
removing a node is what losing a provider looks like. Built on `ray.cluster_utils.Cluster`
(separate raylets, object stores and worker processes per node, one GCS).

`easel cluster up --local` runs a `LocalCluster` in a detached supervisor process and records it
in a state file; `easel cluster down` stops that process, which takes its nodes down with it (and
Ray's reaper does so too if the supervisor is killed outright).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.cache import cache_dir

__all__ = [
    "LOCAL_PROVIDER_UNITS",
    "LocalCluster",
    "default_state_path",
    "read_state",
    "running",
    "start_detached",
    "stop_detached",
]

# Units of `provider:<name>` per local provider node, as on KubeRay and launcher nodes.
LOCAL_PROVIDER_UNITS = 100


def default_state_path() -> Path:
    """`$EASEL_CACHE/local-cluster.json` (`~/.cache/easel` when EASEL_CACHE is unset)."""
    return cache_dir() / "local-cluster.json"


class LocalCluster:
    """A head node plus one node per provider, each with `provider:<name>` resources.

    Args:
        providers: Provider names, one Ray node each.
        head_cpus: Logical CPUs of the head (the driver, Serve's controller and ingress live
            there; provider work goes to provider nodes by resource).
        node_cpus: Logical CPUs of each provider node.
        object_store_mb: Object store per node, MB (kept small: many nodes share one machine).
    """

    def __init__(
        self,
        providers: list[str],
        head_cpus: float = 1,
        node_cpus: float = 2,
        object_store_mb: int = 100,
    ) -> None:
        if not providers:
            raise ValueError("a local cluster needs at least one provider")
        if len(set(providers)) != len(providers):
            raise ValueError(f"provider names repeat: {providers}")
        self.providers = list(providers)
        self.head_cpus = head_cpus
        self.node_cpus = node_cpus
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self._cluster: Any = None
        self._nodes: dict[str, Any] = {}

    def start(self) -> LocalCluster:
        """Start the head and every provider node; returns when all are registered."""
        from ray.cluster_utils import Cluster

        self._cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": self.head_cpus,
                "object_store_memory": self.object_store_bytes,
                "include_dashboard": False,
            },
        )
        try:
            for name in self.providers:
                self.add_provider(name, wait=False)
            self._cluster.wait_for_nodes()
        except BaseException:
            self.shutdown()
            raise
        return self

    @property
    def address(self) -> str:
        """The GCS address drivers pass to `ray.init(address=...)`."""
        if self._cluster is None:
            raise RuntimeError("the local cluster is not started")
        return str(self._cluster.address)

    def add_provider(self, name: str, wait: bool = True) -> None:
        """(Re)start the node of provider `name`."""
        if name in self._nodes:
            raise ValueError(f"provider {name!r} already has a node")
        self._nodes[name] = self._cluster.add_node(
            num_cpus=self.node_cpus,
            resources={f"provider:{name}": LOCAL_PROVIDER_UNITS},
            object_store_memory=self.object_store_bytes,
            wait=wait,
        )
        if name not in self.providers:
            self.providers.append(name)

    def remove_provider(self, name: str, graceful: bool = False) -> None:
        """Take provider `name`'s node away, as an outage would (processes killed)."""
        node = self._nodes.pop(name, None)
        if node is None:
            raise KeyError(f"provider {name!r} has no node (alive: {sorted(self._nodes)})")
        self._cluster.remove_node(node, allow_graceful=graceful)

    def alive(self) -> list[str]:
        """Providers whose node is up."""
        return [p for p in self.providers if p in self._nodes]

    def node_ids(self) -> dict[str, str]:
        """Ray node id (hex) of each live provider node."""
        return {p: n.node_id for p, n in self._nodes.items()}

    def shutdown(self) -> None:
        """Kill every node, head last. Safe to call twice.

        Not graceful: nothing on a throwaway local cluster needs flushing, and a graceful stop
        waits on every replica's shutdown timeout.
        """
        if self._cluster is None:
            return
        cluster, self._cluster = self._cluster, None
        self._nodes.clear()
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node, allow_graceful=False)
        if cluster.head_node is not None:
            cluster.remove_node(cluster.head_node, allow_graceful=False)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# --- the detached supervisor behind `easel cluster up --local` / `down` ---------------------


def read_state(path: str | Path) -> dict[str, Any] | None:
    """The recorded local cluster, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def start_detached(
    providers: list[str],
    state_path: str | Path,
    node_cpus: float = 2,
    head_cpus: float = 1,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Start a LocalCluster in a background process; returns its state once it is up.

    Raises RuntimeError (with the log's tail) when it fails or does not come up in `timeout`.
    """
    state_path = Path(state_path)
    existing = read_state(state_path)
    if existing and _alive(existing.get("pid")):
        raise RuntimeError(
            f"a local cluster is already running (pid {existing['pid']}, address "
            f"{existing['address']}); stop it with `easel cluster down`"
        )
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.unlink(missing_ok=True)
    log_path = state_path.with_suffix(".log")
    cmd = [
        sys.executable, "-m", "cluster.local", "--state", str(state_path),
        "--node-cpus", str(node_cpus), "--head-cpus", str(head_cpus), *providers,
    ]  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the terminal that ran `cluster up`
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_path)
        if state and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            raise RuntimeError(
                f"the local cluster exited with status {proc.returncode}:\n{_tail(log_path)}"
            )
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the local cluster did not come up in {timeout:g}s:\n{_tail(log_path)}")


def stop_detached(state_path: str | Path, timeout: float = 60.0) -> dict[str, Any] | None:
    """Stop the recorded local cluster; returns its state, or None when none was running."""
    state_path = Path(state_path)
    state = read_state(state_path)
    if state is None:
        return None
    pid = int(state["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)  # its own session: only what it started
    state_path.unlink(missing_ok=True)
    return state


def running(state: dict[str, Any]) -> bool:
    """Whether the supervisor of a recorded local cluster is still alive."""
    return _alive(state.get("pid"))


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _supervise(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local")
    parser.add_argument("--state", required=True)
    parser.add_argument("--node-cpus", type=float, default=2)
    parser.add_argument("--head-cpus", type=float, default=1)
    parser.add_argument("providers", nargs="+")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state_path = Path(args.state)
    cluster = LocalCluster(args.providers, head_cpus=args.head_cpus, node_cpus=args.node_cpus)
    started = time.monotonic()
    cluster.start()
    try:
        state = {
            "pid": os.getpid(),
            "address": cluster.address,
            "providers": cluster.alive(),
            "node_ids": cluster.node_ids(),
            "started_at": time.time(),
            "startup_s": round(time.monotonic() - started, 2),
            "log": str(state_path.with_suffix(".log")),
        }
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)  # readers never see half a file
        print(f"local cluster up at {cluster.address}: {state}", flush=True)
        stop.wait()
    finally:
        cluster.shutdown()
        print("local cluster down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_supervise())
