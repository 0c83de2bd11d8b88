"""Small test helpers shared by every test package."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; AssertionError after `timeout` seconds.

    Tests wait on a condition with a deadline, never on a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as exc:  # the system may not be up yet; keep polling
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc!r})")


@contextmanager
def set_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then restore them.

    Enter it before Ray starts: Ray workers inherit the driver's environment at `ray.init`.
    """
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ThreadServer:
    """An ASGI app served by uvicorn on a thread of this process, on a free port of 127.0.0.1.

    Its lifespan runs (startup before `url` is returned, shutdown on `stop`), so a gateway app's
    background work starts and stops as it does in its own process.
    """

    def __init__(self, app: object) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="on", loop="asyncio",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, timeout: float = 30) -> ThreadServer:
        self._thread.start()
        wait_for(lambda: self._server.started, timeout=timeout, interval=0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def session_alive(sid: int) -> bool:
    """Whether any process of session `sid` (a child started with `start_new_session`) lives."""
    import psutil

    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.info["pid"]) == sid:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def kill_session_when(
    cmd: list[str], condition: Callable[[], bool], timeout: float
) -> subprocess.Popen[bytes]:
    """Run `cmd` in a session of its own; once `condition()` holds, SIGKILL the whole session
    (the command and every process it started, a Ray included) and wait until it is gone."""
    import signal

    child = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        wait_for(condition, timeout=timeout)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    wait_for(lambda: not session_alive(child.pid), 60)
    return child
