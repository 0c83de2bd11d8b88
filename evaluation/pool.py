"""The scorer actor pool: Ray actors that load their networks once and return merged statistics.

Each actor holds one `evaluation.scorer.Scorer`. Batches of images go to whichever actor is free
(a `ray.util.ActorPool`, each actor twice, so its next batch decodes in a second thread while the
current one is in the networks); at the end the driver merges every actor's state, which gives
exactly what one actor scoring everything would have given.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from evaluation.scorer import (
    CONDITIONED_RECORD_KEYS,
    GroupStats,
    ImageItem,
    PreparedBatch,
    Scorer,
    ScorerSpec,
    ScorerState,
)

# The scorer's names stay importable from here, where they lived before evaluation.scorer.
__all__ = [
    "CONDITIONED_RECORD_KEYS",
    "GroupStats",
    "ImageItem",
    "PreparedBatch",
    "ProgressPrinter",
    "Scorer",
    "ScorerPool",
    "ScorerSpec",
    "ScorerState",
]


class _ScorerActor:
    """Ray actor body: one Scorer, torch threads matched to the actor's CPUs.

    Run with `max_concurrency=2` (the pool's `prefetch`), two `score_batch` calls overlap: one
    decodes its images while the other holds the networks. The lock keeps the state and the
    networks to one batch at a time, so the statistics are what a sequential actor would keep.
    """

    def __init__(self, spec: ScorerSpec, num_cpus: float, num_gpus: float) -> None:
        torch.set_num_threads(max(1, int(num_cpus)))
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.scorer = Scorer(spec, device)
        self._lock = threading.Lock()

    def ready(self) -> str:
        return self.scorer.device

    def score_batch(self, items: list[ImageItem]) -> list[dict[str, Any]]:
        prepared = self.scorer.prepare(items)
        with self._lock:
            return self.scorer.add(prepared)

    def state(self) -> ScorerState:
        with self._lock:
            return self.scorer.state

    def reset(self) -> None:
        with self._lock:
            self.scorer.reset()


class ScorerPool:
    """A pool of scorer actors on the current Ray cluster.

    Args:
        spec: networks to load (once per actor).
        actors: number of actors.
        num_cpus: CPUs per actor (its torch threads too).
        num_gpus: GPUs per actor; > 0 places actors on GPU nodes and scores on CUDA.
        prefetch: each actor decodes its next batch in a second thread while the current one is
            in the networks (default True; False: one batch at a time, decode then networks).
    """

    def __init__(
        self,
        spec: ScorerSpec,
        *,
        actors: int,
        num_cpus: float = 1,
        num_gpus: float = 0,
        prefetch: bool = True,
    ) -> None:
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        remote = ray.remote(_ScorerActor).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=2 if prefetch else 1
        )
        self._actors = [remote.remote(spec, num_cpus, num_gpus) for _ in range(actors)]
        self.devices = ray.get([a.ready.remote() for a in self._actors])

    def score(
        self,
        items: Iterable[ImageItem],
        *,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Score every item; returns the per-item records (order not kept)."""
        from ray.util import ActorPool

        # Each actor appears twice: its second batch decodes (with prefetch) or waits in its queue
        # while the first is in the networks, so the actor never idles on the driver's round trip.
        pool = ActorPool(self._actors * 2)
        records: list[dict[str, Any]] = []

        def collect() -> None:
            records.extend(pool.get_next_unordered())
            if progress:
                progress(len(records))

        for batch in _chunks(items, batch_size):
            while not pool.has_free():
                collect()
            pool.submit(lambda a, b: a.score_batch.remote(b), batch)
        while pool.has_next():
            collect()
        return records

    def states(self) -> list[ScorerState]:
        """Each actor's own statistics."""
        import ray

        return ray.get([a.state.remote() for a in self._actors])

    def state(self) -> ScorerState:
        """Every actor's statistics, merged."""
        return ScorerState.merge_all(self.states())

    def reset(self) -> None:
        import ray

        ray.get([a.reset.remote() for a in self._actors])

    def close(self) -> None:
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []

    def __enter__(self) -> ScorerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ProgressPrinter:
    """Prints 'scored n/total images (x img/s)' to stderr at most every `every_s` seconds."""

    def __init__(self, total: int, label: str = "scored", every_s: float = 2.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self._start = self._last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and done < self.total:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        print(f"{self.label} {done}/{self.total} images ({rate:.1f} img/s)", file=sys.stderr)
