"""Ray clusters on this machine, each a provider of its own, and the state file of a local run.

`RayHead` starts one independent Ray cluster (`ray start --head --block` in a session of its
own), the way each provider is its own Ray cluster in production. Several side by side collide
on Ray's defaults (CONTEXT.md), so each gets its own GCS, node-manager, object-manager, worker,
client-server, dashboard-agent, metrics and runtime-env-agent ports, its own temp folder, and its
own auth token (in its environment, never `~/.ray/auth_token`). `pids()` lists the processes of
that cluster (its session), so a drill can kill a provider outright; `stop()` ends them all.

The state file helpers (`write_state`, `read_state`, `pid_alive`) record what a detached
`easel cluster up --local` started, for `status` and `down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config.cache import cache_dir

__all__ = [
    "RayHead",
    "default_state_path",
    "free_port",
    "pid_alive",
    "read_state",
    "session_pids",
    "write_state",
]

# Worker ports per cluster: Ray hands one to each worker process it starts.
_WORKER_PORTS = 200


def default_state_path() -> Path:
    """`$EASEL_CACHE/local-cluster.json` (`~/.cache/easel` when EASEL_CACHE is unset)."""
    return cache_dir() / "local-cluster.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _free_range(n: int) -> int:
    """The first of `n` consecutive ports in 20000-39999 that look free (sampled)."""
    for _ in range(200):
        base = 20_000 + secrets.randbelow(100) * n
        probes = (base, base + n // 2, base + n - 1)
        try:
            for port in probes:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no free range of {n} ports found")


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid` (a cluster started in a session of its own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid and pid_alive(int(entry.name)):
                out.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(out)


class RayHead:
    """One independent single-node Ray cluster on this machine, with private ports and token.

    Args:
        name: A label (the provider), used in the temp folder's name and the logs.
        num_cpus: Logical CPUs of the node.
        resources: Custom resources of the node (e.g. `{"provider:lambda-sim": 1000}`).
        object_store_mb: Object store size (kept small: several clusters share one machine).
    """

    def __init__(
        self,
        name: str,
        *,
        num_cpus: float = 2,
        resources: dict[str, float] | None = None,
        object_store_mb: int = 100,
    ) -> None:
        self.name = name
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.object_store_mb = object_store_mb
        self.port = free_port()
        # Short: Ray's unix socket paths live under it and must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="er-", dir="/tmp")
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self._log_path = Path(self.temp_dir) / "ray-start.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """This cluster's Prometheus endpoint (Ray's and Serve's metrics, the replicas' own)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def env(self) -> dict[str, str]:
        """The environment a driver of this cluster needs (its own auth token)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_ADDRESS=self.address)
        return env

    def start(self, timeout_s: float = 120) -> RayHead:
        """Start the cluster; returns once a driver can connect."""
        self.launch()
        return self.wait(timeout_s)

    def launch(self) -> None:
        """Start the cluster's processes without waiting (`wait` does): several start at once."""
        ports = {
            "--port": self.port,
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--metrics-export-port": self.metrics_port,
            "--runtime-env-agent-port": free_port(),
        }
        base = _free_range(_WORKER_PORTS)
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1", "--temp-dir", self.temp_dir,
            "--num-cpus", str(self.num_cpus), "--include-dashboard", "false",
            "--disable-usage-stats", "--object-store-memory",
            str(self.object_store_mb * 1024 * 1024),
            "--min-worker-port", str(base), "--max-worker-port", str(base + _WORKER_PORTS - 1),
            *(x for k, v in ports.items() for x in (k, str(v))),
        ]  # fmt: skip
        if self.resources:
            cmd += ["--resources", json.dumps(self.resources)]
        env = self.env()
        env.pop("RAY_ADDRESS")
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # its processes are one session: pids() and kill them
            )  # fmt: skip

    def wait(self, timeout_s: float = 120) -> RayHead:
        """Return once the launched cluster is up; RuntimeError (with its log) otherwise."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start for {self.name} exited:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Ray cluster {self.name} did not come up in {timeout_s:g}s")

    def _ready(self) -> bool:
        # `ray start --block` prints this once the head's processes are all up.
        try:
            return b"Ray runtime started" in self._log_path.read_bytes()
        except OSError:
            return False

    def pids(self) -> list[int]:
        """The processes of this cluster (GCS, raylet, workers, agents)."""
        if self.process is None or self.process.poll() is not None:
            return []
        return session_pids(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> list[int]:
        """SIGKILL every process of the cluster at once, as an outage would; returns the pids.

        Not graceful on purpose: nothing on a throwaway local cluster needs flushing, and a
        graceful `ray stop` waits out every worker's shutdown timeout (a minute here).
        """
        if self.process is None:
            return []
        pids = session_pids(self.process.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return pids

    def stop(self, timeout_s: float = 30) -> None:
        """Kill every process of the cluster and remove its temp folder. Safe to call twice."""
        if self.process is not None:
            deadline = time.monotonic() + timeout_s
            while self.kill() and time.monotonic() < deadline:
                time.sleep(0.1)  # a worker may fork while we kill: until none is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the state file of a detached local run ---------------------------------------------------


def write_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def read_state(path: str | Path) -> dict[str, Any] | None:
    """The recorded local run, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True
