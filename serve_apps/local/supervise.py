"""A local federation in the background: what `easel cluster up --local` and `down` run.

`start_detached(...)` starts `python -m serve_apps.local.supervise` in a session of its own (it
outlives the terminal), which runs a `LocalStack` and keeps its status in a state file (pids of
each provider's processes, endpoints, the gateway's URL), refreshed every couple of seconds
since replicas restart with new pids. `start_detached` returns once the stack is ready;
`stop_detached` asks the supervisor to stop it all (SIGTERM), killing its session if it hangs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cluster.local import pid_alive, read_state, session_pids, write_state

__all__ = ["live_status", "start_detached", "stop_detached"]

_log = logging.getLogger(__name__)
_REFRESH_S = 2.0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_detached(
    state_path: str | Path,
    *,
    config: str | None = None,
    isolated: bool = False,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """Start a local federation in the background; its state once the gateway is ready.

    Raises:
        RuntimeError: one is already running, or it failed or did not come up (with its log).
    """
    state_path = Path(state_path)
    existing = read_state(state_path)
    if existing and pid_alive(existing.get("supervisor_pid")):
        raise RuntimeError(
            f"a local cluster is already running (pid {existing['supervisor_pid']}, gateway "
            f"{existing['gateway']['url']}); stop it with `easel cluster down`"
        )
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.unlink(missing_ok=True)
    log_path = state_path.with_suffix(".log")
    cmd = [sys.executable, "-m", "serve_apps.local.supervise", "--state", str(state_path)]
    for flag, value in (("--config", config), ("--host", host), ("--port", port),
                        ("--workers", workers)):  # fmt: skip
        if value is not None:
            cmd += [flag, str(value)]
    if isolated:
        cmd.append("--isolated")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the terminal that ran `cluster up`
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(state_path)
        if state and state.get("supervisor_pid") == proc.pid:
            return state
        if proc.poll() is not None:
            raise RuntimeError(f"the local cluster exited ({proc.returncode}):\n{_tail(log_path)}")
        time.sleep(0.2)
    stop_detached(state_path)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the local cluster did not come up in {timeout_s:g}s:\n{_tail(log_path)}")


def stop_detached(state_path: str | Path, timeout_s: float = 120) -> dict[str, Any] | None:
    """Stop the recorded local federation; its last state, or None when none was recorded."""
    state_path = Path(state_path)
    state = read_state(state_path)
    if state is None:
        return None
    pid = state.get("supervisor_pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # Whatever is left of its session (a hung stop, a crash): only what it started.
    for leftover in session_pids(pid) if isinstance(pid, int) else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    state_path.unlink(missing_ok=True)
    return state


def live_status(state: dict[str, Any]) -> dict[str, Any]:
    """The recorded state with each provider's health read now (GET <endpoint>/readyz)."""
    import httpx

    out = dict(state)
    out["running"] = pid_alive(state.get("supervisor_pid"))
    providers = []
    for row in state.get("providers", []):
        row = dict(row)
        try:
            row["healthy"] = httpx.get(f"{row['endpoint']}/readyz", timeout=2).status_code == 200
        except (httpx.HTTPError, TypeError):
            row["healthy"] = False
        providers.append(row)
    out["providers"] = providers
    return out


def _supervise(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.local.supervise")
    parser.add_argument("--state", required=True)
    parser.add_argument("--config")
    parser.add_argument("--isolated", action="store_true")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    from config import load_config
    from serve_apps.local.stack import LocalStack

    cfg = load_config(args.config)
    stack = LocalStack(
        cfg,
        isolated=args.isolated,
        host=args.host or cfg.serve.host,
        port=cfg.serve.port if args.port is None else args.port,
        workers=args.workers or cfg.serve.workers,
    )
    started = time.monotonic()
    stack.start()
    state_path = Path(args.state)
    try:
        extra = {
            "supervisor_pid": os.getpid(),
            "config": args.config,
            "started_at": time.time(),
            "startup_s": round(time.monotonic() - started, 2),
            "log": str(state_path.with_suffix(".log")),
        }
        while not stop.is_set():
            write_state(state_path, {**stack.status(), **extra})
            stop.wait(_REFRESH_S)
    finally:
        stack.stop()
        _log.info("local cluster down")
    return 0


if __name__ == "__main__":
    sys.exit(_supervise())
