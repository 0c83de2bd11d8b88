"""Shape buckets: which requests share a forward pass, when that pass starts, and the pass itself.

A model replica runs one forward pass at a time. `ShapeBatcher` keeps one queue (bucket) per
`ResolvedRequest.batch_key()` (width, height, steps, guidance, the reference images) and starts the
next pass the moment the previous one ends, from the bucket that is due:

- a bucket with `max_batch_size` requests is due at once;
- otherwise a bucket is due when its oldest request has waited `wait_s`.

So the batch size follows the forward pass: requests that arrived while a pass ran have already
waited longer than `wait_s` (a pass takes far longer than the wait on any real model), and the
next pass takes everything queued for its shape, up to `max_batch_size`. Only an idle replica
waits, for at most `wait_s`, for a first request's companions. Among due buckets the one whose
oldest request is oldest goes first, so no shape starves.

Why not `@serve.batch`: its queue forms the next batch while the current one still runs, closing
it `batch_wait_timeout_s` after its first arrival, so batches are sized by the arrivals in that
window instead of by what queued during the pass; and it has one queue per method, so mixed
shapes split a batch after it was formed. The batcher reports each batch under Serve's own batch
metric names (`model.py`), so Serve's dashboards read it like any `@serve.batch` deployment.

`run_group` is one pass: prompt lengths checked, one batched pipeline call. Plain code of a
loaded pipeline and an event loop: testable without Serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from config import ModelConfig
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.results import ErrorResult

__all__ = ["BatchStats", "Batched", "ShapeBatcher", "run_group"]

_log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One request's answer from its forward pass, and how it got there."""

    result: R
    queue_ms: float  # from arrival to the start of its pass
    batch_size: int  # requests in that pass


@dataclass(frozen=True)
class BatchStats:
    """One forward pass, as Serve's batch metrics describe it."""

    size: int
    wait_ms: float  # how long its oldest request waited for the pass to start
    execution_ms: float
    queued_after: int  # requests still queued (every bucket) when it started
    queue_ms: tuple[float, ...]  # each request's wait from arrival to the start of the pass


@dataclass
class _Item:
    request: ResolvedRequest
    future: asyncio.Future[Any]
    arrived: float


class ShapeBatcher(Generic[R]):
    """Per-shape queues feeding one forward pass at a time.

    Args:
        run: Runs one batch (all of one `batch_key`) and returns one result per request, in
            order. Awaited one call at a time. An exception fails every request of that batch.
        max_batch_size: Most requests per pass.
        wait_s: How long an idle replica lets a bucket fill before running it anyway.
        on_batch: Called after each pass with its `BatchStats` (metrics); must not raise.
        key: A request's bucket (default `ResolvedRequest.batch_key`).
    """

    def __init__(
        self,
        run: Callable[[list[ResolvedRequest]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        wait_s: float,
        on_batch: Callable[[BatchStats], None] | None = None,
        key: Callable[[ResolvedRequest], Hashable] = ResolvedRequest.batch_key,
    ) -> None:
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(f"need max_batch_size >= 1 and wait_s >= 0, got {max_batch_size}, "
                             f"{wait_s}")  # fmt: skip
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._on_batch = on_batch
        self._key = key
        self._buckets: dict[Hashable, deque[_Item]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a pass (every bucket)."""
        return sum(len(b) for b in self._buckets.values())

    async def submit(self, request: ResolvedRequest) -> Batched[R]:
        """Queue `request` in its bucket; returns its result once its pass ran."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future[Batched[R]] = asyncio.get_running_loop().create_future()
        bucket = self._buckets.setdefault(self._key(request), deque())
        bucket.append(_Item(request, future, time.perf_counter()))
        self._wake.set()  # the loop looks again (a full bucket, or a new deadline)
        return await future

    def _due(self, now: float) -> tuple[Hashable | None, float | None]:
        """(the bucket to run now, or None; else when the next one falls due)."""
        best: tuple[bool, float, Hashable] | None = None
        deadline: float | None = None
        for key, bucket in self._buckets.items():
            while bucket and bucket[0].future.done():  # cancelled while queued
                bucket.popleft()
            if not bucket:
                continue
            head = bucket[0].arrived
            full = len(bucket) >= self.max_batch_size
            if full or now - head >= self.wait_s:
                rank = (not full, head, key)  # full buckets first, then the oldest request
                if best is None or rank[:2] < best[:2]:
                    best = rank
            else:
                due = head + self.wait_s
                deadline = due if deadline is None else min(deadline, due)
        for key in [k for k, b in self._buckets.items() if not b]:
            del self._buckets[key]
        return (None, deadline) if best is None else (best[2], None)

    def _take(self, key: Hashable) -> list[_Item]:
        bucket = self._buckets[key]
        items: list[_Item] = []
        while bucket and len(items) < self.max_batch_size:
            item = bucket.popleft()
            if not item.future.done():
                items.append(item)
        return items

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            key, deadline = self._due(time.perf_counter())
            if key is None:
                timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            items = self._take(key)
            if items:
                await self._run_batch(items)

    async def _run_batch(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        queued_after = self.queued
        try:
            results = list(await self._run([it.request for it in items]))
            if len(results) != len(items):
                raise RuntimeError(f"a batch of {len(items)} gave {len(results)} results")
        except Exception as exc:  # the run's own errors are records; this is a bug or a crash
            _log.exception("batch failed")
            for it in items:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        ended = time.perf_counter()
        for it, res in zip(items, results, strict=True):
            if not it.future.done():
                it.future.set_result(Batched(res, (started - it.arrived) * 1000, len(items)))
        if self._on_batch is not None:
            try:
                waits = tuple((started - it.arrived) * 1000 for it in items)
                self._on_batch(
                    BatchStats(len(items), waits[0], (ended - started) * 1000, queued_after, waits)
                )
            except Exception:  # metrics must never stop serving
                _log.debug("on_batch failed", exc_info=True)


def _open_image(data: bytes) -> Any:
    """A reference (bytes the API checked: PNG, JPEG or WebP) as the RGB image a pipeline takes."""
    import io

    from PIL import Image

    from serve_apps.api.images import ALLOWED_FORMATS

    with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
        return img.convert("RGB")


def run_group(
    pipe: Any, model: ModelConfig, token_limit: int, requests: Sequence[ResolvedRequest]
) -> tuple[list[Any], float]:
    """Check prompt lengths, run one forward pass for the rest (all of one `batch_key`).

    Returns one PIL image or ErrorResult per request, and the forward pass's seconds (0 when
    every prompt was refused). Runs on the replica's one inference thread: fast tokenizers are
    not safe to call from two threads at once, and the pipeline uses the same tokenizer. Encoding
    the images is the caller's (off this thread).
    """
    from serve_apps.provider.pipelines import count_prompt_tokens, generate

    out: list[Any] = [None] * len(requests)
    run = []
    for i, r in enumerate(requests):
        n = count_prompt_tokens(pipe, model, r.prompt)
        if n > token_limit:
            out[i] = ErrorResult(
                422,
                "prompt_too_long",
                f"prompt: {n} tokens for model {model.name!r}, above its limit of "
                f"{token_limit} (prompts are never truncated)",
                "client_error",
            )
        else:
            run.append(i)
    infer_s = 0.0
    if run:
        first = requests[run[0]]
        # One group shares its references (batch_key); decoding them is part of the pass.
        t0 = time.perf_counter()
        references = [_open_image(data) for data in first.references]
        images = generate(
            pipe,
            [requests[i].prompt for i in run],
            width=first.width,
            height=first.height,
            steps=first.steps,
            guidance=first.guidance,
            seeds=[requests[i].seed for i in run],
            negative_prompts=[requests[i].negative_prompt for i in run],
            images=references,
        )
        infer_s = time.perf_counter() - t0
        for i, img in zip(run, images, strict=True):
            out[i] = img
    return out, infer_s
