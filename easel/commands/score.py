"""`easel score` and `easel humaneval pairs|serve|fit`; heavy imports happen inside handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import EaselConfig

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `score` and `humaneval` to the easel command line."""
    p = subparsers.add_parser(
        "score",
        help="score a run's images (FID/KID, CLIP, human votes) into scores.parquet",
        description="Score every ok image of a run folder through the Ray actor pool, against "
        "its niches' references; writes scores.parquet, image_scores.parquet, "
        "weight_sensitivity.parquet and score_meta.json into the run folder.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder")
    p.add_argument("--config", type=Path, help="config file (default: the run's config.yaml)")
    p.add_argument("--address", help="Ray address to join (default: start a local Ray)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_score)

    h = subparsers.add_parser("humaneval", help="blind A/B pairs, rating page, Bradley-Terry fit")
    hs = h.add_subparsers(dest="humaneval_command", metavar="STEP", required=True)
    pp = hs.add_parser("pairs", help="write humaneval/pairs.parquet: blind same-prompt pairs")
    pp.add_argument("--run", required=True, type=Path, help="run folder")
    pp.add_argument("--config", type=Path, help="config file (default: the run's config.yaml)")
    pp.add_argument("--n", type=int, help="pairs per model pair (default: from the config)")
    pp.add_argument("--seed", type=int, help="random seed (default: the config's seed)")
    pp.set_defaults(func=_pairs)

    ps = hs.add_parser("serve", help="serve the rating page; votes go to humaneval/votes.sqlite")
    ps.add_argument("--run", required=True, type=Path, help="run folder")
    ps.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    ps.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    ps.set_defaults(func=_serve)

    pf = hs.add_parser("fit", help="Bradley-Terry with ties per niche and overall")
    pf.add_argument("--run", required=True, type=Path, help="run folder")
    pf.add_argument("--config", type=Path, help="config file (default: the run's config.yaml)")
    pf.set_defaults(func=_fit)


def _config(args: argparse.Namespace) -> EaselConfig:
    from config import load_config
    from evaluation.run_folder import load_run_config

    return load_config(args.config) if args.config else load_run_config(args.run)


def _score(args: argparse.Namespace) -> int:
    from evaluation.score_table import split_flags
    from evaluation.scoring import score_run

    cfg = _config(args)
    result = score_run(args.run, cfg, progress=not args.quiet, address=args.address)
    cols = [
        "model",
        "niche",
        "n",
        "fid",
        "kid_mean",
        "clip_text",
        "fid_score_0_100",
        "clip_score_0_100",
        "human_score_0_100",
        "composite",
        "composite_lo",
        "composite_hi",
    ]
    scores = result.scores
    if scores.empty:
        print("no images to score")
    else:
        print(scores[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        small = int(scores["fid_flag"].notna().sum())
        if small:
            min_n = cfg.evaluation.min_fid_n
            print(
                f"note: {small} rows have N below min_fid_n={min_n}: FID is biased upward "
                "there, read KID beside it"
            )
        for flag in sorted({f for fl in scores["flags"] for f in split_flags(fl)}):
            if not flag.startswith("N="):
                print(f"note: {flag}")
        conditioned = scores[(scores["identity_jobs"] > 0) | (scores["garment_n"] > 0)]
        if not conditioned.empty:
            cols = ["model", "niche", "identity_n", "identity_face_rate", "identity_cos"]
            cols += ["garment_n", "garment_cos"]
            print("\nimage-conditioned jobs (identity preservation, try-on garments):")
            print(conditioned[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            print(f"face embedder: {(result.meta.get('face_embedder') or {}).get('label')}")
    print(f"wrote {result.path}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from evaluation.humaneval.pairs import make_pairs

    result = make_pairs(args.run, _config(args), n_per_pair=args.n, seed=args.seed)
    print(result.summary.to_string(index=False))
    short = result.summary[result.summary["made"] < result.summary["requested"]]
    for r in short.itertuples(index=False):
        print(
            f"note: {r.model_a} vs {r.model_b}: only {r.made} same-prompt pairs exist "
            f"(asked for {r.requested})"
        )
    if result.unreadable:
        print(f"note: {len(result.unreadable)} images do not decode and were left out")
    print(f"wrote {len(result.pairs)} pairs to {result.path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from evaluation.humaneval.page import RatingServer

    server = RatingServer(args.run, host=args.host, port=args.port)
    print(f"rating page on {server.url}/?rater=YOUR_ID (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _fit(args: argparse.Namespace) -> int:
    from evaluation.humaneval.fit import fit_human

    result = fit_human(args.run, _config(args))
    if result is None:
        print(f"no votes in {args.run / 'humaneval' / 'votes.sqlite'}", file=sys.stderr)
        return 1
    cols = [
        "scope",
        "model",
        "elo",
        "elo_lo",
        "elo_hi",
        "human_score_0_100",
        "human_lo",
        "human_hi",
        "n_votes",
    ]
    print(result.scores[cols].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    overall = result.win_rates[result.win_rates["scope"] == "all"]
    if not overall.empty:
        matrix = overall.pivot(index="model", columns="opponent", values="win_rate")
        print("\nwin rate (row beats column, ties count half), all niches:")
        print(matrix.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"\n{result.n_votes} votes; wrote {args.run / 'humaneval' / 'bt.parquet'}")
    return 0
