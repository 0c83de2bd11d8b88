"""Blind A/B pairs: same prompt, two models, random sides, anonymous ids.

For every pair of models, images the two made for the same (niche, prompt) are paired, up to
`evaluation.human_pairs_per_model_pair` pairs (all of them when fewer exist). Which model shows on
the left is a coin flip, and the pair id is random, so nothing a rater sees names a model. Images
that do not decode are left out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from config import EaselConfig
from evaluation.run_folder import load_run_images

__all__ = ["PAIRS_FILE", "PairsResult", "load_pairs", "make_pairs"]

PAIRS_FILE = Path("humaneval") / "pairs.parquet"
_COLUMNS = [
    "pair_id",
    "position",
    "niche",
    "prompt",
    "left_job_id",
    "right_job_id",
    "left_model",
    "right_model",
    "left_image",
    "right_image",
]


@dataclass
class PairsResult:
    """The pairs written; per model pair, how many were asked for, available and made; and the
    job ids left out because their image does not decode."""

    pairs: pd.DataFrame
    summary: pd.DataFrame
    path: Path
    unreadable: list[str]


def make_pairs(
    run_dir: str | Path, cfg: EaselConfig, *, n_per_pair: int | None = None, seed: int | None = None
) -> PairsResult:
    """Write `<run_dir>/humaneval/pairs.parquet`; `n_per_pair` defaults to the config's.

    Pairs are drawn uniformly from all same-prompt image combinations of the two models, without
    repeats. The seed defaults to the config's seed, so the same run gives the same pairs.
    """
    n = n_per_pair or cfg.evaluation.human_pairs_per_model_pair
    if n < 1:
        raise ValueError(f"n_per_pair must be >= 1, got {n}")
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    images = load_run_images(run_dir, references=False).rows
    readable = [_readable(p) for p in images["path"]]
    unreadable = sorted(images.loc[[not r for r in readable], "job_id"])
    images = images[readable]
    models = sorted(images["model"].unique())
    # (niche, prompt) -> model -> [(job_id, image_path)]
    groups: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = {}
    for row in images.itertuples(index=False):
        groups.setdefault((row.niche, row.prompt), {}).setdefault(row.model, []).append(
            (row.job_id, row.image_path)
        )
    rows: list[dict[str, str]] = []
    summary: list[dict[str, object]] = []
    used_ids: set[str] = set()
    for a, b in itertools.combinations(models, 2):
        shared = [(k, g[a], g[b]) for k, g in sorted(groups.items()) if a in g and b in g]
        sizes = np.array([len(ia) * len(ib) for _, ia, ib in shared], dtype=np.int64)
        total = int(sizes.sum())
        chosen = _draw(rng, sizes, min(n, total))
        for g_idx, combo in chosen:
            (niche, prompt), ia, ib = shared[g_idx]
            ja, jb = ia[combo // len(ib)], ib[combo % len(ib)]
            (lm, lj), (rm, rj) = ((a, ja), (b, jb)) if rng.random() < 0.5 else ((b, jb), (a, ja))
            rows.append(
                {
                    "pair_id": _new_id(rng, used_ids),
                    "niche": niche,
                    "prompt": prompt,
                    "left_job_id": lj[0],
                    "right_job_id": rj[0],
                    "left_model": lm,
                    "right_model": rm,
                    "left_image": lj[1],
                    "right_image": rj[1],
                }
            )
        summary.append(
            {"model_a": a, "model_b": b, "requested": n, "available": total, "made": len(chosen)}
        )
    pairs = pd.DataFrame(rows, columns=[c for c in _COLUMNS if c != "position"])
    # presentation order: shuffled across model pairs, so a rater never sees one pair in a row
    pairs.insert(1, "position", rng.permutation(len(pairs)) if len(pairs) else [])
    pairs = pairs.sort_values("position").reset_index(drop=True)
    path = Path(run_dir) / PAIRS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_parquet(path, index=False)
    return PairsResult(pairs=pairs, summary=pd.DataFrame(summary), path=path, unreadable=unreadable)


def load_pairs(run_dir: str | Path) -> pd.DataFrame:
    """The pairs of a run; FileNotFoundError pointing at `easel humaneval pairs` otherwise."""
    path = Path(run_dir) / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pairs yet; run `easel humaneval pairs --run DIR`")
    return pd.read_parquet(path)


def _draw(rng: np.random.Generator, sizes: np.ndarray, k: int) -> list[tuple[int, int]]:
    """k distinct (group, combination) cells, uniform over all combinations."""
    total = int(sizes.sum())
    if k == 0:
        return []
    flat = rng.choice(total, size=k, replace=False) if k < total else rng.permutation(total)
    bounds = np.cumsum(sizes)
    g = np.searchsorted(bounds, flat, side="right")
    start = bounds - sizes
    return [(int(gi), int(f - start[gi])) for gi, f in zip(g, flat, strict=True)]


def _readable(path: str) -> bool:
    """A rater must never be shown a broken image: check it decodes."""
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # any decoder failure means "not readable"
        return False


def _new_id(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        pid = f"{int(rng.integers(0, 2**62)):016x}"
        if pid not in used:
            used.add(pid)
            return pid
