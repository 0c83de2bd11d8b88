"""The dispatcher: a Ray actor that sends each request at its scheduled time, open loop.

Rows arrive (sorted by `arrival_s`) a few seconds ahead of their time. One asyncio pump sleeps
until the next row is due and starts its request as a task: it never waits for a response, so a
slow server cannot slow the schedule (no coordinated omission). A bound on requests in flight
protects the client; a row that finds the bound reached is not sent and is recorded as
`client_overload`, never dropped silently. Finished records wait in the actor until the driver
drains them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp

from load_tests.client import send_request
from load_tests.records import new_record

__all__ = ["Dispatcher"]

_YIELD_EVERY = 64  # rows started back to back before the pump lets responses be handled


class Dispatcher:
    """Sends its share of a manifest on the shared schedule (use through `ray.remote`).

    Args:
        index: this dispatcher's number (for messages).
        url: the full endpoint URL.
        api: 'easel' or 'openai'.
        max_in_flight: this dispatcher's share of the client's in-flight bound.
        timeout_s: per-request timeout.
        images_dir: where images are written; None keeps only their sha256.
        headers: extra request headers (e.g. Authorization); kept in memory only.
    """

    def __init__(
        self,
        index: int,
        url: str,
        api: str,
        max_in_flight: int,
        timeout_s: float,
        images_dir: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.index = index
        self.url, self.api = url, api
        self.limit = max_in_flight
        self.timeout_s = timeout_s
        self.images_dir = Path(images_dir) if images_dir else None
        self.headers = headers or None
        self._start: float | None = None  # run start on this process's monotonic clock
        self._queue: deque[dict[str, Any]] = deque()
        self._records: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self._in_flight = 0
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No connector limit: our own bound decides, so aiohttp never queues a request
            # silently (its wait would hide inside service_ms instead of being recorded).
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _clock(self) -> float:
        assert self._start is not None
        return time.monotonic() - self._start

    async def warmup(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send warm-up rows one after another now (before the clock starts); their records.

        Their times count from the start of the warm-up, and each is scheduled when it is sent.
        """
        t0 = time.monotonic()
        clock = lambda: time.monotonic() - t0  # noqa: E731
        out = []
        for row in rows:
            row = {**row, "arrival_s": clock()}
            out.append(
                await send_request(
                    self._get_session(),
                    self.url,
                    self.api,
                    row,
                    clock=clock,
                    timeout_s=self.timeout_s,
                    images_dir=None,
                    headers=self.headers,
                )
            )
        return out

    async def start(self, start_wall: float) -> None:
        """Fix the run start (a time.time() value shared by all dispatchers) and start pumping."""
        # Wall clocks agree across processes; monotonic is what asyncio sleeps on.
        self._start = start_wall - time.time() + time.monotonic()
        self._wake = asyncio.Event()
        self._get_session()
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def schedule(self, rows: list[dict[str, Any]]) -> int:
        """Queue rows (sorted by arrival_s, after those queued before); returns the queue length."""
        self._queue.extend(rows)
        if self._wake is not None:
            self._wake.set()
        return len(self._queue)

    async def drain(self) -> dict[str, Any]:
        """Finished records since the last drain, and the requests in flight and queued now."""
        records, self._records = self._records, []
        return {"records": records, "in_flight": self._in_flight, "queued": len(self._queue)}

    async def finish(self) -> None:
        """Wait until every queued row is sent and every response is in; close the client."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._pump_task is not None:
            await self._pump_task
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _pump(self) -> None:
        assert self._wake is not None
        started = 0
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._queue[0]["arrival_s"] - self._clock()
            if delay > 0:
                # Only earlier rows could need an earlier wake-up, and rows come sorted.
                await asyncio.sleep(delay)
                continue
            self._fire(self._queue.popleft())
            started += 1
            if started % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _fire(self, row: dict[str, Any]) -> None:
        if self._in_flight >= self.limit:
            self._records.append(
                new_record(
                    row,
                    error=f"not sent: {self._in_flight} requests in flight reached this "
                    f"dispatcher's bound ({self.limit})",
                    error_class="client_overload",
                    scheduled_s=row["arrival_s"],
                )
            )
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, row: dict[str, Any]) -> None:
        try:
            rec = await send_request(
                self._get_session(),
                self.url,
                self.api,
                row,
                clock=self._clock,
                timeout_s=self.timeout_s,
                images_dir=self.images_dir,
                headers=self.headers,
            )
        except Exception as exc:  # send_request never raises; this guards "nothing lost"
            rec = new_record(
                row, error=repr(exc)[:500], error_class="client_error", scheduled_s=row["arrival_s"]
            )
        finally:
            self._in_flight -= 1
        self._records.append(rec)
