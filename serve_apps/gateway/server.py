"""Running the gateway: one process, or N processes sharing one listening socket.

`easel gateway --config F [--host H] [--port P] [--workers N]` (or `python -m
serve_apps.gateway.server` with the same flags, or `--fd` for a socket bound by the parent, as
the local modes do) calls `serve_gateway`. With one worker the gateway runs in this process. With
N, this process binds the socket, makes a state folder (the routing document and the processes'
snapshots, `document.py`, `snapshots.py`) and starts N worker processes that all accept on that
socket, each with its own routing state; it then waits, and stops them all on SIGTERM or Ctrl-C.
A worker that dies is started again.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config import EaselConfig, load_config

__all__ = ["bind", "serve_gateway"]

_log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), inheritable by children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,
    )
    return uvicorn.Server(config)


def _serve_one(cfg: EaselConfig, sock: socket.socket, state_dir: str | None, workers: int) -> None:
    from serve_apps.gateway.app import create_app

    server = _uvicorn(create_app(cfg, state_dir=state_dir, workers=workers))
    # What start-up allocated (the imports, the app: ~80k objects) lives as long as the process:
    # keep it out of the collector's full passes, each of which walks all of it with the event
    # loop stopped (docs/architecture.md, the echo figures).
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock])


def serve_gateway(
    config_path: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    sock: socket.socket | None = None,
    ready: Any = None,
) -> int:
    """Serve the gateway of the config at `config_path` until SIGTERM or Ctrl-C.

    Flags beat the config (`serve.host`, `serve.port`, `serve.workers`); `sock`, a socket already
    bound, beats both. `ready(url)` is called once the socket is bound. Returns the exit status.

    Raises:
        GatewaySetupError: the config does not say where an upstream is (before binding).
    """
    cfg = load_config(config_path)
    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    workers = workers or cfg.serve.workers
    from serve_apps.gateway.core import Gateway

    Gateway(cfg, workers=workers)  # GatewaySetupError before anything binds
    sock = sock or bind(host, port)
    bound = sock.getsockname()[0]
    url = f"http://{'127.0.0.1' if bound in ('0.0.0.0', '::') else bound}:{sock.getsockname()[1]}"
    _log.info("easel gateway on %s with %d process(es)", url, workers)
    if ready is not None:
        ready(url)
    if workers == 1:
        _serve_one(cfg, sock, None, 1)
        return 0
    state_dir = tempfile.mkdtemp(prefix="easel-gateway-")
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    cmd = [
        sys.executable, "-m", "serve_apps.gateway.server", "--worker", "--fd",
        str(sock.fileno()), "--state-dir", state_dir, "--workers", str(workers),
    ]  # fmt: skip
    if config_path:
        cmd += ["--config", str(Path(config_path).resolve())]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [subprocess.Popen(cmd, pass_fds=(sock.fileno(),)) for _ in range(workers)]
        while not stop["now"]:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    _log.warning(
                        "gateway worker %d exited (%s); starting it again", p.pid, p.returncode
                    )
                    procs[i] = subprocess.Popen(cmd, pass_fds=(sock.fileno(),))
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        sock.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m serve_apps.gateway.server`: the gateway, or (`--worker`) one of its processes."""
    parser = argparse.ArgumentParser(prog="python -m serve_apps.gateway.server")
    parser.add_argument("--config", help="config file (default: the embedded default config)")
    parser.add_argument("--host", help="address to bind (default: serve.host)")
    parser.add_argument("--port", type=int, help="port to bind (default: serve.port)")
    parser.add_argument("--workers", type=int, help="processes (default: serve.workers)")
    parser.add_argument("--fd", type=int, help="serve on this inherited, bound socket")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    if args.worker:
        assert sock is not None and args.state_dir and args.workers
        _serve_one(load_config(args.config), sock, args.state_dir, args.workers)
        return 0
    return serve_gateway(
        args.config, host=args.host, port=args.port, workers=args.workers, sock=sock
    )


if __name__ == "__main__":
    sys.exit(main())
