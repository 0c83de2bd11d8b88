"""A trivial local endpoint with a known service time, for checking the load generator itself.

It speaks easel's `POST /v1/generate` (PNG body and `X-Easel-*` timing headers) and the
OpenAI Images shape (`POST /v1/images/generations`, b64_json, no timing headers), answers each
request after exactly `service_ms` (plus `cold_ms` the first time a model is asked for), and
can misbehave on purpose: stall for a while, fail every n-th request, or serve only
`concurrency` requests at once (the rest queue, as a saturated server does). It is not easel's
serving app; it exists so the generator can be measured against a server whose behaviour is
known. Run it in a thread (`EchoServer`) or as a process (`python -m load_tests.echo_server`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import signal
import threading
import time
from typing import Any

from aiohttp import web

__all__ = ["EchoServer", "tiny_png"]


def tiny_png(size: int = 8, color: tuple[int, int, int] = (90, 140, 200)) -> bytes:
    """A small solid-colour PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class EchoServer:
    """The endpoint, served from a background thread on 127.0.0.1.

    Args:
        port: 0 picks a free port (see `url` after `start`).
        service_ms: time each request takes once it is being served.
        cold_ms: extra time for the first request of each model (reported as a cold start).
        concurrency: requests served at once; others wait (their wait is `X-Easel-Queue-Ms`).
            None: no limit.
        fail_every: every n-th request gets a 503 with Retry-After; 0 never.
        stall_after: the n-th request starts a stall of `stall_s`: it and every request that
            arrives during the stall are held until the stall ends.
        body: what a success answers with (default: a tiny PNG); anything else tests clients.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_ms: float = 0.0,
        cold_ms: float = 0.0,
        concurrency: int | None = None,
        fail_every: int = 0,
        stall_after: int | None = None,
        stall_s: float = 0.0,
        provider: str = "echo",
        body: bytes | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.service_ms, self.cold_ms = service_ms, cold_ms
        self.concurrency, self.fail_every = concurrency, fail_every
        self.stall_after, self.stall_s = stall_after, stall_s
        self.provider = provider
        self.received = 0
        self.stall_request_id: str | None = None  # the request that started the stall
        self._warm: set[str] = set()
        self._stall_until = 0.0
        self._png = tiny_png() if body is None else body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- request handling -------------------------------------------------------------------

    async def _serve(self, body: dict[str, Any]) -> tuple[web.Response | None, dict[str, str]]:
        """Common path: stall, fail, queue, serve. Returns an error response or the headers."""
        now = time.monotonic()
        self.received += 1
        k = self.received
        if not isinstance(body, dict) or not body.get("model") or not body.get("prompt"):
            return _error(422, "invalid_request", "model and prompt are required"), {}
        if self.stall_after is not None and k == self.stall_after:
            self._stall_until = now + self.stall_s
            self.stall_request_id = str(body.get("request_id"))
        if now < self._stall_until:
            await asyncio.sleep(self._stall_until - now)
        if self.fail_every and k % self.fail_every == 0:
            return _error(503, "overloaded", "simulated overload", **{"Retry-After": "1"}), {}
        model = str(body["model"])
        cold = model not in self._warm
        self._warm.add(model)
        queued = time.monotonic()
        if self._sem is not None:
            await self._sem.acquire()
        started = time.monotonic()
        try:
            await asyncio.sleep((self.service_ms + (self.cold_ms if cold else 0.0)) / 1000.0)
        finally:
            if self._sem is not None:
                self._sem.release()
        done = time.monotonic()
        return None, {
            "X-Easel-Model": model,
            "X-Easel-Provider": self.provider,
            "X-Easel-Replica": "echo-0",
            "X-Easel-Queue-Ms": f"{(started - queued) * 1000:.3f}",
            "X-Easel-Inference-Ms": f"{(done - started) * 1000:.3f}",
            "X-Easel-Batch-Size": "1",
            "X-Easel-Cold-Start": "true" if cold else "false",
        }

    async def _generate(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        err, headers = await self._serve(body)
        if err is not None:
            return err
        headers["X-Request-Id"] = str(body.get("request_id", ""))
        return web.Response(body=self._png, content_type="image/png", headers=headers)

    async def _openai(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        err, _ = await self._serve(body)
        if err is not None:
            return err
        data = {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(self._png).decode()}],
        }
        return web.json_response(data)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    # --- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/generate", self._generate)
        app.router.add_post("/v1/images/generations", self._openai)
        app.router.add_get("/healthz", self._health)
        return app

    async def serve(self) -> None:
        """Serve until `stop()` (or the stop event) on the running loop."""
        self._stop = asyncio.Event()
        self._sem = asyncio.Semaphore(self.concurrency) if self.concurrency else None
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> EchoServer:
        """Start in a daemon thread; returns once it accepts connections."""

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="echo-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("echo server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m load_tests.echo_server --port P --service-ms MS`: serve until SIGTERM/Ctrl-C."""
    p = argparse.ArgumentParser(prog="python -m load_tests.echo_server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--service-ms", type=float, default=0.0)
    p.add_argument("--cold-ms", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--fail-every", type=int, default=0)
    args = p.parse_args(argv)
    from load_tests.process import raise_open_files

    raise_open_files()  # one socket per open request: a saturated test holds thousands
    server = EchoServer(
        host=args.host,
        port=args.port,
        service_ms=args.service_ms,
        cold_ms=args.cold_ms,
        concurrency=args.concurrency,
        fail_every=args.fail_every,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(server.serve())
        await asyncio.get_running_loop().run_in_executor(None, server._ready.wait)
        print(f"ready {server.url}", flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: server._stop and server._stop.set())
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
