"""Reference photos for the generated jobs of image-conditioned niches.

The manifest generator (`load_tests`) cannot read the photo sets (`evaluation.subject_sets`, a
later floor), so `easel bench` and `easel manifest` attach them here, at the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["with_reference_photos"]


def _reference_pools(cfg: Any) -> dict[str, list[tuple[list[bytes], list[str]]]]:
    """Per image-conditioned niche, the photo sets its jobs draw from (evaluation.subject_sets).

    identity: `references_per_job` consecutive photos of the subject set (a folder sorted by
    name keeps one person's photos together; the locally derived set holds one per person);
    try-on: every (person, garment) pair.
    """
    from evaluation.subject_sets import garment_set, subject_set

    pools: dict[str, list[tuple[list[bytes], list[str]]]] = {}
    for niche in cfg.niches:
        cond = niche.conditioning
        if cond is None:
            continue
        people = [Path(f).read_bytes() for f in subject_set(niche).files]
        if cond.kind == "try-on":
            garments = [Path(f).read_bytes() for f in (garment_set(niche) or _no_set()).files]
            pools[niche.name] = [([p, g], ["person", "garment"]) for p in people for g in garments]
        else:
            k = min(cond.references_per_job, len(people))
            pools[niche.name] = [
                ([people[(i + j) % len(people)] for j in range(k)], ["face"] * k)
                for i in range(len(people))
            ]
    return pools


def _no_set() -> Any:
    raise ValueError("a try-on niche needs a garment set")


def with_reference_photos(table: Any, cfg: Any) -> tuple[Any, int]:
    """The generated manifest with reference photos on its image-conditioned niches' jobs."""
    import numpy as np

    from load_tests.references import attach_references

    pools = _reference_pools(cfg)
    if not pools:
        return table, 0
    table = attach_references(table, cfg, pools, np.random.default_rng(cfg.traffic.seed + 1))
    refs = table.column("reference_images").to_pylist()
    return table, sum(1 for r in refs if r)
