"""Shape buckets: what shares a forward pass and when it starts (the pass itself runs in test_app).

A fake `run` stands in for the forward pass: it records each batch it was given and holds it
until the test releases it, so each test decides exactly what is queued while a pass runs.
"""

from __future__ import annotations

import asyncio

import pytest

from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.batcher import BatchStats, ShapeBatcher


def _req(
    i: int, side: int = 32, steps: int = 4, guidance: float = 0.0, refs: tuple[bytes, ...] = ()
) -> ResolvedRequest:
    return ResolvedRequest(f"r{i}", "m", "p", side, side, steps, guidance, i, references=refs)


class _Pass:
    """A forward pass the test opens and closes: `batches` holds the request ids of each."""

    def __init__(self, hold: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.hold = hold
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, requests: list[ResolvedRequest]) -> list[str]:
        self.batches.append([r.request_id for r in requests])
        self.started.set()
        if self.hold:
            await self.gate.wait()
            self.gate.clear()
        return [f"img-{r.request_id}" for r in requests]

    async def wait_batches(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.batches) < n:
                await asyncio.sleep(0.001)


def test_batch_key_splits_shape_steps_guidance_and_references():
    a = _req(0)
    assert a.batch_key() == _req(1).batch_key()
    others = [_req(2, side=48), _req(3, steps=2), _req(4, guidance=2.0)]
    assert all(o.batch_key() != a.batch_key() for o in others)
    with_ref = _req(5, refs=(b"png",))
    assert with_ref.batch_key() != a.batch_key()


async def test_an_idle_replica_waits_its_wait_time_for_companions_then_runs():
    run = _Pass(hold=False)
    b = ShapeBatcher(run, max_batch_size=4, wait_s=0.05)
    first = asyncio.create_task(b.submit(_req(0)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(b.submit(_req(1)))
    out = await asyncio.gather(first, second)
    assert run.batches == [["r0", "r1"]]
    assert [o.result for o in out] == ["img-r0", "img-r1"]
    assert [o.batch_size for o in out] == [2, 2]
    assert out[0].queue_ms >= 40  # waited for the window, not sent alone at once


async def test_a_full_bucket_runs_at_once_without_waiting():
    run = _Pass(hold=False)
    b = ShapeBatcher(run, max_batch_size=3, wait_s=30)
    out = await asyncio.wait_for(asyncio.gather(*(b.submit(_req(i)) for i in range(3))), 5)
    assert run.batches == [["r0", "r1", "r2"]]
    assert all(o.batch_size == 3 for o in out)


async def test_a_busy_replica_takes_everything_queued_for_the_shape_when_the_pass_ends():
    run = _Pass()
    b = ShapeBatcher(run, max_batch_size=4, wait_s=0.001)
    tasks = [asyncio.create_task(b.submit(_req(0)))]
    await run.wait_batches(1)  # r0 alone: the replica was idle
    # While that pass runs, 6 requests arrive one at a time, each well past the wait time.
    for i in range(1, 7):
        tasks.append(asyncio.create_task(b.submit(_req(i))))
        await asyncio.sleep(0.005)
    assert len(run.batches) == 1  # nothing starts while the pass runs
    run.gate.set()
    await run.wait_batches(2)
    run.gate.set()
    await run.wait_batches(3)
    run.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    # Not batches sized by arrivals per wait window: all queued, up to max_batch_size.
    assert run.batches == [["r0"], ["r1", "r2", "r3", "r4"], ["r5", "r6"]]


async def test_shapes_batch_apart_and_the_oldest_due_bucket_goes_first():
    run = _Pass()
    b = ShapeBatcher(run, max_batch_size=4, wait_s=0.001)
    tasks = [asyncio.create_task(b.submit(_req(0, side=16)))]
    await run.wait_batches(1)
    for i, side in [(1, 48), (2, 32), (3, 48), (4, 32), (5, 48)]:
        tasks.append(asyncio.create_task(b.submit(_req(i, side=side))))
        await asyncio.sleep(0.002)
    for n in (2, 3):
        run.gate.set()
        await run.wait_batches(n)
    run.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert run.batches == [["r0"], ["r1", "r3", "r5"], ["r2", "r4"]]


async def test_a_full_bucket_goes_before_an_older_partial_one():
    run = _Pass()
    b = ShapeBatcher(run, max_batch_size=2, wait_s=0.001)
    tasks = [asyncio.create_task(b.submit(_req(0, side=16)))]
    await run.wait_batches(1)
    for i, side in [(1, 48), (2, 32), (3, 32)]:
        tasks.append(asyncio.create_task(b.submit(_req(i, side=side))))
        await asyncio.sleep(0.002)
    for n in (2, 3):
        run.gate.set()
        await run.wait_batches(n)
    run.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert run.batches == [["r0"], ["r2", "r3"], ["r1"]]


async def test_cancelled_requests_leave_their_bucket_and_stats_report_each_pass():
    run = _Pass()
    seen: list[BatchStats] = []
    b = ShapeBatcher(run, max_batch_size=4, wait_s=0.001, on_batch=seen.append)
    first = asyncio.create_task(b.submit(_req(0)))
    await run.wait_batches(1)
    gone = asyncio.create_task(b.submit(_req(1)))
    kept = asyncio.create_task(b.submit(_req(2)))
    await asyncio.sleep(0.005)
    gone.cancel()  # the client went away while queued
    assert b.queued == 2  # still listed until the loop looks at its bucket
    run.gate.set()
    await run.wait_batches(2)
    run.gate.set()
    await asyncio.wait_for(asyncio.gather(first, kept), 5)
    assert run.batches == [["r0"], ["r2"]]
    assert [s.size for s in seen] == [1, 1]
    assert seen[1].wait_ms >= 5 and len(seen[1].queue_ms) == 1
    assert b.queued == 0


async def test_a_crashed_pass_fails_its_requests_and_the_batcher_keeps_serving():
    calls = 0

    async def run(requests: list[ResolvedRequest]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return ["ok"] * len(requests)

    b = ShapeBatcher(run, max_batch_size=2, wait_s=0.001)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(b.submit(_req(0)), 5)
    assert (await asyncio.wait_for(b.submit(_req(1)), 5)).result == "ok"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        ShapeBatcher(_Pass(), max_batch_size=0, wait_s=0.01)


def test_batch_key_splits_by_reference_count_and_reference_set():
    """The Flux.2 pipelines take one `image=` list per call: only equal photo sets share a pass."""
    a, b = (b"photo-a",), (b"photo-b",)
    keys = [r.batch_key() for r in (_req(0), _req(1, refs=a), _req(2, refs=a), _req(3, refs=b),
                                    _req(4, refs=a + b), _req(5))]  # fmt: skip
    assert keys[0] == keys[5] and keys[1] == keys[2]
    assert len({keys[0], keys[1], keys[3], keys[4]}) == 4


def test_run_group_conditions_one_pass_on_its_references():
    """A group of requests sharing one photo set: one Flux.2 pass, every image conditioned."""

    import numpy as np
    from PIL import Image

    from config import load_config
    from serve_apps.api.images import encode_png
    from serve_apps.provider.batcher import run_group
    from serve_apps.provider.pipelines import load_pipeline, prompt_token_limit

    model = load_config().model("flux2-schnell")
    pipe = load_pipeline(model, device="cpu")
    rng = np.random.default_rng(0)
    photo = encode_png(Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)))
    reqs = [_req(i, 64, steps=2, guidance=1.0, refs=(photo,)) for i in range(2)]
    out, infer_s = run_group(pipe, model, prompt_token_limit(pipe, model), reqs)
    plain, _ = run_group(pipe, model, prompt_token_limit(pipe, model), [_req(0, 64, 2, 1.0)])
    assert infer_s > 0 and all(isinstance(o, Image.Image) for o in out)
    pixels = [np.asarray(o, dtype=np.int16) for o in (*out, *plain)]
    assert np.abs(pixels[0] - pixels[2]).max() > 0  # the same seed, conditioned: not the same
