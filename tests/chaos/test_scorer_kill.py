"""Chaos in scoring: a scorer actor SIGKILLed mid-scoring (evaluation's actor pool).

Two scorer actors score 160 images (drawn scenes of two "models", batches of 4, one corrupt
image); when a third of the records are back, the process of one actor is SIGKILLed. The pool
replaces it and scores again every batch of the dead actor that was not yet banked (see
`evaluation.pool`). The same images through an un-faulted pool are the reference.

Pass: every image exactly one record (none lost, none twice); the merged statistics equal the
un-faulted scoring's: per group the same count, the same image ids and the same feature rows,
CLIP counts equal, and the float64 sums equal up to rounding (summed in another order); one
actor replaced.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from evaluation.pool import ImageItem, ScorerPool, ScorerSpec, ScorerState
from tests.chaos._scenario import write_record
from tests.evaluation._fixtures import eval_config, model_image, png_bytes

pytestmark = pytest.mark.chaos

IMAGES, BATCH, BANK_EVERY = 160, 4, 4
CRITERION = (
    "every image exactly one record; merged statistics equal an un-faulted scoring's (counts, "
    "ids, feature rows and CLIP counts exactly, float64 sums to rounding); the actor replaced"
)


@pytest.fixture(scope="module")
def ray_scorer() -> Iterator[None]:
    from tests.conftest import local_ray

    yield from local_ray()


@pytest.fixture(scope="module")
def spec() -> ScorerSpec:
    from evaluation.clip_score import resolve_clip_spec
    from evaluation.features import resolve_feature_spec

    ev = eval_config().evaluation
    return ScorerSpec(feature=resolve_feature_spec(ev), clip=resolve_clip_spec(ev))


def _items() -> list[ImageItem]:
    rng = np.random.default_rng(3)
    prompts = ["a red fox in snow", "a product photo of a shoe", "a portrait in soft light"]
    out = [
        ImageItem(
            item_id=f"img-{i:04d}",
            group=("gen", f"model-{i % 2}", "niche"),
            data=png_bytes(model_image(i % 2, rng)),
            prompt=prompts[i % 3],
        )
        for i in range(IMAGES - 1)
    ]
    out.append(ImageItem("img-bad", ("gen", "model-0", "niche"), b"not a png", prompt="x"))
    return out


def _actor_pids() -> list[int]:
    import ray

    return sorted(
        int(a["Pid"])
        for a in ray._private.state.actors().values()
        if a.get("State") == "ALIVE" and "_ScorerActor" in (a.get("ActorClassName") or "")
    )


def _same(got: ScorerState, want: ScorerState) -> list[str]:
    """Where the two states differ (empty: equal as the module doc says)."""
    diffs = []
    if set(got.groups) != set(want.groups):
        return [f"groups {sorted(got.groups)} != {sorted(want.groups)}"]
    for key, w in want.groups.items():
        g = got.groups[key]
        if g.features.n != w.features.n or g.features.ids != w.features.ids:
            diffs.append(f"{key}: n {g.features.n} != {w.features.n} or ids differ")
            continue
        if not np.array_equal(g.features.features, w.features.features):
            diffs.append(f"{key}: feature rows differ")
        if not np.allclose(g.features.sum, w.features.sum, rtol=1e-12, atol=1e-9):
            diffs.append(f"{key}: feature sums differ beyond rounding")
        if not np.allclose(g.features.cov_sum, w.features.cov_sum, rtol=1e-12, atol=1e-9):
            diffs.append(f"{key}: covariance sums differ beyond rounding")
        if (g.clip.text_n, g.clip.ref_n) != (w.clip.text_n, w.clip.ref_n):
            diffs.append(f"{key}: CLIP counts differ")
        if not np.isclose(g.clip.text_sum, w.clip.text_sum, rtol=1e-5, atol=1e-6):
            diffs.append(f"{key}: CLIP sums differ beyond rounding")
    if [e["item_id"] for e in got.errors] != [e["item_id"] for e in want.errors]:
        diffs.append("errors differ")
    return diffs


def test_scorer_actor_kill(ray_scorer, spec):
    items = _items()
    with ScorerPool(spec, actors=2, num_cpus=1, bank_every=BANK_EVERY) as pool:
        clean = pool.score(items, batch_size=BATCH)
        want = pool.state()

    seen: dict[str, Any] = {}
    with ScorerPool(spec, actors=2, num_cpus=1, bank_every=BANK_EVERY) as pool:
        victim = _actor_pids()[0]

        def progress(done: int) -> None:
            now = time.monotonic()
            if "killed_at" not in seen and done >= IMAGES // 3:
                os.kill(victim, signal.SIGKILL)
                seen["killed_at"], seen["records_at_kill"] = now, done
            if "killed_at" in seen and "detected_at" not in seen and pool.replaced:
                seen["detected_at"] = now

        t0 = time.monotonic()
        records = pool.score(items, batch_size=BATCH, progress=progress)
        end = time.monotonic()
        got = pool.state()
        replaced = pool.replaced

    ids = [r["item_id"] for r in records]
    expected = {i.item_id for i in items}
    diffs = _same(got, want)
    record = {
        "scenario": "scorer_kill",
        "criterion": CRITERION,
        "what": f"{IMAGES} images (one corrupt: its record is a failure by design), 2 scorer "
        f"actors, batches of {BATCH}, banked every {BANK_EVERY} batches per actor; one actor "
        "SIGKILLed at a third of the records",
        "sent": len(items),
        "succeeded": sum(1 for r in records if r["ok"]),
        "failed": sum(1 for r in records if not r["ok"]),
        "lost": len(expected - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "records_at_kill": seen.get("records_at_kill"),
        "actors_replaced": replaced,
        "stats_equal_unfaulted": not diffs,
        "differences": diffs,
        "scoring_s": round(end - t0, 3),
        "before": None,
        "during": None,
        "after": None,
        "detect_s": None
        if "detected_at" not in seen
        else round(seen["detected_at"] - seen["killed_at"], 3),
        "recover_s": None if "killed_at" not in seen else round(end - seen["killed_at"], 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_record(record)
    assert "killed_at" in seen, record
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    assert len(clean) == len(records) == len(items)
    assert replaced == 1, record
    assert not diffs, record
