"""`easel compare RUN_A RUN_B`: the regression gate. Light at import; the work is easel.compare
and easel.compare_report."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `compare` to the easel command line."""
    p = subparsers.add_parser(
        "compare",
        help="regression gate between two run folders (exit 1 on a regression)",
        description="Compare run B against baseline run A per model and niche: latency "
        "percentiles, goodput, error rate, cost per image and composite, each with its change "
        "and an interval. Exit 0: no regression; 1: some metric regressed beyond its tolerance "
        "(run A's `compare` config) with its interval excluding zero; 2: the runs cannot be "
        "compared (different models, niches or references) or are not run folders.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="the baseline run folder")
    p.add_argument("run_b", metavar="RUN_B", help="the run folder to judge")
    p.add_argument("--out", help="where compare.md and compare.json go (default: RUN_B)")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from easel.compare import IncomparableRuns, compare_runs
    from easel.compare_report import write_comparison

    try:
        result = compare_runs(args.run_a, args.run_b)
    except IncomparableRuns as exc:
        print("easel compare: refusing to compare these runs:", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"easel compare: {exc}", file=sys.stderr)
        return 2
    md, js = write_comparison(result, args.out or args.run_b)
    regs = result.regressions
    for r in regs:
        change = (
            f"{100 * r.rel:+.0f} %"
            if r.rel is not None
            else ("beyond the deadline" if r.metric.startswith("latency") else f"{r.diff:+.3g}")
        )
        print(
            f"REGRESSION {r.model} / {r.niche}: {r.metric} {change} ({r.note or 'see ' + str(md)})"
        )
    print(
        f"{len(regs)} regression(s) in {len(result.rows)} metrics"
        if regs
        else f"no regression in {len(result.rows)} metrics"
    )
    print(f"wrote {md} and {js}")
    return 1 if regs else 0
