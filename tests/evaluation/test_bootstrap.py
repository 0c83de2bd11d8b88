"""Bootstrap over prompts: intervals bracket the point estimate and widen with fewer prompts."""

from __future__ import annotations

import numpy as np

from config import load_config
from evaluation.bootstrap import bootstrap_group
from evaluation.composite import clip_to_score, combine, fid_to_score
from evaluation.fid import FeatureStats, FidBootstrap, fid_from_stats


def _run(n_prompts: int, per_prompt: int) -> tuple[float, tuple[float, float]]:
    ev = load_config().evaluation.model_copy(update={"bootstrap": 100})
    rng = np.random.default_rng(0)
    ref = FeatureStats(8)
    ref.update([f"r{i}" for i in range(300)], rng.normal(size=(300, 8)))
    n = n_prompts * per_prompt
    feats = rng.normal(loc=0.3, size=(n, 8))
    prompts = [f"p{i // per_prompt}" for i in range(n)]
    text = list(rng.normal(0.2, 0.05, n))
    gen = FeatureStats(8)
    gen.update([f"g{i}" for i in range(n)], feats)
    point, _ = combine(
        {
            "fid": fid_to_score(fid_from_stats(gen, ref), ev.anchors),
            "clip": clip_to_score(float(np.mean(text)), None, ev.anchors, ev.clip_ref_share),
        },
        ev.weights,
    )
    interval = bootstrap_group(
        prompts=prompts,
        features=feats,
        ref=FidBootstrap(*ref.moments()),
        clip_text=text,
        clip_ref=[None] * n,
        human_draws=None,
        components=["fid", "clip"],
        point={"composite": point},
        cfg=ev,
        seed=1,
    )
    assert interval.n == 100 and interval.composite is not None
    return point, interval.composite


def test_interval_brackets_the_estimate_and_narrows_with_more_prompts() -> None:
    point, (lo, hi) = _run(n_prompts=40, per_prompt=3)
    assert lo <= point <= hi
    _, (lo_few, hi_few) = _run(n_prompts=6, per_prompt=3)
    assert hi_few - lo_few > hi - lo
