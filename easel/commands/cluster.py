"""`easel` subcommands for where things run: `cluster`, `k8s`, `scale`, `operator` and `route`.

Only argparse-level imports at the top; Ray, the kubernetes client and httpx load inside the
handlers. Exit status: 0 done, 1 the cluster or the API refused, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add cluster's commands to the `easel` parser."""
    _register_cluster(subparsers)
    _register_k8s(subparsers)
    _register_scale(subparsers)
    _register_operator(subparsers)
    _register_route(subparsers)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: the embedded default config)")


def _state_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", help="state file (default: $EASEL_CACHE/local-cluster.json)")


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"easel {command}: {message}", file=sys.stderr)
    return status


# --- easel cluster ----------------------------------------------------------------------------


def _register_cluster(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser(
        "cluster",
        help="providers, a local federation (providers + gateway), cluster-launcher configs",
        description="The provider catalogue of the config; `up --local` starts the providers "
        "(each its own Ray Serve app, or with --isolated its own Ray cluster), the simulated "
        "vendors and the gateway on this machine, in the background, and returns when the "
        "gateway is ready; `status --json` says where everything is; `down` stops it all; "
        "`launcher` writes Ray cluster-launcher configs for the providers at AWS, GCP and Azure.",
    )
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    providers = actions.add_parser("providers", help="the provider catalogue with dated prices")
    _config_arg(providers)
    providers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    providers.set_defaults(func=_cluster_providers)

    up = actions.add_parser("up", help="start the providers and the gateway on this machine")
    _config_arg(up)
    up.add_argument(
        "--local", action="store_true", required=True, help="on this machine (the only mode)"
    )
    up.add_argument(
        "--isolated",
        action="store_true",
        help="one Ray cluster per provider (own ports, temp folder, auth token) instead of one "
        "Ray with one Serve application per provider",
    )
    up.add_argument("--host", help="where the gateway binds (default: serve.host)")
    up.add_argument("--port", type=int, help="the gateway's port (default: serve.port; 0: free)")
    up.add_argument("--workers", type=int, help="gateway processes (default: serve.workers)")
    _state_arg(up)
    up.set_defaults(func=_cluster_up)

    down = actions.add_parser("down", help="stop everything `up --local` started")
    _state_arg(down)
    down.set_defaults(func=_cluster_down)

    status = actions.add_parser("status", help="the gateway and each provider: where, pids, health")
    _state_arg(status)
    status.add_argument("--json", action="store_true", help="print JSON (the stable shape)")
    status.set_defaults(func=_cluster_status)

    launcher = actions.add_parser("launcher", help="write Ray cluster-launcher configs")
    _config_arg(launcher)
    launcher.add_argument("--out", required=True, help="folder for <provider>.yaml files")
    launcher.add_argument("--image", help="container image (default: kubernetes.image)")
    launcher.set_defaults(func=_cluster_launcher)


def _cluster_providers(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cluster.providers import catalogue, format_catalogue
    from config import load_config

    entries = catalogue(load_config(args.config))
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2, default=str))
    else:
        print(format_catalogue(entries))
    return 0


def _state(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from cluster.local import default_state_path

    return Path(args.state) if args.state else default_state_path()


def _cluster_up(args: argparse.Namespace) -> int:
    from config import load_config
    from serve_apps.local.providers import served_providers
    from serve_apps.local.supervise import start_detached

    cfg = load_config(args.config)
    if args.port is not None and not 0 <= args.port <= 65_535:
        return _fail("cluster up", f"--port {args.port} is not in 0..65535", 2)
    providers = served_providers(cfg)
    mode = "one Ray cluster each" if args.isolated else "one Serve app each, on one Ray"
    print(f"easel: starting {len(providers)} providers ({', '.join(providers)}; {mode}), "
          "the simulated vendors and the gateway ...", flush=True)  # fmt: skip
    try:
        state = start_detached(
            _state(args), config=args.config, isolated=args.isolated, host=args.host,
            port=args.port, workers=args.workers,
        )  # fmt: skip
    except RuntimeError as exc:
        return _fail("cluster up", str(exc))
    print(f"easel: up in {state['startup_s']}s; gateway {state['gateway']['url']} (supervisor "
          f"pid {state['supervisor_pid']}, log {state['log']})")  # fmt: skip
    for p in state["providers"]:
        print(f"  {p['name']:<12} {p['endpoint']}  ray {p['ray_address']}  {len(p['pids'])} pids")
    print("  status:  easel cluster status --json")
    print("  stop it: easel cluster down")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from serve_apps.local.supervise import stop_detached

    state = stop_detached(_state(args))
    if state is None:
        print("easel: no local cluster is recorded; nothing to stop")
    else:
        print(f"easel: local cluster (gateway {state['gateway']['url']}) stopped")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from cluster.local import read_state
    from serve_apps.local.supervise import live_status

    state = read_state(_state(args))
    if state is None:
        print("easel: no local cluster is recorded", file=sys.stderr)
        return 1
    status = live_status(state)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"mode {status['mode']}, gateway {status['gateway']['url']}, "
              f"{'running' if status['running'] else 'NOT running'}")  # fmt: skip
        for p in status["providers"]:
            health = "healthy" if p["healthy"] else "UNHEALTHY"
            print(f"  {p['name']:<12} {health:<9} {p['endpoint']}  models {', '.join(p['models'])}")
    return 0 if status["running"] else 1


def _cluster_launcher(args: argparse.Namespace) -> int:
    from cluster.kuberay import ManifestError
    from cluster.launcher import LAUNCHER_CLOUDS, write_launchers
    from config import load_config

    cfg = load_config(args.config)
    try:
        written = write_launchers(cfg, args.out, image=args.image)
    except ManifestError as exc:
        return _fail("cluster launcher", str(exc), 2)
    for path in written:
        print(f"wrote {path}")
    skipped = [p.name for p in cfg.providers if p.cloud not in LAUNCHER_CLOUDS]
    if skipped:
        print(f"no launcher config for {skipped}: their clouds have no Ray node provider "
              f"({'/'.join(LAUNCHER_CLOUDS)} do); use KubeRay (`easel k8s render`)")  # fmt: skip
    return 0


# --- easel k8s ----------------------------------------------------------------------------------


def _register_k8s(subparsers: argparse._SubParsersAction) -> None:
    k8s = subparsers.add_parser(
        "k8s",
        help="KubeRay manifests from the config; offline schema validation",
        description="`render` writes a RayService (serveConfigV2 runs the `easel serve` app on "
        "the same config), a RayJob for `easel bench` and the config's ConfigMap. `validate` "
        "checks manifests against the KubeRay CRDs and Kubernetes' own schemas, offline.",
    )
    actions = k8s.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    render = actions.add_parser("render", help="write the KubeRay manifests of the config")
    _config_arg(render)
    render.add_argument("--out", help="folder for the manifests")
    render.add_argument("--image", help="container image (default: kubernetes.image)")
    render.add_argument(
        "--shipped", action="store_true",
        help="re-render the shipped configs into the repository's k8s/ (with launcher configs)",
    )  # fmt: skip
    render.set_defaults(func=_k8s_render)

    validate = actions.add_parser("validate", help="validate manifests offline")
    validate.add_argument("paths", nargs="+", help="manifest files or folders of *.yaml")
    validate.add_argument("--crds", help="folder of KubeRay CRDs (default: ../shared/kuberay-crds)")
    validate.set_defaults(func=_k8s_validate)


def _k8s_render(args: argparse.Namespace) -> int:
    from cluster.kuberay import ManifestError, write_manifests
    from cluster.shipped import render_shipped
    from config import load_config

    if args.shipped == bool(args.out or args.config or args.image):
        return _fail("k8s render", "give either --out (with --config/--image) or --shipped", 2)
    try:
        if args.shipped:
            written = render_shipped()
        else:
            written = write_manifests(load_config(args.config), args.out, image=args.image)
    except ManifestError as exc:
        return _fail("k8s render", str(exc), 2)
    for path in written:
        print(f"wrote {path}")
    return 0


def _k8s_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cluster.k8s_schema import default_crd_dir, load_schemas, validate_files

    try:
        schemas = load_schemas(Path(args.crds) if args.crds else default_crd_dir())
    except FileNotFoundError as exc:
        return _fail("k8s validate", f"{exc} (pass --crds)", 2)
    files: list[Path] = []
    for p in map(Path, args.paths):
        if p.is_dir():
            files += sorted(p.glob("*.yaml"))
        elif p.is_file():
            files.append(p)
        else:
            return _fail("k8s validate", f"{p}: no such file or folder", 2)
    bad = 0
    for path, problems in validate_files(files, schemas).items():
        print(f"{path}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
        bad += bool(problems)
    return 1 if bad else 0


# --- easel scale ------------------------------------------------------------------------------


def _k8s_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--namespace", help="namespace (default: kubernetes.namespace)")
    parser.add_argument("--name", help="RayService/RayCluster name (default: as rendered)")
    parser.add_argument(
        "--kind", choices=("rayservice", "raycluster"), default="rayservice",
        help="what holds the worker groups (default: rayservice)",
    )  # fmt: skip


def _scaler(args: argparse.Namespace, cfg: Any) -> Any:
    from cluster.kuberay import resource_name
    from cluster.scaling import Scaler, custom_objects_api

    return Scaler(
        custom_objects_api(args.kubeconfig, args.context),
        args.namespace or cfg.kubernetes.namespace,
        args.name or resource_name(cfg),
        kind=args.kind,
    )


def _register_scale(subparsers: argparse._SubParsersAction) -> None:
    scale = subparsers.add_parser(
        "scale",
        help="set one provider's worker replicas on KubeRay",
        description="Patch the provider's worker group (replicas, and optionally minReplicas/"
        "maxReplicas) through the Kubernetes API. Values must lie within the provider's "
        "bounds in the config (min_replicas, max_replicas, capacity / gpus_per_replica).",
    )
    _config_arg(scale)
    scale.add_argument("--provider", required=True, help="provider (worker group) to scale")
    scale.add_argument("--replicas", type=int, help="worker replicas")
    scale.add_argument("--min", dest="min_replicas", type=int, help="set minReplicas too")
    scale.add_argument("--max", dest="max_replicas", type=int, help="set maxReplicas too")
    _k8s_target_args(scale)
    scale.set_defaults(func=_scale)


def _scale(args: argparse.Namespace) -> int:
    from cluster.kuberay import ManifestError
    from cluster.providers import replica_bounds
    from cluster.scaling import ScaleError
    from config import load_config

    cfg = load_config(args.config)
    try:
        provider = cfg.provider(args.provider)
    except KeyError as exc:
        return _fail("scale", str(exc).strip("\"'"), 2)
    low, high = replica_bounds(provider)
    for label, value in (("--replicas", args.replicas), ("--min", args.min_replicas),
                         ("--max", args.max_replicas)):  # fmt: skip
        if value is not None and not low <= value <= high:
            return _fail(
                "scale",
                f"{label} {value} is outside provider {provider.name!r}'s bounds {low}..{high} "
                "(min_replicas..min(max_replicas, capacity / gpus_per_replica))",
                2,
            )
    try:
        group = _scaler(args, cfg).scale(
            provider.name, args.replicas, args.min_replicas, args.max_replicas
        )
    except ManifestError as exc:
        return _fail("scale", str(exc), 2)
    except ScaleError as exc:
        return _fail("scale", str(exc))
    print(f"easel: {provider.name}: replicas={group.replicas} (min {group.min_replicas}, "
          f"max {group.max_replicas})")  # fmt: skip
    return 0


# --- easel operator ---------------------------------------------------------------------------


def _register_operator(subparsers: argparse._SubParsersAction) -> None:
    op = subparsers.add_parser(
        "operator",
        help="move routing weight and capacity between providers, in a loop",
        description="Every operator.interval_s: read the app's routing state and the worker "
        "groups, shift weights and replicas between providers from queue depth, errors and "
        "price within each provider's bounds, and log each decision with its reason (JSON "
        "lines on stdout).",
    )
    _config_arg(op)
    _url_arg(op)
    _k8s_target_args(op)
    op.add_argument("--no-k8s", action="store_true", help="weights only; never scale")
    op.add_argument("--dry-run", action="store_true", help="log decisions, change nothing")
    op.add_argument("--iterations", type=int, help="stop after this many intervals")
    op.add_argument("--interval", type=float, help="seconds between intervals (config default)")
    op.set_defaults(func=_operator)


def _operator(args: argparse.Namespace) -> int:
    from cluster.kuberay import ManifestError
    from cluster.operator import Operator
    from cluster.routing_client import RoutingError
    from cluster.scaling import ScaleError
    from config import load_config

    cfg = load_config(args.config)
    if args.interval is not None:
        if not args.interval > 0:
            return _fail("operator", f"--interval must be > 0, got {args.interval}", 2)
        cfg = cfg.model_copy(
            update={"operator": cfg.operator.model_copy(update={"interval_s": args.interval})}
        )
    if args.iterations is not None and args.iterations < 1:
        return _fail("operator", f"--iterations must be >= 1, got {args.iterations}", 2)
    try:
        scaler = None if args.no_k8s else _scaler(args, cfg)
        with _routing(args, cfg) as routing:
            operator = Operator(
                cfg, routing, scaler, dry_run=args.dry_run,
                emit=lambda d: print(d.to_json(), flush=True),
            )  # fmt: skip
            operator.run(iterations=args.iterations)
    except (ManifestError, ScaleError, RoutingError) as exc:
        return _fail("operator", str(exc))
    except KeyboardInterrupt:
        pass
    return 0


# --- easel route ------------------------------------------------------------------------------


def _url_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the gateway (default: http://<serve.host>:<serve.port> of the config)"
    )


def _routing(args: argparse.Namespace, cfg: Any) -> Any:
    from cluster.routing_client import RoutingClient

    host = cfg.serve.host if cfg.serve.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = args.url or f"http://{host}:{cfg.serve.port}"
    env = cfg.serve.admin_key_env
    return RoutingClient(url, os.environ.get(env) if env else None)


def _register_route(subparsers: argparse._SubParsersAction) -> None:
    route = subparsers.add_parser(
        "route",
        help="per-provider routing on a running gateway: show, set, drain, undrain",
        description="Read and change the routing of a running easel gateway through its admin "
        "route, without a redeploy: the change reaches every gateway process. The admin key "
        "comes from the env variable the config names (serve.admin_key_env, default "
        "EASEL_ADMIN_KEY).",
    )
    actions = route.add_subparsers(dest="route_command", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="weights, health, outstanding and p95 per provider")
    show.add_argument("--json", action="store_true", help="print the raw view as JSON")
    set_ = actions.add_parser("set", help="set weights and/or the policy")
    set_.add_argument(
        "--weight", action="append", default=[], metavar="PROVIDER=W",
        help="a provider's weight (repeat for several)",
    )  # fmt: skip
    set_.add_argument("--policy", help="weighted | least_outstanding | cheapest_healthy")
    set_.add_argument("--model", help="only this model's routes (default: every model)")
    drain = actions.add_parser("drain", help="send no new request to providers")
    drain.add_argument("providers", nargs="+")
    drain.add_argument("--model", help="only this model's routes (default: every model)")
    drain.add_argument("--wait", action="store_true", help="wait until their in-flight finish")
    drain.add_argument("--timeout", type=float, default=120, help="--wait limit, seconds")
    undrain = actions.add_parser("undrain", help="give providers new requests again")
    undrain.add_argument("providers", nargs="+")
    undrain.add_argument("--model", help="only this model's routes (default: every model)")
    for parser, handler in ((show, _route_show), (set_, _route_set), (drain, _route_drain),
                            (undrain, _route_undrain)):  # fmt: skip
        _config_arg(parser)
        _url_arg(parser)
        parser.set_defaults(func=handler)


def _route_call(args: argparse.Namespace, action: Any) -> int:
    from dataclasses import asdict

    from cluster.routing_client import RoutingError, format_view
    from config import load_config

    try:
        with _routing(args, load_config(args.config)) as client:
            view = action(client)
    except RoutingError as exc:
        return _fail(f"route {args.route_command}", str(exc))
    if getattr(args, "json", False):
        print(json.dumps({"policy": view.policy, "providers": [asdict(r) for r in view.routes]},
                         indent=2))  # fmt: skip
    else:
        print(format_view(view))
    return 0


def _route_show(args: argparse.Namespace) -> int:
    return _route_call(args, lambda c: c.show())


def _route_set(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for item in args.weight:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            return _fail("route set", f"--weight takes PROVIDER=NUMBER, got {item!r}", 2)
    return _route_call(
        args, lambda c: c.update(policy=args.policy, weights=weights, model=args.model)
    )


def _route_drain(args: argparse.Namespace) -> int:
    def action(client: Any) -> Any:
        view = client.update(drain=args.providers, model=args.model)
        if args.wait:
            print(f"easel: waiting for in-flight requests on {args.providers} to finish ...",
                  flush=True)  # fmt: skip
            view = client.wait_drained(args.providers, timeout=args.timeout)
        return view

    return _route_call(args, action)


def _route_undrain(args: argparse.Namespace) -> int:
    return _route_call(args, lambda c: c.update(undrain=args.providers, model=args.model))
