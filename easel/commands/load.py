"""`easel manifest` and `easel load`. Light at import: heavy imports happen in the handlers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from config.cli_types import non_negative_int, positive_int

__all__ = ["register"]

_PATTERNS = ("poisson", "gamma", "diurnal", "burst", "ramp", "replay")


def register(subparsers: Any) -> None:
    """Add the `manifest` and `load` subcommands."""
    m = subparsers.add_parser(
        "manifest",
        help="write a job manifest from a traffic pattern or a production log",
        description="Write a job manifest (Parquet). Values left out come from the config's "
        "`traffic` section; flags override the config.",
    )
    m.add_argument("--config", help="config YAML (default: the embedded default config)")
    m.add_argument("--pattern", choices=_PATTERNS, help="arrival pattern (default: config)")
    m.add_argument(
        "--jobs", type=positive_int, help="requests (replay: at most this many log rows)"
    )
    m.add_argument("--rate", type=float, help="mean req/s (burst: base rate; ramp: start rate)")
    m.add_argument("--seed", type=non_negative_int)
    m.add_argument("--burstiness", type=float, help="gamma shape; 1 = Poisson, < 1 burstier")
    m.add_argument("--peak-ratio", type=float, help="diurnal peak/trough; burst rate/base")
    m.add_argument("--burst-every-s", type=float)
    m.add_argument("--burst-length-s", type=float)
    m.add_argument("--ramp-to", type=float, help="ramp's end rate, req/s")
    m.add_argument("--replay-path", help="production log: .csv, .parquet or .jsonl")
    m.add_argument("--speedup", type=float, help="replay speed-up factor")
    m.add_argument(
        "--window",
        metavar="START:END",
        help="replay only log times in [START, END) seconds from the log's first timestamp "
        "(either side may be empty)",
    )
    m.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="replay column mapping, e.g. --map timestamp=ts --map model=request.model "
        "--map size=request.size (dotted paths reach nested fields; repeatable)",
    )
    m.add_argument(
        "--fill",
        metavar="FIELDS",
        help="replay: draw these fields (comma-separated: model, niche, prompt) from the "
        "config's mix where the log has none; without it a log lacking one is an error",
    )
    m.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="LOG=MODEL",
        help="replay: a log's model name -> a config model, e.g. flux-2-dev=flux2-dev "
        "(repeatable; adds to traffic.model_aliases)",
    )
    m.add_argument(
        "--niche-alias",
        action="append",
        default=[],
        metavar="LOG=NICHE",
        help="replay: a log's niche name -> a config niche (repeatable)",
    )
    m.add_argument(
        "--jitter",
        metavar="auto|none|SECONDS",
        help="replay: spread each row uniformly over SECONDS after its log time; 'auto' "
        "(default: traffic.replay_jitter_s) does so over 1 s for logs with 1-second timestamps",
    )
    m.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), help="numeric timestamps' unit")
    m.add_argument("--out", required=True, help="output manifest .parquet")
    m.set_defaults(func=_manifest)

    ld = subparsers.add_parser(
        "load",
        help="load-test a running easel (or OpenAI-Images-compatible) endpoint, open loop",
        description="Send a manifest's requests on schedule (open loop) and record every one "
        "in OUT/requests.parquet; --resume DIR finishes a run that was killed (only the rows "
        "without a record are sent); with --sweep, find the highest rate that meets the SLO.",
    )
    ld.add_argument(
        "--config", help="config YAML (default: the embedded default config; DIR's on --resume)"
    )
    ld.add_argument("--manifest", help="manifest .parquet (not with --sweep)")
    ld.add_argument(
        "--url", help="endpoint base URL, e.g. http://127.0.0.1:8000 (on --resume: the run's)"
    )
    ld.add_argument("--out", help="run folder")
    ld.add_argument(
        "--resume",
        metavar="DIR",
        help="finish the run in DIR: send only the manifest rows that have no record yet, with "
        "the options DIR/load.json holds (flags given here win)",
    )
    ld.add_argument("--api", choices=("easel", "openai"), default=None, help="default: easel")
    ld.add_argument("--api-key-env", help="environment variable holding a bearer token")
    ld.add_argument(
        "--max-in-flight",
        type=positive_int,
        help="bound on open requests (default: config; unset there, memory decides)",
    )
    ld.add_argument("--dispatchers", type=positive_int, help="dispatcher actors (default: config)")
    ld.add_argument("--timeout", type=float, help="per-request timeout, s (default: config)")
    ld.add_argument(
        "--warmup", type=non_negative_int, help="warm-up requests per model (default: config)"
    )
    ld.add_argument(
        "--priority",
        choices=("auto", "ray", "normal", "high", "realtime"),
        help="the dispatchers' CPU priority: auto (default: the first of realtime, high, "
        "normal allowed), ray (Ray's worker niceness, 15), normal (0), high (-10) or realtime "
        "(SCHED_RR); above niceness 15 needs CAP_SYS_NICE",
    )
    ld.add_argument(
        "--no-images", action="store_true", default=None, help="keep only each image's sha256"
    )
    ld.add_argument("--no-progress", action="store_true", help="no live progress line")
    ld.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    ld.add_argument("--sweep", action="store_true", help="saturation sweep instead of a manifest")
    ld.add_argument("--start-rate", type=float, help="sweep: first rate (default: config rate)")
    ld.add_argument("--factor", type=float, default=1.5, help="sweep: rate multiplier per step")
    ld.add_argument("--step-s", type=float, default=10.0, help="sweep: seconds per step")
    ld.add_argument("--max-steps", type=positive_int, default=8, help="sweep: most steps")
    ld.add_argument("--max-rate", type=float, help="sweep: highest rate to try")
    ld.add_argument(
        "--max-extend",
        type=non_negative_int,
        default=2,
        help="sweep: reruns of an inconclusive step, each with twice the requests",
    )
    ld.set_defaults(func=_load)


def _window(text: str | None) -> tuple[float | None, float | None] | None:
    if not text:
        return None
    if ":" not in text:
        raise ValueError(f"--window {text!r}: expected START:END (seconds), e.g. 60:600 or :300")
    a, b = text.split(":", 1)
    try:
        return (float(a) if a else None, float(b) if b else None)
    except ValueError:
        raise ValueError(f"--window {text!r}: START and END must be numbers of seconds") from None


def _pairs(flag: str, items: list[str], shape: str = "FIELD=COLUMN") -> dict[str, str] | None:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{flag} {item!r}: expected {shape}")
        out[key] = value
    return out or None


def _jitter(text: str | None) -> float | str | None:
    if text is None:
        return None
    if text in ("auto", "none"):
        return "auto" if text == "auto" else 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--jitter {text!r}: expected auto, none or a number of seconds") from None
    if not 0 <= value <= 3600:
        raise ValueError(f"--jitter {text!r}: seconds must be within 0..3600")
    return value


def _provenance_lines(table: Any) -> list[str]:
    import json

    from load_tests.provenance import PROVENANCE_KEY

    raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
    if not raw:
        return []
    p = json.loads(raw)
    if p.get("pattern") != "replay":
        return []
    lines = [f"  from the log: {', '.join(p['from_log']) or 'nothing but the timestamps'}"]
    if p.get("filled"):
        lines.append(f"  drawn from the config's mix (--fill): {', '.join(p['filled'])}")
    for kind, counts in (p.get("aliases") or {}).items():
        shown = ", ".join(f"{k} ({v} rows)" for k, v in counts.items())
        lines.append(f"  {kind} aliases applied: {shown}")
    lines.append(f"  jitter: {p.get('jitter')}")
    return lines


def _manifest(args: argparse.Namespace) -> int:
    import numpy as np

    from config import load_config
    from easel.references import with_reference_photos
    from load_tests.generators import generate_manifest
    from load_tests.manifest import write_manifest

    cfg = load_config(args.config)
    params: dict[str, Any] = {
        k: getattr(args, k)
        for k in (
            "burstiness",
            "peak_ratio",
            "burst_every_s",
            "burst_length_s",
            "ramp_to",
            "replay_path",
            "speedup",
        )
        if getattr(args, k) is not None
    }
    try:
        replay: dict[str, Any] = {
            "window": _window(args.window),
            "columns": _pairs("--map", args.map),
            "aliases": _pairs("--alias", args.alias, "LOG=MODEL"),
            "niche_aliases": _pairs("--niche-alias", args.niche_alias, "LOG=NICHE"),
            "jitter_s": _jitter(args.jitter),
        }
        if args.fill:
            replay["fill"] = [f.strip() for f in args.fill.split(",") if f.strip()]
        if args.time_unit:
            replay["time_unit"] = args.time_unit
        params.update({k: v for k, v in replay.items() if v is not None})
        table = generate_manifest(
            cfg, pattern=args.pattern, jobs=args.jobs, rate=args.rate, seed=args.seed, **params
        )
        table, conditioned = with_reference_photos(table, cfg)
    except ValueError as exc:
        print(f"easel manifest: {exc}", file=sys.stderr)
        return 2
    path = write_manifest(table, args.out)
    arr = table.column("arrival_s").to_numpy(zero_copy_only=False)
    span = float(np.nanmax(arr) - np.nanmin(arr)) if len(arr) else 0.0
    rate = (len(arr) - 1) / span if span > 0 else float("nan")
    print(f"wrote {path}: {table.num_rows} jobs over {span:.1f} s (mean {rate:.2f} req/s)")
    if conditioned:
        print(f"  {conditioned} jobs of image-conditioned niches carry reference photos")
    for line in _provenance_lines(table):
        print(line)
    return 0


def _load(args: argparse.Namespace) -> int:
    from pathlib import Path

    from config import load_config
    from load_tests.manifest import ManifestError

    out = args.resume or args.out
    config = args.config
    if args.resume and config is None and (Path(args.resume) / "config.yaml").is_file():
        config = str(Path(args.resume) / "config.yaml")  # the config the run was started with
    kw: dict[str, Any] = {
        "api": args.api,
        "max_in_flight": args.max_in_flight,
        "dispatchers": args.dispatchers,
        "timeout_s": args.timeout,
        "warmup_requests": args.warmup,
        "api_key_env": args.api_key_env,
        "address": args.address,
        "save_images": None if args.no_images is None else not args.no_images,
        "progress": not args.no_progress,
        "priority": args.priority,
    }
    try:
        if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ValueError("--resume DIR writes into DIR; leave out --out (or give the same)")
        if not out:
            raise ValueError("--out is required (or --resume DIR)")
        cfg = load_config(config)
        if args.sweep:
            if args.manifest or args.resume:
                raise ValueError(
                    "--sweep generates its own manifests; leave out --manifest/--resume"
                )
            if not args.url:
                raise ValueError("--url is required")
            from load_tests.sweep import run_sweep

            kw["api"] = kw["api"] or "easel"
            kw["save_images"] = False if kw["save_images"] is None else kw["save_images"]
            res = run_sweep(
                args.url,
                out,
                cfg,
                start_rate=args.start_rate,
                factor=args.factor,
                step_s=args.step_s,
                max_steps=args.max_steps,
                max_rate=args.max_rate,
                max_extend=args.max_extend,
                **kw,
            )
            for s in res.steps:
                verdict = {"pass": "pass", "fail": "FAIL"}.get(s.verdict, "inconclusive")
                print(f"{s.rate:10.3g} req/s  {s.jobs:6d} jobs  {verdict}  {'; '.join(s.reasons)}")
            best = "none" if res.best_rate is None else f"{res.best_rate:.4g} req/s"
            print(f"highest rate that met the SLO: {best} ({res.stopped_because}); {res.path}")
            return 0
        if not args.manifest and not args.resume:
            raise ValueError("--manifest is required (or use --sweep, or --resume DIR)")
        if not args.url and not args.resume:
            raise ValueError("--url is required")
        from load_tests.runner import run_load

        result = run_load(args.manifest, args.url, out, cfg, resume=bool(args.resume), **kw)
    except (ValueError, ManifestError) as exc:
        print(f"easel load: {exc}", file=sys.stderr)
        return 2
    from load_tests.stats import format_summary

    print(format_summary(result.summary))
    again = f", {result.recorded_before} recorded before this resume" if args.resume else ""
    print(f"wrote {result.requests_path} ({result.rows} rows, {result.rejected} rejected{again})")
    return 0
