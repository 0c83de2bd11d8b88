"""A small HTTP/1.1 client for the timer loop: pooled keep-alive connections, C parsing.

A load generator's client must cost little per request, or the process that keeps the schedule
spends its time in the client (a general-purpose client costs several hundred microseconds of
Python per request). Here a send is one `transport.write` of bytes built beforehand, and a
response is framed by httptools (llhttp, in C) as its bytes arrive: no task, no coroutine and
no header object per request. Completion is a callback with the raw status, a few headers and
the body; parsing what the body means happens elsewhere.

Connections are kept alive and reused (last used first); one is opened when none is idle, so
there is no count limit here: the caller bounds open requests. Idle connections are closed
after `IDLE_S`, before common servers' keep-alive timeouts (uvicorn: 5 s), so a request is not
written onto a connection the server is closing. TLS works through asyncio's transports.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

__all__ = ["IDLE_S", "Endpoint", "Pool", "RawResponse"]

IDLE_S = 2.0
_MAX_ERROR_CHARS = 500


@dataclass(slots=True)
class RawResponse:
    """One request's outcome on the caller's clock; nothing of the body interpreted.

    `error`/`error_class` ('timeout', 'connection') are set when no complete response came.
    """

    sent_s: float
    first_byte_s: float | None = None
    done_s: float | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    error_class: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port, path, and the request head built once."""

    url: str
    host: str
    port: int
    path: str
    tls: bool
    head: bytes  # "POST path HTTP/1.1" and the fixed headers, without Content-Length

    @classmethod
    def of(cls, url: str, headers: Mapping[str, str]) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port]/path, got {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default_port = port == (443 if tls else 80)
        host = parts.hostname if default_port else f"{parts.hostname}:{port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return cls(url, parts.hostname, port, path, tls, head)

    def request(self, body: bytes) -> bytes:
        """The whole request: head, Content-Length and body."""
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: at most one request on it at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._resp: RawResponse | None = None
        self._done: Callable[[RawResponse], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._chunks: list[bytes] = []
        self._name: bytes = b""

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._resp is None:  # bytes with no request pending: the server is confused
            self._abort("connection", "unexpected bytes from the server")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail("connection", f"bad HTTP response: {exc}")
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self._resp is not None:
            self._fail("connection", f"connection closed before the response ended: {exc!r}")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._name = name
        key = self.pool.keep_headers.get(name.lower())
        if key is not None and self._resp is not None:
            self._resp.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._resp is not None:
            self._resp.first_byte_s = self.pool.clock()
            self._resp.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        resp = self._resp
        if resp is None:
            return
        resp.body = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        keep = self.parser.should_keep_alive()
        self._finish(resp)
        if keep and not self.closed:
            self.pool._release(self)
        else:
            self._abort()

    # requests
    def send(self, data: bytes, resp: RawResponse, done: Callable[[RawResponse], None]) -> None:
        assert self.transport is not None
        self._resp, self._done, self._chunks = resp, done, []
        self._timer = self.pool.loop.call_at(self.pool.deadline(), self._on_timeout)
        self.transport.write(data)

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail("timeout", f"no complete response within {self.pool.timeout_s:g} s")
        self._abort()

    def _finish(self, resp: RawResponse) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        resp.done_s = self.pool.clock()
        done = self._done
        self._resp = self._done = None
        self._chunks = []
        if done is not None:
            done(resp)

    def _fail(self, error_class: str, error: str) -> None:
        resp = self._resp
        if resp is not None:
            resp.error_class, resp.error = error_class, error[:_MAX_ERROR_CHARS]
            self._finish(resp)

    def _abort(self, error_class: str | None = None, error: str = "") -> None:
        if error_class:
            self._fail(error_class, error)
        self.closed = True
        self.pool._forget(self)
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one endpoint, used from one event loop.

    Args:
        loop: the loop every call comes from.
        endpoint: where requests go.
        timeout_s: each request's deadline, from its send.
        clock: the caller's clock (seconds), for the response's timestamps.
        keep_headers: response headers to copy (by name, any case).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: Endpoint,
        timeout_s: float,
        clock: Callable[[], float],
        keep_headers: tuple[str, ...] = (),
    ) -> None:
        self.loop, self.endpoint, self.timeout_s, self.clock = loop, endpoint, timeout_s, clock
        self.keep_headers = {h.lower().encode("latin-1"): h for h in keep_headers}
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._tasks: set[asyncio.Task] = set()
        self._ssl = ssl.create_default_context() if endpoint.tls else None
        self._addr: tuple | None = None
        self.opened = 0  # connections opened so far (reuse = requests - opened)
        self._reaper = loop.call_later(IDLE_S, self._reap)

    def deadline(self) -> float:
        return self.loop.time() + self.timeout_s

    async def resolve(self) -> None:
        """Look the host up once (not per connection): later connects go to the address."""
        infos = await self.loop.getaddrinfo(
            self.endpoint.host, self.endpoint.port, type=socket.SOCK_STREAM
        )
        self._addr = infos[0][4][:2]

    def send(self, data: bytes, done: Callable[[RawResponse], None]) -> None:
        """Send one request now; `done(response)` is called on the loop when it ends."""
        resp = RawResponse(sent_s=self.clock())
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.send(data, resp, done)
                return
        task = self.loop.create_task(self._connect_and_send(data, resp, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def preconnect(self, n: int) -> None:
        """Open up to `n` connections and keep them idle (failures are left to the sends)."""
        for _ in range(max(0, n - len(self._idle))):
            conn, _, _ = await self._connect()
            if conn is None:
                return
            self._release(conn)

    async def _connect(self) -> tuple[_Conn | None, str | None, str | None]:
        """A new connection, or (None, error_class, error)."""
        host, port = self._addr or (self.endpoint.host, self.endpoint.port)
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Conn(self),
                    host,
                    port,
                    ssl=self._ssl,
                    server_hostname=self.endpoint.host if self._ssl else None,
                ),
                self.timeout_s,
            )
        except TimeoutError:
            return None, "timeout", f"could not connect within {self.timeout_s:g} s"
        except OSError as exc:
            return None, "connection", f"connect: {exc!r}"[:_MAX_ERROR_CHARS]
        self.opened += 1
        self._all.add(conn)
        return conn, None, None

    async def request(self, data: bytes) -> RawResponse:
        """Send one request and wait for its response (for warm-ups and tests)."""
        fut: asyncio.Future[RawResponse] = self.loop.create_future()
        self.send(data, lambda r: fut.done() or fut.set_result(r))
        return await fut

    async def _connect_and_send(
        self, data: bytes, resp: RawResponse, done: Callable[[RawResponse], None]
    ) -> None:
        conn, error_class, error = await self._connect()
        if conn is not None:
            conn.send(data, resp, done)
            return
        resp.error_class, resp.error = error_class, error
        resp.done_s = self.clock()
        done(resp)

    def _release(self, conn: _Conn) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)

    def _reap(self) -> None:
        """Close connections idle for IDLE_S (the idle list is oldest first)."""
        cutoff = time.monotonic() - IDLE_S
        n = 0
        while n < len(self._idle) and self._idle[n].idle_since < cutoff:
            n += 1
        old, self._idle = self._idle[:n], self._idle[n:]
        for conn in old:
            conn._abort()
        self._reaper = self.loop.call_later(IDLE_S / 2, self._reap)

    async def close(self) -> None:
        """Close every connection (requests still open fail as 'connection')."""
        self._reaper.cancel()
        for conn in list(self._all):
            conn._abort("connection", "the client closed")
        self._idle.clear()
        for task in list(self._tasks):
            task.cancel()
