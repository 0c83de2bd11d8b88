"""Scoring generated images: FID/KID, CLIP alignment, blind human A/B, the composite score.

The public surface: `score_run` (score a run folder through the Ray actor pool and write
scores.parquet), `composite_scores` / `weight_sensitivity` (the anchored composite), the
human A/B functions (`make_pairs`, `fit_human`) and `quality_goodput`. Names are imported on
first use, so that `import evaluation` (as `easel --help` does through `easel.commands.score`)
loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.lazy import lazy_exports

if TYPE_CHECKING:
    from evaluation.composite import composite_scores, weight_sensitivity
    from evaluation.goodput import quality_goodput
    from evaluation.humaneval import HumanEvalResult, PairsResult, fit_human, make_pairs
    from evaluation.scoring import SCORES_FILE, ScoreResult, score_run

__all__ = [
    "SCORES_FILE",
    "HumanEvalResult",
    "PairsResult",
    "ScoreResult",
    "composite_scores",
    "fit_human",
    "make_pairs",
    "quality_goodput",
    "score_run",
    "weight_sensitivity",
]

_HOME = {
    "SCORES_FILE": "evaluation.scoring",
    "ScoreResult": "evaluation.scoring",
    "score_run": "evaluation.scoring",
    "composite_scores": "evaluation.composite",
    "weight_sensitivity": "evaluation.composite",
    "HumanEvalResult": "evaluation.humaneval",
    "PairsResult": "evaluation.humaneval",
    "fit_human": "evaluation.humaneval",
    "make_pairs": "evaluation.humaneval",
    "quality_goodput": "evaluation.goodput",
}


__getattr__ = lazy_exports("evaluation", _HOME)
