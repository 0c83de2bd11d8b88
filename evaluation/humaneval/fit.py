"""Human scores of a run: votes joined with pairs, Bradley-Terry per niche and overall.

Writes `<run_dir>/humaneval/bt.parquet` (one row per scope and model) and
`<run_dir>/humaneval/win_rates.parquet` (one row per scope, model and opponent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from config import EaselConfig
from evaluation.humaneval.bradley_terry import bootstrap_bt, fit_bt, human_score, win_rate_matrix
from evaluation.humaneval.pairs import load_pairs
from evaluation.humaneval.store import VoteStore

__all__ = ["ALL", "VOTES_FILE", "HumanEvalResult", "fit_human", "load_votes"]

ALL = "all"
VOTES_FILE = Path("humaneval") / "votes.sqlite"


@dataclass
class HumanEvalResult:
    """Bradley-Terry results per scope ('all' or a niche).

    Attributes:
        scores: scope, model, elo, elo_lo, elo_hi, human_score_0_100, human_lo, human_hi,
            n_votes (votes involving the model), n_raters, tie_nu, anchor (what scores 50),
            anchored (true when that is a named model with votes in the scope: only then may
            the score enter the composite), interval_unit (what the bootstrap resampled).
        win_rates: scope, model, opponent, win_rate (ties count half), n.
        draws: scope -> {model: (B,) bootstrap human scores}, for composite intervals.
        n_votes: votes used.
    """

    scores: pd.DataFrame
    win_rates: pd.DataFrame
    draws: dict[str, dict[str, np.ndarray]]
    n_votes: int


def load_votes(run_dir: str | Path) -> pd.DataFrame:
    """Votes joined with their pairs: niche, model_a (left), model_b (right), outcome, rater.

    Empty (with those columns) when there is no votes database yet.
    """
    cols = ["pair_id", "niche", "model_a", "model_b", "outcome", "rater", "voted_at"]
    path = Path(run_dir) / VOTES_FILE
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    votes = VoteStore(path).votes()
    if votes.empty:
        return pd.DataFrame(columns=cols)
    pairs = load_pairs(run_dir)
    df = votes.merge(pairs, on="pair_id", how="inner")
    df["model_a"] = df["left_model"]
    df["model_b"] = df["right_model"]
    df["outcome"] = df["choice"].map({"left": "a", "right": "b", "tie": "tie"})
    return df[cols].reset_index(drop=True)


def fit_human(
    run_dir: str | Path, cfg: EaselConfig, *, write: bool = True
) -> HumanEvalResult | None:
    """Fit Bradley-Terry overall and per niche; None when the run has no votes."""
    votes = load_votes(run_dir)
    if votes.empty:
        return None
    ev = cfg.evaluation
    scopes = [(ALL, votes)] + [
        (n, v) for n, v in sorted(votes.groupby("niche"), key=lambda x: x[0])
    ]
    score_rows, rate_rows = [], []
    draws: dict[str, dict[str, np.ndarray]] = {}
    for i, (scope, v) in enumerate(scopes):
        models = sorted(set(v["model_a"]) | set(v["model_b"]))
        if len(models) < 2:
            continue
        fit = fit_bt(v, models)
        raters = int(v["rater"].nunique()) if "rater" in v else 0
        boot = bootstrap_bt(v, models, resamples=ev.bootstrap, seed=cfg.seed + i, cluster="rater")
        unit = f"raters ({raters})" if raters >= 2 else "votes (one rater: no rater spread)"
        anchor_name = ev.anchors.human_anchor_model
        anchored = bool(anchor_name and anchor_name in models)
        if anchored:
            k = models.index(anchor_name)  # type: ignore[arg-type]
            anchor, boot_anchor, anchor_label = fit.elo[k], boot[:, k], f"model {anchor_name}"
        else:
            anchor, boot_anchor = 0.0, boot.mean(axis=1)  # strengths are centred: mean is 0
            anchor_label = "mean of fitted models (relative to this run)"
            if anchor_name:
                anchor_label += f"; {anchor_name} has no votes here"
        span = ev.anchors.human_elo_span
        points = human_score(fit.elo, anchor, span)
        boot_scores = human_score(boot, boot_anchor[:, None], span)
        draws[scope] = {m: boot_scores[:, k] for k, m in enumerate(models)}
        for k, m in enumerate(models):
            n_m = int(((v["model_a"] == m) | (v["model_b"] == m)).sum())
            score_rows.append(
                {
                    "scope": scope,
                    "model": m,
                    "elo": float(fit.elo[k]),
                    "elo_lo": float(np.percentile(boot[:, k], 2.5)),
                    "elo_hi": float(np.percentile(boot[:, k], 97.5)),
                    "human_score_0_100": float(points[k]),
                    "human_lo": float(np.percentile(boot_scores[:, k], 2.5)),
                    "human_hi": float(np.percentile(boot_scores[:, k], 97.5)),
                    "n_votes": n_m,
                    "n_raters": raters,
                    "tie_nu": fit.nu,
                    "anchor": anchor_label,
                    "anchored": anchored,
                    "interval_unit": unit,
                }
            )
        rate, count = win_rate_matrix(v, models)
        for m in models:
            for o in models:
                if m != o:
                    rate_rows.append(
                        {
                            "scope": scope,
                            "model": m,
                            "opponent": o,
                            "win_rate": float(rate.loc[m, o]),
                            "n": int(count.loc[m, o]),
                        }
                    )
    result = HumanEvalResult(
        scores=pd.DataFrame(score_rows),
        win_rates=pd.DataFrame(rate_rows),
        draws=draws,
        n_votes=len(votes),
    )
    if write:
        out = Path(run_dir) / "humaneval"
        result.scores.to_parquet(out / "bt.parquet", index=False)
        result.win_rates.to_parquet(out / "win_rates.parquet", index=False)
    return result
