"""Bootstrap over prompts and references: intervals bracket the estimate, widen with fewer
prompts and with fewer references, and stratify by niche."""

from __future__ import annotations

import numpy as np

from config import load_config
from evaluation.bootstrap import References, bootstrap_group
from evaluation.composite import clip_to_score, combine, fid_to_score
from evaluation.fid import FeatureStats, fid_from_stats


def _run(
    n_prompts: int, per_prompt: int, n_ref: int = 300, *, fid_only: bool = False
) -> tuple[float, tuple[float, float]]:
    ev = load_config().evaluation.model_copy(update={"bootstrap": 100})
    rng = np.random.default_rng(0)
    ref = FeatureStats(8)
    ref.update([f"r{i}" for i in range(n_ref)], rng.normal(size=(n_ref, 8)))
    n = n_prompts * per_prompt
    feats = rng.normal(loc=0.3, size=(n, 8))
    prompts = [f"p{i // per_prompt}" for i in range(n)]
    text = list(rng.normal(0.2, 0.05, n))
    gen = FeatureStats(8)
    gen.update([f"g{i}" for i in range(n)], feats)
    fid_score = float(fid_to_score(fid_from_stats(gen, ref), ev.anchors))
    point, _ = combine(
        {
            "fid": fid_score,
            "clip": clip_to_score(float(np.mean(text)), None, ev.anchors, ev.clip_ref_share),
        },
        ev.weights,
    )
    interval = bootstrap_group(
        prompts=prompts,
        features=feats,
        refs=References({"n": ref.features.astype(float)}, {"n": 1.0}),
        clip_text=text,
        clip_ref=[None] * n,
        human_draws=None,
        components=["fid", "clip"],
        point={"composite": point, "fid": fid_score},
        cfg=ev,
        seed=1,
    )
    assert interval.n == 100 and interval.composite is not None
    if fid_only:
        return fid_score, interval.fid_score
    return point, interval.composite


def test_interval_brackets_the_estimate_and_narrows_with_more_prompts() -> None:
    point, (lo, hi) = _run(n_prompts=40, per_prompt=3)
    assert lo <= point <= hi
    _, (lo_few, hi_few) = _run(n_prompts=6, per_prompt=3)
    assert hi_few - lo_few > hi - lo


def test_fewer_references_widen_the_fid_interval() -> None:
    # The same generated set against 300 and 20 references: holding references fixed would give
    # both the same width; resampling them shows how little 20 references pin down.
    point, (lo, hi) = _run(n_prompts=40, per_prompt=3, n_ref=300, fid_only=True)
    assert lo <= point <= hi
    _, (lo_few, hi_few) = _run(n_prompts=40, per_prompt=3, n_ref=20, fid_only=True)
    assert hi_few - lo_few > 1.5 * (hi - lo)


def test_all_rows_resample_within_each_niche() -> None:
    # Two niches of very different CLIP levels, 30 prompts in one and 3 in the other: a
    # stratified draw keeps every draw's niche mix, an unstratified one lets it swing.
    ev = load_config().evaluation.model_copy(update={"bootstrap": 200})
    prompts = [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(3)]
    strata = ["a"] * 30 + ["b"] * 3
    text = [0.05] * 30 + [0.30] * 3
    point = clip_to_score(float(np.mean(text)), None, ev.anchors, ev.clip_ref_share)
    kw = dict(
        prompts=prompts,
        features=None,
        refs=None,
        clip_text=text,
        clip_ref=[None] * len(text),
        human_draws=None,
        components=["clip"],
        point={"clip": point, "composite": point},
        cfg=ev,
        seed=3,
    )
    stratified = bootstrap_group(strata=strata, **kw).clip_score
    pooled = bootstrap_group(**kw).clip_score
    assert stratified[1] - stratified[0] < 1e-9  # every prompt in a niche scores alike
    assert pooled[1] - pooled[0] > 5
