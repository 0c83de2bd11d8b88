"""The dispatcher: a Ray actor that reads its share of the manifest and sends it on schedule.

Three threads, so that sending on time never waits on anything else:

- the **feeder** pulls blocks of validated rows from its Ray Data iterator (one of a
  `streaming_split`), no further ahead than a few seconds of schedule, records the rejected rows
  and encodes each good row's request body;
- the **timer loop** (load_tests.sender) sends each request when it is due and reads responses;
- the **recorder** turns each response into its record (parsing, base64 decoding, hashing,
  writing the image) and writes records as crash-safe part files (load_tests.records).

The driver never sees a row: it starts the clock, reads progress counters, and waits.
Every row this dispatcher is given ends as exactly one record: sent (ok or failed), rejected by
validation, or not sent because the open-request bound was reached (`client_overload`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from load_tests.client import JSON_HEADERS, KEEP_HEADERS, Client, finish_record, request_body
from load_tests.http1 import Endpoint, RawResponse
from load_tests.manifest import rejected_rows
from load_tests.process import open_request_bound, protect_process, rss_bytes
from load_tests.records import PartWriter, new_record, rejected_record
from load_tests.sender import Sender, SendItem

__all__ = ["HORIZON_S", "Dispatcher"]

HORIZON_S = 5.0  # rows are taken from the stream no further than this ahead of their time
_FLUSH_S = 1.0  # records wait at most this long in memory before they are in a part file
_FLUSH_ROWS = 1_024
_RECORD_EVERY_S = 0.005  # the recorder takes what finished in batches, not one wake-up each
_PRECONNECT = 4  # connections opened before the clock starts, so the first sends find one
# A thread waiting for the GIL asks for it after this long (CPython's default is 5 ms, which
# would let the feeder or recorder hold the timer loop back by up to 5 ms). At 1,000 req/s the
# recorder holds the GIL often enough that the timer loop waits out this interval on a good
# share of its sends: 0.1 ms took the send lag p99 from 2.0-2.2 to 1.4-1.6 ms against 0.5 ms,
# for a few % more dispatcher CPU (docs/performance.md, "A timer loop that does nothing but send").
_SWITCH_INTERVAL_S = 0.0001
_BODY_COLUMNS = (
    "job_id",
    "row",
    "arrival_s",
    "model",
    "niche",
    "tenant",
    "prompt",
    "width",
    "height",
    "steps",
    "seed",
    "reference_image",
)


class Dispatcher:
    """Sends its share of a manifest on the shared schedule (use through `ray.remote`).

    Args:
        index: this dispatcher's number (names its part files).
        url: the full endpoint URL.
        api: 'easel' or 'openai'.
        timeout_s: per-request timeout.
        images_dir: where images are written; None keeps only their sha256.
        records_dir: the run folder's parts folder.
        headers: extra request headers (e.g. Authorization); kept in memory only.
        attempt: 0 for a first run, n for the n-th resume (written into each record).
        dispatchers: how many dispatchers share the machine (splits the memory bound).
        max_in_flight: an explicit bound on this dispatcher's open requests; None: memory.
        priority: 'auto', 'ray', 'normal', 'high' or 'realtime' (see
            load_tests.process.protect_process).
        cpus: CPUs to pin this process to; None leaves it.
        horizon_s: how far ahead of their time rows are taken from the stream.
    """

    def __init__(
        self,
        index: int,
        url: str,
        api: str,
        timeout_s: float,
        images_dir: str | None,
        records_dir: str,
        headers: dict[str, str] | None = None,
        *,
        attempt: int = 0,
        dispatchers: int = 1,
        max_in_flight: int | None = None,
        priority: str = "auto",
        cpus: list[int] | None = None,
        horizon_s: float = HORIZON_S,
    ) -> None:
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        # Before any thread of ours starts, so that each inherits it.
        self.priority_applied, self.warning = protect_process(priority, cpus)
        self.index, self.api, self.attempt = index, api, attempt
        self.url, self.timeout_s = url, timeout_s
        self.images_dir = Path(images_dir) if images_dir else None
        self.headers = {**JSON_HEADERS, **(headers or {})}
        self.priority, self.cpus, self.horizon_s = priority, cpus, horizon_s
        self.bound, self.bound_by = open_request_bound(dispatchers, max_in_flight)
        self._writer = PartWriter(records_dir, f"part-a{attempt}-d{index}", _FLUSH_ROWS)
        self._inbox: deque[tuple] = deque()  # appended by the other threads, taken by the recorder
        self._recorded = threading.Event()
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self.done = self.ok = self.failed = self.rejected = 0
        self.rss_at_start = 0
        self.gc_ms = self.gc_max_ms = self._gc_t0 = 0.0  # collector pauses while sending
        self.most_open = (0, 0)  # (requests open, RSS then), sampled once a second
        self._feed_error: BaseException | None = None
        self._first = threading.Event()
        self._fed = threading.Event()
        self._started = threading.Event()
        self._stop = threading.Event()
        self._recorder = threading.Thread(target=self._record_loop, name="easel-recorder")
        self._recorder.start()
        self.endpoint = Endpoint.of(url, self.headers)
        self.sender = Sender(
            self.endpoint,
            timeout_s,
            self.bound,
            self._on_response,
            self._on_unsent,
            KEEP_HEADERS,
        )
        self._feeder: threading.Thread | None = None
        self._origin = 0.0

    # --- actor methods ------------------------------------------------------------------------

    async def feed(self, iterator: Any, origin_s: float = 0.0) -> dict[str, Any]:
        """Start pulling from a Ray Data iterator; returns once the rows of the first
        `horizon_s` after `origin_s` (where the clock will start) are in, or the stream ended.

        Filling the horizon before the clock starts keeps that burst of work off the schedule.
        """
        self._origin = origin_s
        self._feeder = threading.Thread(
            target=self._feed_loop, args=(iterator.iter_batches,), name="easel-feeder"
        )
        self._feeder.start()
        await asyncio.to_thread(self._first.wait)
        if self._feed_error is not None:
            raise RuntimeError(f"dispatcher {self.index}: reading the manifest failed") from (
                self._feed_error
            )
        self._settle()
        return {"queued": self.sender.queued, "bound": self.bound, "bound_by": self.bound_by}

    def _settle(self) -> None:
        """Before the clock starts: freeze what is allocated, open a few connections."""
        # Everything allocated so far (Ray, pyarrow, pandas: a million objects) lives as long as
        # the process: keep it out of the collector's passes, which would otherwise hold the GIL
        # for ~0.1 s each time they walk it.
        gc.collect()
        gc.freeze()
        if self._gc_timer not in gc.callbacks:
            gc.callbacks.append(self._gc_timer)
        self.sender.run(self.sender.preconnect(_PRECONNECT))

    async def schedule(self, blocks: list[pa.Table], origin_s: float = 0.0) -> None:
        """Feed validated blocks directly (no Ray Data; for tests and small callers), then end."""
        self._origin = origin_s

        def batches(**_: Any) -> Iterable[pa.Table]:
            return iter(blocks)

        self._feeder = threading.Thread(target=self._feed_loop, args=(batches,))
        self._feeder.start()
        await asyncio.to_thread(self._first.wait)
        self._settle()

    async def warmup(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send warm-up rows one after another now (before the clock starts); their records.

        Their times count from the start of the warm-up, and each is scheduled when it is sent.
        """

        async def run() -> list[dict[str, Any]]:
            out = []
            async with Client(
                self.url, self.api, timeout_s=self.timeout_s, headers=self.headers
            ) as client:
                for row in rows:
                    row = {**row, "arrival_s": client.clock()}
                    out.append(await client.send(row, attempt=self.attempt))
            return out

        return await asyncio.wrap_future(self.sender.run(run()))

    async def start(self, start_wall: float, origin_s: float = 0.0) -> None:
        """Start the clock: at `start_wall` (a time.time() shared by all dispatchers) it reads
        `origin_s`, and each row is sent when the clock reaches its arrival_s."""
        # Wall clocks agree across processes; monotonic is what the loop sleeps on.
        self.rss_at_start = rss_bytes()[0]
        self.sender.start(start_wall - time.time() + time.monotonic(), origin_s)
        self._started.set()

    def _gc_timer(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._gc_t0) * 1000
            self.gc_max_ms = max(self.gc_max_ms, ms)
            self.gc_ms += ms

    async def progress(self) -> dict[str, Any]:
        """Counters now, and the latencies (ms) of the ok records since the last call."""
        with self._lock:
            lat, self._latencies = self._latencies, []
        s = self.sender
        return {
            "sent": s.sent,
            "in_flight": s.in_flight,
            "queued": s.queued,
            "done": self.done,
            "ok": self.ok,
            "failed": self.failed,
            "rejected": self.rejected,
            "latencies_ms": lat,
            "fed": self._fed.is_set(),
        }

    async def finish(self) -> dict[str, Any]:
        """Wait until every row is sent, answered and recorded; return this dispatcher's figures."""
        if self._feeder is None:  # never fed: nothing to send
            self._fed.set()
            self.sender.close_input()
        else:
            await asyncio.to_thread(self._feeder.join)
        if self._feed_error is not None:
            raise RuntimeError(f"dispatcher {self.index}: reading the manifest failed") from (
                self._feed_error
            )
        await asyncio.to_thread(self.sender.wait_idle)
        self._recorded.set()  # the recorder takes what is left, writes it and ends
        await asyncio.to_thread(self._recorder.join)
        self.sender.stop()
        current, peak = rss_bytes()
        return {
            "index": self.index,
            "records": self._writer.rows,
            "sent": self.sender.sent,
            "bound": self.bound,
            "bound_by": self.bound_by,
            "max_in_flight": self.sender.max_in_flight,
            "max_queued": self.sender.max_queued,
            "rss_bytes": current,
            "peak_rss_bytes": peak,
            "rss_at_start_bytes": self.rss_at_start,
            "most_open_sampled": self.most_open[0],
            "rss_at_most_open_bytes": self.most_open[1],
            "connections_opened": self.sender.pool.opened if self.sender.pool else 0,
            "priority": self.priority_applied,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
            "scheduler": "realtime" if os.sched_getscheduler(0) == os.SCHED_RR else "normal",
            "gc_pause_total_ms": round(self.gc_ms, 1),
            "gc_pause_max_ms": round(self.gc_max_ms, 2),
            "warning": self.warning,
        }

    # --- the feeder thread --------------------------------------------------------------------

    def _feed_loop(self, iter_batches: Any) -> None:
        try:
            blocks = iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
            for block in blocks:
                self._take(block)
                self._wait_for_horizon()
                if self._stop.is_set():
                    break
        except BaseException as exc:  # surfaced by feed()/finish(); the rows are not lost:
            self._feed_error = exc  # they have no record, so a resume sends them
        finally:
            self._fed.set()
            self._first.set()
            self.sender.close_input()

    def _wait_for_horizon(self) -> None:
        s = self.sender
        if not self._started.is_set():
            if s.last_due - self._origin <= self.horizon_s:
                return  # before the start: fill the first horizon
            self._first.set()
            self._started.wait()
        while s.last_due - s.clock() > self.horizon_s and not self._stop.is_set():
            time.sleep(0.02)

    def _take(self, block: pa.Table) -> None:
        """Record a block's rejected rows; encode and hand over its good rows."""
        if not isinstance(block, pa.Table):
            block = pa.Table.from_batches([block])
        errors = block.column("error")
        if errors.null_count < block.num_rows:
            for rej in rejected_rows(block):
                self._inbox.append(("rec", rejected_record(rej) | {"attempt": self.attempt}))
            block = block.filter(pc.is_null(errors))
        if not block.num_rows:
            return
        cols = {c: block.column(c).to_pylist() for c in _BODY_COLUMNS}
        items = []
        for values in zip(*cols.values(), strict=True):
            r = dict(zip(_BODY_COLUMNS, values, strict=True))
            try:
                data = self.endpoint.request(request_body(r, self.api))
            except Exception as exc:  # a row the reader let through but we cannot encode
                rec = new_record(r, scheduled_s=r["arrival_s"], attempt=self.attempt)
                rec.update(error=f"cannot build the request: {exc!r}"[:500])
                self._inbox.append(("rec", rec | {"error_class": "client_error"}))
                continue
            items.append(
                SendItem(
                    r["arrival_s"], r["row"], r["job_id"], r["model"], r["niche"], r["tenant"], data
                )
            )
        self.sender.submit(items)

    # --- called on the timer loop: queue only -------------------------------------------------

    def _on_response(self, item: SendItem, resp: RawResponse) -> None:
        self._inbox.append(("resp", item, resp))

    def _on_unsent(self, item: SendItem, reason: str) -> None:
        self._inbox.append(("unsent", item, reason))

    # --- the recorder thread ------------------------------------------------------------------

    def _record_loop(self) -> None:
        inbox, last_flush = self._inbox, time.monotonic()
        while True:
            ending = self._recorded.is_set()  # read before draining: nothing comes after
            while inbox:
                self._count(self._record(inbox.popleft()))
            if ending:
                self._writer.flush()
                return
            if time.monotonic() - last_flush >= _FLUSH_S:
                self._writer.flush()
                last_flush = time.monotonic()
                self._sample_memory()
            time.sleep(_RECORD_EVERY_S)

    def _sample_memory(self) -> None:
        """Once a second: this process's RSS when the most requests were open (what an open
        request costs: see benchmarks/load_generator.py --scenario open)."""
        open_now = self.sender.in_flight
        if open_now > self.most_open[0]:
            self.most_open = (open_now, rss_bytes()[0])

    def _record(self, work: tuple) -> dict[str, Any]:
        kind = work[0]
        if kind == "rec":
            return work[1]
        item = work[1]
        if kind == "unsent":
            return new_record(
                item.meta(),
                error=work[2],
                error_class="client_overload",
                scheduled_s=item.due,
                attempt=self.attempt,
            )
        return finish_record(item.meta(), work[2], self.api, self.images_dir, attempt=self.attempt)

    def _count(self, rec: dict[str, Any]) -> None:
        self._writer.write((rec,))
        if rec["error_class"] == "rejected":
            self.rejected += 1
            return
        self.done += 1
        if rec["ok"]:
            self.ok += 1
            with self._lock:
                self._latencies.append(rec["latency_ms"])
        else:
            self.failed += 1
