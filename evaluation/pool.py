"""The scorer actor pool: Ray actors that load their networks once and return merged statistics.

Each actor holds one `evaluation.scorer.Scorer`. Batches of images go to whichever actor is free
(each actor has two in hand, so its next batch decodes in a second thread while the current one
is in the networks); at the end the driver merges every actor's state, which gives exactly what
one actor scoring everything would have given.

An actor that dies mid-scoring (its process killed, out of memory) takes its statistics with it.
So the driver keeps each batch an actor has scored until that actor's state holding it has been
*banked* (taken back by the driver: every `bank_every` batches per actor, and at the end); when
an actor dies, a fresh one replaces it and every batch of the dead one not yet banked is scored
again, its earlier records dropped. Each image is then in the merged statistics exactly once,
and the driver holds at most `bank_every` batches per actor.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
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
        self._unbanked: list[int] = []  # batch ids in the state since the last `take`

    def ready(self) -> str:
        return self.scorer.device

    def score_batch(self, items: list[ImageItem], batch_id: int = -1) -> list[dict[str, Any]]:
        prepared = self.scorer.prepare(items)
        with self._lock:
            records = self.scorer.add(prepared)
            self._unbanked.append(batch_id)
            return records

    def take(self) -> tuple[ScorerState, list[int]]:
        """The state and the batches in it, handed over; the actor starts a fresh state."""
        with self._lock:
            state, ids = self.scorer.state, self._unbanked
            self.scorer.reset()
            self._unbanked = []
            return state, ids

    def state(self) -> ScorerState:
        with self._lock:
            return self.scorer.state

    def reset(self) -> None:
        with self._lock:
            self.scorer.reset()
            self._unbanked = []


class ScorerPool:
    """A pool of scorer actors on the current Ray cluster.

    Args:
        spec: networks to load (once per actor).
        actors: number of actors.
        num_cpus: CPUs per actor (its torch threads too).
        num_gpus: GPUs per actor; > 0 places actors on GPU nodes and scores on CUDA.
        prefetch: each actor decodes its next batch in a second thread while the current one is
            in the networks (default True; False: one batch at a time, decode then networks).
        bank_every: take each actor's state back after this many of its batches (the driver
            keeps a batch's images until then, to score them again if the actor dies).
        max_replacements: actors that may die and be replaced in one `score` call before it
            gives up (default: 3 per actor).
    """

    def __init__(
        self,
        spec: ScorerSpec,
        *,
        actors: int,
        num_cpus: float = 1,
        num_gpus: float = 0,
        prefetch: bool = True,
        bank_every: int = 16,
        max_replacements: int | None = None,
    ) -> None:
        import ray

        if actors < 1 or bank_every < 1:
            raise ValueError(f"actors and bank_every must be >= 1, got {actors}, {bank_every}")
        self._remote = ray.remote(_ScorerActor).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=2 if prefetch else 1
        )
        self._args = (spec, num_cpus, num_gpus)
        self._actors = [self._remote.remote(*self._args) for _ in range(actors)]
        self.devices = ray.get([a.ready.remote() for a in self._actors])
        self.bank_every = bank_every
        self.max_replacements = 3 * actors if max_replacements is None else max_replacements
        self.replaced = 0  # actors that died and were replaced, over the pool's life
        self._banked: list[ScorerState] = []

    def score(
        self,
        items: Iterable[ImageItem],
        *,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Score every item; returns the per-item records (order not kept).

        Survives actors dying (see the module doc): each item's record and statistics come
        from exactly one scoring. Raises RuntimeError past `max_replacements` deaths.
        """
        import ray
        from ray.exceptions import RayActorError

        source = enumerate(_chunks(items, batch_size))
        held: dict[int, list[ImageItem]] = {}  # scored or in flight, not yet banked
        records: dict[int, list[dict[str, Any]]] = {}
        slots = range(len(self._actors))
        owned: dict[int, list[int]] = {slot: [] for slot in slots}  # scored, in its state
        load = dict.fromkeys(slots, 0)
        banking: set[int] = set()
        again: deque[int] = deque()
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (slot, batch id; -1 for a take)
        done = 0

        def next_batch() -> int | None:
            if again:
                return again.popleft()
            for bid, batch in source:
                held[bid] = batch
                return bid
            return None

        def replace(slot: int, failed: int) -> None:
            """A fresh actor in `slot`; its batches not banked (`failed` too) go again."""
            nonlocal done
            self.replaced += 1
            if self.replaced > self.max_replacements:
                raise RuntimeError(
                    f"scorer actors died {self.replaced} times (more than {self.max_replacements})"
                )
            lost = [*owned[slot], *([failed] if failed >= 0 else [])]
            for ref, (s, b) in list(pending.items()):
                if s == slot:
                    del pending[ref]
                    if b >= 0:
                        lost.append(b)
            for bid in lost:
                done -= len(records.pop(bid, ()))
            again.extend(sorted(lost))
            owned[slot], load[slot] = [], 0
            banking.discard(slot)
            self._actors[slot] = self._remote.remote(*self._args)

        while True:
            for slot in slots:
                # A bank waits for the actor's batches in flight and holds back new ones, so the
                # batches it hands over are exactly those the driver has the records of.
                full = len(owned[slot]) >= self.bank_every
                if full and load[slot] == 0 and slot not in banking:
                    pending[self._actors[slot].take.remote()] = (slot, -1)
                    banking.add(slot)
                while load[slot] < 2 and not full and slot not in banking:
                    bid = next_batch()
                    if bid is None:
                        break
                    pending[self._actors[slot].score_batch.remote(held[bid], bid)] = (slot, bid)
                    load[slot] += 1
            if not pending:
                break
            [ref], _ = ray.wait(list(pending), num_returns=1)
            slot, bid = pending.pop(ref)
            try:
                out = ray.get(ref)
            except RayActorError:
                replace(slot, bid)
                continue
            if bid < 0:  # banked: those batches are in the driver's hands for good
                state, ids = out
                assert sorted(ids) == sorted(owned[slot]), (ids, owned[slot])
                self._banked.append(state)
                for b in ids:
                    del held[b]
                owned[slot] = []
                banking.discard(slot)
                continue
            load[slot] -= 1
            records[bid] = out
            owned[slot].append(bid)
            done += len(out)
            if progress:
                progress(done)
        return [r for bid in sorted(records) for r in records[bid]]

    def states(self) -> list[ScorerState]:
        """Each actor's own statistics (since its state was last banked)."""
        import ray

        return ray.get([a.state.remote() for a in self._actors])

    def state(self) -> ScorerState:
        """Every statistic scored, merged: what was banked and each actor's own."""
        return ScorerState.merge_all([*self._banked, *self.states()])

    def reset(self) -> None:
        import ray

        ray.get([a.reset.remote() for a in self._actors])
        self._banked = []

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
