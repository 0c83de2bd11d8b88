"""Starting the SIMULATED closed image-API vendor: a real HTTP server on 127.0.0.1, own process.

No closed model can be called from these machines, so a simulated vendor stands in for each one
(what it does: `simulators.vendor_app`). It is never a Ray actor: a vendor is outside every
provider cluster, as a real one is. Ways to start it:

- `python -m simulators.vendor --port P --p50-ms 300 --p95-ms 700 ...` (or
  `--model proprietary-a [--config F]` to take the settings from a config);
- `start_simulated_vendor_process(settings)`: a subprocess, returned once it answers;
- `start_vendors(models)`: one such process per model with `api.simulated` (what the local
  modes of `easel cluster up`, `easel serve` and `easel bench` do). The gateway calls it as it
  would call the real API, at the URL the local mode writes into `api.base_url`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from config import LatencyDistribution, ModelConfig
from simulators.vendor_app import VendorSettings, build_app

__all__ = [
    "SimulatedVendorProcess",
    "VendorSettings",
    "sim_configure",
    "sim_reset",
    "sim_stats",
    "start_simulated_vendor_process",
    "start_vendors",
]

log = logging.getLogger(__name__)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    # Listening at once: a client that connects before the server runs waits in the backlog
    # instead of being refused, so a printed URL is usable right away.
    sock.listen(2048)
    return sock


def _server(settings: VendorSettings) -> Any:
    import uvicorn

    # log_config=None: leave the host process's logging (a Ray worker's, say) alone.
    config = uvicorn.Config(
        build_app(settings), log_config=None, log_level="warning", access_log=False, lifespan="off"
    )
    return uvicorn.Server(config)


@dataclass
class SimulatedVendorProcess:
    """A simulated vendor running as a subprocess; stop() (or the with-block) ends it."""

    url: str
    process: subprocess.Popen[bytes]
    _log: Any = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> SimulatedVendorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulated_vendor_process(
    settings: VendorSettings, port: int = 0, timeout_s: float = 30
) -> SimulatedVendorProcess:
    """Start `python -m simulators.vendor` with `settings`; return once it answers.

    Port 0 lets this process pick a free port and hand the bound socket to the child, so two
    vendors can never race for the same port.
    """
    sock = _bind(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    errlog = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process object)
    cmd = [sys.executable, "-m", "simulators.vendor", "--fd", str(sock.fileno())]
    cmd += ["--settings-json", settings.model_dump_json()]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=errlog, pass_fds=(sock.fileno(),)
    )
    sock.close()  # the child holds its own copy
    vendor = SimulatedVendorProcess(url=url, process=proc, _log=errlog)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/", timeout=1).status_code == 200:
                return vendor
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            errlog.seek(0)
            tail = errlog.read()[-2000:].decode(errors="replace")
            vendor.stop()
            raise RuntimeError(
                f"simulated vendor {settings.name} did not start (rc={proc.poll()}): {tail}"
            )
        time.sleep(0.05)


# --- control helpers (sync; for tests, drills and the CLI) ------------------------------------


def sim_stats(base_url: str) -> dict[str, Any]:
    """The vendor's counters: requests, failures, rejected_429, queue_depth, in_service, ..."""
    return httpx.get(f"{base_url}/_sim/stats", timeout=10).raise_for_status().json()


def sim_configure(base_url: str, **changes: Any) -> dict[str, Any]:
    """Change settings live, e.g. `sim_configure(url, failure_rate=1.0)`; returns the settings."""
    return httpx.post(f"{base_url}/_sim/config", json=changes, timeout=10).raise_for_status().json()


def sim_reset(base_url: str) -> dict[str, Any]:
    """Back to the start-up settings with zeroed counters."""
    return httpx.post(f"{base_url}/_sim/reset", timeout=10).raise_for_status().json()


# --- one vendor process per simulated closed model -------------------------------------------


def start_vendors(
    models: list[ModelConfig], timeout_s: float = 30
) -> dict[str, SimulatedVendorProcess]:
    """One simulated vendor process per model with `api.simulated`; {model name: process}.

    Every caller of a model (each gateway replica and process) shares its one vendor queue, as
    they would share a real vendor. Stops the ones already started if one fails to start.
    """
    out: dict[str, SimulatedVendorProcess] = {}
    try:
        for m in models:
            if m.api is not None and m.api.simulated is not None:
                out[m.name] = start_simulated_vendor_process(
                    VendorSettings.from_model(m), timeout_s=timeout_s
                )
    except BaseException:
        for vendor in out.values():
            vendor.stop()
        raise
    return out


# --- command line -----------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulators.vendor",
        description="Run a SIMULATED closed image-API vendor on 127.0.0.1 (both protocols).",
    )
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed).")
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a socket bound by the parent
    p.add_argument("--settings-json", help="All settings as JSON (overrides the flags below).")
    p.add_argument("--model", help="Take the settings from this closed model of --config.")
    p.add_argument("--config", help="Config file for --model (default: the embedded one).")
    p.add_argument("--name", default="simulated")
    p.add_argument("--vendor-model", default="")
    p.add_argument("--p50-ms", type=float, default=300.0)
    p.add_argument("--p95-ms", type=float, default=700.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--failure-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--price-usd", type=float, default=0.0)
    p.add_argument("--max-queue", type=int, default=None)
    p.add_argument("--retry-after-s", type=float, default=1.0)
    return p.parse_args(argv)


def _settings_from_args(args: argparse.Namespace) -> VendorSettings:
    if args.settings_json:
        return VendorSettings.model_validate_json(args.settings_json)
    if args.model:
        from config import load_config

        return VendorSettings.from_model(load_config(args.config).model(args.model))
    return VendorSettings(
        name=args.name,
        vendor_model=args.vendor_model,
        latency=LatencyDistribution(p50_ms=args.p50_ms, p95_ms=args.p95_ms),
        concurrency=args.concurrency,
        failure_rate=args.failure_rate,
        seed=args.seed,
        price_usd=args.price_usd,
        max_queue=args.max_queue,
        retry_after_s=args.retry_after_s,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    try:
        settings = _settings_from_args(args)
    except (ValidationError, ValueError, KeyError) as exc:
        print(f"simulated vendor: bad settings: {exc}", file=sys.stderr)
        return 2
    # --fd: a socket the parent bound, so parent and child can never race for a port.
    sock = socket.socket(fileno=args.fd) if args.fd is not None else _bind(args.port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    log.info("SIMULATED vendor %s (%s) listening on %s", settings.name, os.getpid(), url)
    print(f"SIMULATED_VENDOR_URL={url}", flush=True)
    _server(settings).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
