"""`easel bench` (the whole pipeline) and `easel report` (rewrite a run folder's report).

Only argparse-level imports at the top; Ray, torch and the stages load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from config.cli_types import positive_int

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` and `report` to the `easel` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="the main job: deploy, load-test, score, price and report, end to end",
        description="Start (or join) Ray, build the tiny models the config uses, start the "
        "providers and the gateway (or use a running gateway with --url), generate (or take) "
        "the job manifest, run the open-loop load test through the gateway, score the images, "
        "price them and write the run folder with report.md / report.html. Flags beat the "
        "config file; the file beats the schema's defaults.",
    )
    bench.add_argument("--config", help="config file (default: the embedded default config)")
    bench.add_argument(
        "--out", help="run folder to create (new or empty; default runs/<config>-<timestamp>)"
    )
    bench.add_argument("--jobs", type=positive_int, help="jobs in the manifest (traffic.jobs)")
    bench.add_argument("--manifest", help="replay this manifest instead of generating one")
    bench.add_argument(
        "--address",
        help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
        "starting a local one",
    )
    bench.add_argument(
        "--url",
        help="run against this already running easel gateway (e.g. http://gateway:8000): "
        "deploy nothing, read usage and availability from it (needs its admin key)",
    )
    bench.add_argument(
        "--isolated",
        action="store_true",
        help="one Ray cluster per provider (as in production) instead of one Ray for all",
    )
    bench.add_argument(
        "--sweep",
        action="store_true",
        help="after the load test, run a saturation sweep (rising Poisson rates until the SLO "
        "breaks) into DIR/sweep; the report plots latency against offered load",
    )
    bench.add_argument(
        "--full-matrix",
        action="store_true",
        help="serve every self-hosted model on every provider it lists (default: on one of "
        "them each, spread over the providers, for a lean local run)",
    )
    bench.add_argument(
        "--resume",
        metavar="DIR",
        help="finish a bench that was killed: keep the stages DIR already completed "
        "(manifest, load, sweep, usage, score), resume an unfinished load stage (only the rows "
        "without a record are sent), run the rest; with the config and options DIR was "
        "started with (give --url/--address again only if they moved)",
    )
    bench.add_argument("--quiet", action="store_true", help="no per-stage progress display")
    bench.set_defaults(func=_bench)

    report = subparsers.add_parser(
        "report",
        help="(re)write report.md, report.html and summary.json from a run folder",
        description="Rebuild summary.json, report.md, report.html and plots/ from the files a "
        "run left in DIR (config.yaml and whichever of manifest/requests/usage/scores exist).",
    )
    report.add_argument("run_dir", metavar="DIR", help="the run folder")
    report.set_defaults(func=_report)


def _bench(args: argparse.Namespace) -> int:
    from easel.bench import BenchOptions, run_bench

    result = run_bench(
        BenchOptions(
            config=args.config,
            out=args.out,
            jobs=args.jobs,
            manifest=args.manifest,
            address=args.address,
            url=args.url,
            isolated=args.isolated,
            sweep=args.sweep,
            full_matrix=args.full_matrix,
            progress=not args.quiet,
            argv=_command_line(args),
            resume=args.resume,
        )
    )
    return result.exit_code


def _command_line(args: argparse.Namespace) -> list[str]:
    """The bench command as given (rebuilt from the parsed flags), for the report."""
    argv = ["easel", "bench"]
    for flag in ("config", "out", "jobs", "manifest", "address", "url", "resume"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag}", str(value)]
    for flag in ("isolated", "sweep", "full_matrix"):
        if getattr(args, flag):
            argv.append(f"--{flag.replace('_', '-')}")
    return argv


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from easel.report import headline_text, write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"easel report: {run_dir}: no such run folder", file=sys.stderr)
        return 2
    if not (run_dir / "config.yaml").is_file():
        print(f"easel report: {run_dir}: no config.yaml (not a run folder)", file=sys.stderr)
        return 2
    files = write_report(run_dir)
    print(headline_text(files.summary))
    print(f"\nwrote {files.report_md}, {files.report_html}, {files.summary_json}")
    return 0
