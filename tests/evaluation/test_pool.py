"""The scorer actor pool: three actors merge to one actor's result; corrupt images are records."""

from __future__ import annotations

import base64
import dataclasses
import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from evaluation.clip_score import resolve_clip_spec
from evaluation.features import resolve_feature_spec
from evaluation.identity import resolve_face_spec
from evaluation.pool import ImageItem, Scorer, ScorerPool, ScorerSpec, ScorerState
from evaluation.run_folder import load_run_images
from evaluation.subject_sets import build_derived_subjects, build_drawn_garments
from tests.evaluation._fixtures import eval_config, make_run, png_bytes

BATCH = 4


@pytest.fixture(scope="module")
def spec() -> ScorerSpec:
    ev = eval_config().evaluation
    return ScorerSpec(
        feature=resolve_feature_spec(ev), clip=resolve_clip_spec(ev), face=resolve_face_spec(ev)
    )


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[ImageItem]:
    run = make_run(tmp_path_factory.mktemp("run"))
    rows = load_run_images(run).rows
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("job_id")

    out = []
    for r in rows.itertuples(index=False):
        ref = manifest.at[r.job_id, "reference_image"]
        out.append(
            ImageItem(
                item_id=r.job_id,
                group=("gen", r.model, r.niche),
                data=Path(r.path).read_bytes(),
                prompt=r.prompt,
                reference=base64.b64decode(ref) if isinstance(ref, str) else None,
            )
        )
    # every third job is image-conditioned: a real face as its reference (scikit-image's
    # photos), a mirrored copy of it as its output, and every sixth a garment too
    faces = tmp_path_factory.mktemp("faces")
    build_derived_subjects(faces, 4)
    build_drawn_garments(faces, 2, seed_text="pool")
    subjects = sorted(faces.glob("subject-*.png"))
    garments = sorted(faces.glob("garment-*.png"))
    for i in range(0, len(out), 3):
        face = subjects[(i // 3) % len(subjects)].read_bytes()
        mirrored = png_bytes(ImageOps.mirror(Image.open(io.BytesIO(face))))
        out[i] = dataclasses.replace(
            out[i],
            data=mirrored if i % 2 == 0 else out[i].data,  # odd ones: no face in the output
            faces=(face,),
            garments=(garments[0].read_bytes(),) if i % 6 == 0 else (),
        )
    return out


@pytest.fixture(scope="module")
def pool(ray_local: None, spec: ScorerSpec) -> Iterator[ScorerPool]:
    with ScorerPool(spec, actors=3, num_cpus=1) as p:
        yield p


@pytest.fixture(scope="module")
def single(spec: ScorerSpec, items: list[ImageItem]) -> Scorer:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each actor, so the arithmetic is the same
    try:
        scorer = Scorer(spec)
        for start in range(0, len(items), BATCH):
            scorer.score_batch(items[start : start + BATCH])
    finally:
        torch.set_num_threads(threads)
    return scorer


def _assert_same(merged: ScorerState, one: ScorerState) -> None:
    """The pool's merged state is the single actor's: same groups, ids, counts; sums to float
    rounding (the networks batch the same images, in another order of additions)."""
    assert set(merged.groups) == set(one.groups)
    for key, g in one.groups.items():
        m = merged.groups[key]
        assert m.features.n == g.features.n and m.features.ids == g.features.ids
        np.testing.assert_allclose(m.features.features, g.features.features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.features.sum, g.features.sum, rtol=1e-6)
        np.testing.assert_allclose(m.features.cov_sum, g.features.cov_sum, rtol=1e-6, atol=1e-6)
        assert (m.clip.text_n, m.clip.ref_n, m.clip.truncated) == (
            g.clip.text_n,
            g.clip.ref_n,
            g.clip.truncated,
        )
        assert m.clip.text_sum == pytest.approx(g.clip.text_sum, rel=1e-5, abs=1e-6)
        assert m.clip.ref_sum == pytest.approx(g.clip.ref_sum, rel=1e-5, abs=1e-6)
        assert m.identity == g.identity  # dlib is deterministic: sums match exactly
        assert (m.garment.n, m.garment.cos_sum) == pytest.approx((g.garment.n, g.garment.cos_sum))


def test_three_actors_merge_to_the_single_actor_result(
    pool: ScorerPool, single: Scorer, items: list[ImageItem]
) -> None:
    pool.reset()
    records = pool.score(items, batch_size=BATCH)
    assert len(records) == len(items)
    per_actor = pool.states()
    assert all(sum(g.features.n for g in s.groups.values()) > 0 for s in per_actor)  # all worked
    merged = pool.state()
    one = single.state
    _assert_same(merged, one)
    identity = [g.identity for g in one.groups.values()]
    assert sum(i.jobs for i in identity) == len([i for i in items if i.faces])
    assert sum(i.faces for i in identity) >= 1  # the mirrored faces were found
    assert sum(i.usable - i.faces for i in identity) >= 1  # and outputs without one failed
    assert sum(g.garment.n for g in one.groups.values()) == len([i for i in items if i.garments])


def test_corrupt_image_is_a_record_not_a_failure(pool: ScorerPool, items: list[ImageItem]) -> None:
    pool.reset()
    bad = ImageItem(item_id="bad", group=("gen", "m", "n"), data=b"not an image", prompt="p")
    records = pool.score([*items[:3], bad], batch_size=BATCH)
    by_id = {r["item_id"]: r for r in records}
    assert not by_id["bad"]["ok"] and "corrupt image" in by_id["bad"]["error"]
    assert all(by_id[i.item_id]["ok"] for i in items[:3])
    state = pool.state()
    assert [e["item_id"] for e in state.errors] == ["bad"]
    assert ("gen", "m", "n") not in state.groups  # skipped, not counted
    assert sum(g.features.n for g in state.groups.values()) == 3


def test_prompt_over_clip_context_is_reported(single: Scorer, items: list[ImageItem]) -> None:
    long = next(i for i in items if len(i.prompt or "") > 200)
    rec = Scorer.score_batch(single, [long])[0]
    assert rec["prompt_truncated"] and rec["prompt_tokens"] > 77


def test_actor_state_survives_a_pickle_round_trip(
    pool: ScorerPool, spec: ScorerSpec, items: list[ImageItem]
) -> None:
    pool.reset()
    pool.score(items[:6], batch_size=BATCH)
    state = pool.state()  # came back from the actors through Ray's pickling already
    back: ScorerState = pickle.loads(pickle.dumps(state))
    assert set(back.groups) == set(state.groups)
    for key, g in state.groups.items():
        np.testing.assert_array_equal(back.groups[key].features.cov_sum, g.features.cov_sum)
        assert back.groups[key].clip == g.clip
    for obj in (spec, items[0], spec.face):
        assert pickle.loads(pickle.dumps(obj)) == obj

    # a whole scorer, pickled mid-run, carries on exactly where it was
    scorer = Scorer(spec)
    scorer.score_batch(items[:4])
    clone: Scorer = pickle.loads(pickle.dumps(scorer))
    scorer.score_batch(items[4:8])
    clone.score_batch(items[4:8])
    for key, g in scorer.state.groups.items():
        twin = clone.state.groups[key]
        np.testing.assert_array_equal(twin.features.features, g.features.features)
        assert twin.clip == g.clip
        assert twin.identity == g.identity and twin.garment == g.garment
    assert any(g.identity.jobs for g in scorer.state.groups.values())


def test_an_actor_scoring_two_batches_at_once_keeps_the_sequential_state(
    spec: ScorerSpec, items: list[ImageItem]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from evaluation.pool import _ScorerActor

    threads = torch.get_num_threads()
    batches = [items[s : s + BATCH] for s in range(0, len(items), BATCH)]
    try:
        actor = _ScorerActor(spec, num_cpus=1, num_gpus=0)  # the actor body, without Ray
        with ThreadPoolExecutor(2) as ex:  # as Ray runs it with max_concurrency=2
            records = [r for rs in ex.map(actor.score_batch, batches) for r in rs]
        single = Scorer(spec)  # `single` is shared, and other tests add to it
        for b in batches:
            single.score_batch(b)
    finally:
        torch.set_num_threads(threads)
    assert sorted(r["item_id"] for r in records) == sorted(i.item_id for i in items)
    merged = ScorerState.merge_all([actor.state()])
    for key, g in single.state.groups.items():
        m = merged.groups[key]
        assert m.features.ids == g.features.ids
        np.testing.assert_allclose(m.features.features, g.features.features, rtol=1e-5, atol=1e-6)
        assert m.clip.text_n == g.clip.text_n
        assert m.clip.text_sum == pytest.approx(g.clip.text_sum, rel=1e-5, abs=1e-6)
        assert m.identity.jobs == g.identity.jobs and m.garment.n == g.garment.n


def test_an_actor_killed_mid_scoring_is_replaced_and_nothing_is_lost_or_counted_twice(
    pool: ScorerPool, items: list[ImageItem]
) -> None:
    import os
    import signal

    import ray

    pool.reset()
    pool.score(items, batch_size=BATCH)
    want = pool.state()  # un-faulted (`single` has had other tests' images added by now)
    pool.reset()
    victim = ray.get(pool._actors[0].__ray_call__.remote(lambda self: os.getpid()))
    killed: list[int] = []

    def progress(done: int) -> None:
        if not killed and done >= 2 * BATCH:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    before = pool.replaced
    records = pool.score(items, batch_size=BATCH, progress=progress)
    assert killed and pool.replaced == before + 1
    assert sorted(r["item_id"] for r in records) == sorted(i.item_id for i in items)
    _assert_same(pool.state(), want)
