"""The timer loop: a thread of its own that sends each request when it is due, and nothing else.

Its asyncio loop sleeps until the next item is due, writes the request (its bytes were built
before, off this loop), and goes back to sleep. Responses are framed on this loop as their
bytes arrive (load_tests.http1: C parsing, no task per request), and everything else done with
them (status and header interpretation, JSON and base64 decoding, hashing, writing the image
and the record) is handed on as a batch for another thread. So the loop never waits on response
handling, and a slow or stalled server cannot slow the schedule: it only holds more requests
open (no coordinated omission). Connections are pooled with HTTP keep-alive and have no count
limit of their own: the bound on open requests is the dispatcher's (memory), and a row that
finds it reached is reported, never queued unseen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from load_tests.http1 import Endpoint, Pool, RawResponse

__all__ = ["SendItem", "Sender"]

_BURST = 64  # rows started back to back before the loop lets the sockets be served


@dataclass(slots=True)
class SendItem:
    """One request, ready to go: when (`due`, the manifest's arrival_s), who, and its bytes."""

    due: float
    row: int
    job_id: str
    model: str
    niche: str
    tenant: str | None
    request: bytes

    def meta(self) -> dict[str, Any]:
        """The manifest fields a record carries."""
        return {
            "job_id": self.job_id,
            "row": self.row,
            "model": self.model,
            "niche": self.niche,
            "tenant": self.tenant,
            "arrival_s": self.due,
        }


class Sender:
    """Owns the timer thread, its event loop and the HTTP connection pool.

    Args:
        endpoint: where requests go (its request head is built once).
        timeout_s: per-request deadline.
        bound: most requests open at once (see load_tests.process.open_request_bound).
        on_response: called on the loop with (item, RawResponse) when a request ends; must
            only queue work (it runs on the timer loop).
        on_unsent: called on the loop with (item, reason) for a row the bound stopped.
        keep_headers: response headers to keep.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        timeout_s: float,
        bound: int,
        on_response: Callable[[SendItem, RawResponse], None],
        on_unsent: Callable[[SendItem, str], None],
        keep_headers: tuple[str, ...] = (),
    ) -> None:
        self.endpoint, self.timeout_s, self.bound = endpoint, timeout_s, bound
        self.keep_headers = keep_headers
        self._on_response, self._on_unsent = on_response, on_unsent
        self._queue: deque[SendItem] = deque()
        self._origin = 0.0  # the run clock's reading at `_start`
        self._start: float | None = None  # time.monotonic() at the run start
        self._closed = False
        self.last_due = -float("inf")  # the latest due time handed over so far
        self.sent = self.in_flight = self.max_in_flight = self.max_queued = 0
        self._ready = threading.Event()
        self._idle = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.pool: Pool | None = None
        self._pump_task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="easel-timer", daemon=True)
        self._error: BaseException | None = None
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the timer loop did not start") from self._error

    # --- called from other threads ------------------------------------------------------------

    def clock(self) -> float:
        """Seconds on the run clock (the manifest's arrival_s axis); the clock must be started."""
        assert self._start is not None
        return time.monotonic() - self._start + self._origin

    @property
    def started(self) -> bool:
        return self._start is not None

    def start(self, start_monotonic: float, origin_s: float = 0.0) -> None:
        """Start sending: the run clock reads `origin_s` at `start_monotonic`."""
        self._origin = origin_s
        self._start = start_monotonic
        self._call(self._begin)

    def submit(self, items: list[SendItem]) -> None:
        """Hand over items (sorted by due, none earlier than those handed over before)."""
        if items:
            self.last_due = max(self.last_due, items[-1].due)
            self._call(self._enqueue, items)

    def close_input(self) -> None:
        """No more items will come: the pump stops once the queue is empty."""
        self._call(self._close)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the input is closed, every item sent and every response in."""
        return self._idle.wait(timeout)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Future:
        """Run a coroutine on the timer loop (warm-up, shutdown); a concurrent Future."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        """Close the connection pool and end the thread (after `wait_idle`)."""
        if self._loop is None:
            return
        self.run(self._shutdown()).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    # --- on the timer loop --------------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _open(self) -> None:
        self._wake = asyncio.Event()
        self.pool = Pool(
            asyncio.get_running_loop(),
            self.endpoint,
            self.timeout_s,
            self._clock_or_zero,
            self.keep_headers,
        )
        await self.pool.resolve()

    def _clock_or_zero(self) -> float:
        return self.clock() if self._start is not None else 0.0

    async def preconnect(self, n: int) -> None:
        """Open `n` idle connections now (on the timer loop), for the first sends."""
        assert self.pool is not None
        await self.pool.preconnect(n)

    async def _shutdown(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def _begin(self) -> None:
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def _enqueue(self, items: list[SendItem]) -> None:
        q = self._queue
        if q and items[0].due < q[-1].due:  # out of order (should not happen): keep it sorted
            merged = sorted([*q, *items], key=lambda it: it.due)
            q.clear()
            q.extend(merged)
        else:
            q.extend(items)
        self.max_queued = max(self.max_queued, len(q))
        assert self._wake is not None
        self._wake.set()

    def _close(self) -> None:
        self._closed = True
        assert self._wake is not None
        self._wake.set()
        if not self.started:
            self._check_idle()

    def _check_idle(self) -> None:
        if self._closed and not self._queue and not self.in_flight:
            self._idle.set()

    async def _pump(self) -> None:
        assert self._wake is not None
        q = self._queue
        while True:
            if not q:
                if self._closed:
                    self._check_idle()
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = q[0].due - self.clock()
            if delay > 0:
                # Items come sorted, so only the head can be due first: sleep until then.
                await asyncio.sleep(delay)
                continue
            started = 0
            while q and q[0].due <= self.clock():
                self._fire(q.popleft())
                started += 1
                if started % _BURST == 0:
                    await asyncio.sleep(0)

    def _fire(self, item: SendItem) -> None:
        if self.in_flight >= self.bound:
            self._on_unsent(
                item,
                f"not sent: {self.in_flight} requests in flight reached this dispatcher's "
                f"bound ({self.bound})",
            )
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.sent += 1
        assert self.pool is not None
        self.pool.send(item.request, lambda resp, item=item: self._done(item, resp))

    def _done(self, item: SendItem, resp: RawResponse) -> None:
        self.in_flight -= 1
        self._on_response(item, resp)
        if self._closed and not self.in_flight and not self._queue:
            self._idle.set()
