"""`easel` subcommands for what answers requests: `serve`, `gateway` and `models build|list`.

Only argparse-level imports at the top; torch, diffusers and Ray load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

from config.cli_types import non_negative_int
from serve_apps.provider.tiny.recipes import RECIPES
from serve_apps.provider.tiny.zoo import DEFAULT_SEED

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the serving commands to the `easel` parser."""
    _register_serve(subparsers)
    _register_gateway(subparsers)
    _register_models(subparsers)


def _port_ok(command: str, port: int | None) -> bool:
    if port is not None and not 0 <= port <= 65_535:
        print(f"easel {command}: --port {port} is not in 0..65535", file=sys.stderr)
        return False
    return True


# --- easel serve ------------------------------------------------------------------------------


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve every model of the config over HTTP until Ctrl-C (providers + gateway)",
        description="Start the providers (one Serve application each, on a local Ray or the "
        "one --address joins), the simulated vendors and the gateway in front, and serve "
        "until Ctrl-C. --host/--port are the gateway's and override serve.host/serve.port.",
    )
    serve.add_argument("--config", help="config file (default: the embedded default config)")
    serve.add_argument("--host", help="address the gateway binds (default: serve.host)")
    serve.add_argument("--port", type=int, help="the gateway's port (default: serve.port, 8000)")
    serve.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--workers", type=int, help="gateway processes (default: serve.workers)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from config import load_config
    from serve_apps.local.stack import LocalStack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config)
    if not _port_ok("serve", args.port):
        return 2
    stack = LocalStack(
        config,
        host=args.host or config.serve.host,
        port=config.serve.port if args.port is None else args.port,
        workers=args.workers or config.serve.workers,
        address=args.address,
    )
    print(f"easel: starting {len(config.models)} models of {config.name!r} ...", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack.start()
        print(f"easel: serving on {stack.url} (docs: {stack.url}/docs); Ctrl-C to stop", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


# --- easel gateway ----------------------------------------------------------------------------


def _register_gateway(subparsers: argparse._SubParsersAction) -> None:
    gw = subparsers.add_parser(
        "gateway",
        help="run only the gateway, in front of provider endpoints named in the config",
        description="The gateway alone (what a Kubernetes Deployment runs): it routes to the "
        "providers at providers[].endpoint and to the closed models' APIs at api.base_url. "
        "--host/--port/--workers override serve.host/serve.port/serve.workers.",
    )
    gw.add_argument("--config", help="config file (default: the embedded default config)")
    gw.add_argument("--host", help="address to bind (default: serve.host)")
    gw.add_argument("--port", type=int, help="port (default: serve.port)")
    gw.add_argument("--workers", type=int, help="processes sharing the port (default: 1)")
    gw.set_defaults(func=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    import logging

    from serve_apps.gateway.core import GatewaySetupError
    from serve_apps.gateway.server import serve_gateway

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not _port_ok("gateway", args.port):
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"easel gateway: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        return serve_gateway(
            args.config, host=args.host, port=args.port, workers=args.workers,
            ready=lambda url: print(f"easel: gateway on {url}", flush=True),
        )  # fmt: skip
    except GatewaySetupError as exc:
        print(f"easel gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
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

    from serve_apps.provider import tiny

    for name in [args.only] if args.only else list(RECIPES):
        before = tiny.info(name)
        start = time.perf_counter()
        tiny.build(name, seed=args.seed, force=args.force)
        took = time.perf_counter() - start
        after = tiny.info(name)
        fresh = args.force or not before.built or before.seed != args.seed
        state = f"built in {after.build_s:.2f} s" if fresh else f"up to date ({took:.2f} s)"
        print(
            f"{name:<16} {after.pipeline:<26} {state:<22} {after.size_bytes / 1e6:7.1f} MB "
            f"{after.parameters:>11,} params  {after.path}"
        )
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from config import load_config
    from serve_apps.provider import tiny

    config = load_config(args.config)
    users: dict[str, list[str]] = {}
    for model in config.models:
        if model.tiny_recipe:
            users.setdefault(model.tiny_recipe, []).append(model.name)
    rows = [("recipe", "pipeline", "size MB", "parameters", "seed", "used by", "path")]
    for item in tiny.list_models():
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
