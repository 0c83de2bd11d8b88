"""`easel` subcommands owned by serve_apps: `serve` and `models build|list`.

Only argparse-level imports at the top; torch, diffusers and Ray load inside the handlers.
"""

from __future__ import annotations

import argparse

from config.cli_types import non_negative_int
from serve_apps.tiny_models import DEFAULT_SEED, RECIPES

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add serve_apps' commands to the `easel` parser."""
    _register_serve(subparsers)
    _register_models(subparsers)


# --- easel serve ------------------------------------------------------------------------------


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve every model of the config over HTTP until Ctrl-C",
        description="Start a local Ray (or join one with --address), deploy the Serve "
        "application of the config and serve until Ctrl-C. --host/--port override the "
        "config's serve.host/serve.port.",
    )
    serve.add_argument("--config", help="config file (default: the embedded default config)")
    serve.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    serve.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from config import load_config
    from serve_apps.app import ensure_ray, run_app, wait_until_interrupted

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config)
    if args.port is not None and not 1 <= args.port <= 65_535:
        print(f"easel serve: --port {args.port} is not in 1..65535")
        return 2
    started_ray = ensure_ray(config, args.address)
    print(f"easel: deploying {len(config.models)} models of {config.name!r} ...", flush=True)
    try:
        url = run_app(config, host=args.host, port=args.port)
    except BaseException:
        if started_ray:  # a failed or interrupted deploy must not leave a Ray behind
            import ray

            ray.shutdown()
        raise
    print(f"easel: serving on {url} (docs: {url}/docs); Ctrl-C to stop", flush=True)
    wait_until_interrupted(shutdown_ray=started_ray)
    return 0


# --- easel models -----------------------------------------------------------------------------


def _register_models(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="build and list the tiny random-weight model zoo",
        description="Tiny random-weight builds of the real diffusers pipeline classes, saved "
        "under $EASEL_CACHE/tiny (default ~/.cache/easel/tiny); configs refer to them as "
        "weights: tiny://<recipe>.",
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="build the tiny models (skips current ones)")
    build.add_argument("--only", choices=list(RECIPES), help="build just this recipe")
    build.add_argument("--force", action="store_true", help="rebuild even if already built")
    build.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULT_SEED,
        help=f"weights seed (default {DEFAULT_SEED})",
    )
    build.set_defaults(func=_models_build)

    show = actions.add_parser("list", help="list the tiny models and their state")
    show.add_argument(
        "--config", help="config whose models are shown per recipe (default: embedded default)"
    )
    show.set_defaults(func=_models_list)


def _models_build(args: argparse.Namespace) -> int:
    import time

    from serve_apps import tiny_models

    for name in [args.only] if args.only else list(RECIPES):
        before = tiny_models.info(name)
        start = time.perf_counter()
        tiny_models.build(name, seed=args.seed, force=args.force)
        took = time.perf_counter() - start
        after = tiny_models.info(name)
        fresh = args.force or not before.built or before.seed != args.seed
        state = f"built in {after.build_s:.2f} s" if fresh else f"up to date ({took:.2f} s)"
        print(
            f"{name:<16} {after.pipeline:<26} {state:<22} {after.size_bytes / 1e6:7.1f} MB "
            f"{after.parameters:>11,} params  {after.path}"
        )
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from config import load_config
    from serve_apps import tiny_models

    config = load_config(args.config)
    users: dict[str, list[str]] = {}
    for model in config.models:
        if model.tiny_recipe:
            users.setdefault(model.tiny_recipe, []).append(model.name)
    rows = [("recipe", "pipeline", "size MB", "parameters", "seed", "used by", "path")]
    for item in tiny_models.list_models():
        rows.append(
            (
                item.recipe,
                item.pipeline,
                f"{item.size_bytes / 1e6:.1f}" if item.built else "-",
                f"{item.parameters:,}" if item.parameters is not None else "-",
                str(item.seed) if item.seed is not None else "-",
                ",".join(users.get(item.recipe, [])) or "-",
                str(item.path) if item.built else f"{item.path} (not built)",
            )
        )
    unknown = sorted(set(users) - set(RECIPES))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    for recipe in unknown:
        print(f"warning: models {users[recipe]} use unknown recipe tiny://{recipe}")
    return 1 if unknown else 0
