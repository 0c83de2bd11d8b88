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
        help="Kubernetes manifests from the config; offline validation; weight fetching",
        description="`render` writes one folder per provider (its RayService serving its own "
        "models, its model cache volume and the Job that fills it), one for the gateway "
        "(Deployment + Service) and one for the bench RayJob. `validate` checks manifests "
        "against the KubeRay CRDs and Kubernetes' own schemas, offline. `weights` fills a "
        "provider's model cache with the pinned revisions (what the rendered Job runs).",
    )
    actions = k8s.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    render = actions.add_parser("render", help="write the manifests of the config")
    _config_arg(render)
    render.add_argument("--out", help="folder for the manifests (one subfolder per part)")
    render.add_argument("--image", help="container image (default: kubernetes.image)")
    render.add_argument(
        "--shipped",
        action="store_true",
        help="re-render the shipped configs into the repository's k8s/ (with launcher configs)",
    )
    render.set_defaults(func=_k8s_render)

    validate = actions.add_parser("validate", help="validate manifests offline")
    validate.add_argument("paths", nargs="+", help="manifest files or folders (searched deep)")
    validate.add_argument("--crds", help="folder of KubeRay CRDs (default: the vendored ones)")
    validate.set_defaults(func=_k8s_validate)

    weights = actions.add_parser(
        "weights", help="fetch a provider's pinned weights into its model cache"
    )
    _config_arg(weights)
    weights.add_argument("--provider", required=True, help="whose models to fetch")
    weights.add_argument(
        "--cache",
        required=True,
        help="the model cache folder (hub files go to CACHE/hf/hub, tiny builds to CACHE/easel)",
    )
    weights.add_argument("--dry-run", action="store_true", help="print the plan, fetch nothing")
    weights.set_defaults(func=_k8s_weights)


def _k8s_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cluster.kuberay import ManifestError, write_manifests
    from cluster.shipped import render_shipped
    from config import load_config

    if args.shipped == bool(args.out or args.config or args.image):
        return _fail("k8s render", "give either --out (with --config/--image) or --shipped", 2)
    try:
        if args.shipped:
            written = render_shipped()
        else:
            cfg = load_config(args.config)
            written = write_manifests(cfg, args.out, image=args.image)
    except ManifestError as exc:
        return _fail("k8s render", str(exc), 2)
    for path in written:
        print(f"wrote {path}")
    if not args.shipped:
        from cluster.k8s_common import context_of

        print(
            "each folder belongs to one cluster: apply its files in order there, the "
            "RayService once the weights Job is done (docs/operations.md, section 3):"
        )
        places = {p.name: context_of(cfg, p) for p in cfg.providers}
        for folder in sorted({p.parent.name for p in written}):
            ctx = places.get(folder, context_of(cfg))
            flag = f"--context {ctx} " if ctx else ""
            print(f"  {folder}/: kubectl {flag}apply -f {Path(args.out) / folder}/<file>")
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
            # launcher/ holds `ray up` configs, not Kubernetes objects (Ray validates those).
            files += [
                f
                for f in sorted(p.rglob("*.yaml"))
                if "launcher" not in f.relative_to(p).parts[:-1]
            ]
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


def _k8s_weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cluster.weights import WeightsError, fetch, plan
    from config import load_config

    cfg = load_config(args.config)
    try:
        provider = cfg.provider(args.provider)
    except KeyError as exc:
        return _fail("k8s weights", str(exc).strip("\"'"), 2)
    items = plan(cfg, provider)
    cache = Path(args.cache)
    for item in items:
        print(f"{'would fetch' if args.dry_run else 'fetching'} {item.describe()}", flush=True)
    if args.dry_run:
        return 0
    missing = [i for i in items if i.kind == "local" and not Path(i.source).exists()]
    if missing:
        return _fail(
            "k8s weights",
            "local weights not on the volume: " + "; ".join(i.describe() for i in missing),
            1,
        )
    try:
        paths = fetch(items, cache / "hf" / "hub", token=os.environ.get("HF_TOKEN") or None)
    except WeightsError as exc:
        return _fail("k8s weights", str(exc), 2)
    except OSError as exc:  # network, disk full, a gated repo without a token
        return _fail("k8s weights", f"download failed: {exc}")
    tiny_items = [i for i in items if i.kind == "tiny"]
    if tiny_items:
        # Tiny builds live in $EASEL_CACHE; replicas there read them from the same folder.
        os.environ["EASEL_CACHE"] = str(cache / "easel")
        from serve_apps.provider import tiny

        paths += [tiny.ensure(i.source) for i in tiny_items]
    for path in paths:
        print(f"cached {path}")
    return 0


# --- easel scale ------------------------------------------------------------------------------


def _k8s_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument(
        "--context",
        help="kubeconfig context (default: the provider's kubernetes.context, else "
        "kubernetes.context, else the current one)",
    )
    parser.add_argument("--namespace", help="namespace (default: as rendered)")
    parser.add_argument("--name", help="RayService name (default: as rendered)")


def _provider_cluster(args: argparse.Namespace, cfg: Any, provider: Any) -> Any:
    from cluster.k8s_common import context_of, namespace_of, rayservice_name
    from cluster.scaling import ProviderCluster, custom_objects_api

    return ProviderCluster(
        custom_objects_api(args.kubeconfig, args.context or context_of(cfg, provider)),
        args.namespace or namespace_of(cfg, provider),
        args.name or rayservice_name(cfg, provider),
    )


def _register_scale(subparsers: argparse._SubParsersAction) -> None:
    scale = subparsers.add_parser(
        "scale",
        help="change one provider's Serve autoscaling bounds or worker group bounds",
        description="Change what KubeRay honours for one provider: a model's Serve autoscaling "
        "bounds in the RayService's serveConfigV2 (KubeRay applies it to the running cluster in "
        "place), and/or a worker group's minReplicas/maxReplicas on the live RayCluster (found "
        "through the RayService's status; the Ray autoscaler reads them there). Refused when "
        "the replicas would not fit the worker pods. A RayService's own replica fields are "
        "never patched: KubeRay ignores them.",
    )
    _config_arg(scale)
    scale.add_argument("--provider", required=True, help="provider to scale")
    scale.add_argument(
        "--model",
        action="append",
        default=[],
        help="model whose deployment's bounds change (repeat; default: every model it serves)",
    )
    scale.add_argument("--min", dest="min_replicas", type=int, help="Serve min_replicas")
    scale.add_argument("--max", dest="max_replicas", type=int, help="Serve max_replicas")
    scale.add_argument(
        "--group",
        choices=("gpu", "cpu"),
        default="gpu",
        help="worker group for --workers-min/--workers-max (default: gpu)",
    )
    scale.add_argument("--workers-min", type=int, help="the group's minReplicas (pods)")
    scale.add_argument("--workers-max", type=int, help="the group's maxReplicas (pods)")
    scale.add_argument(
        "--dry-run",
        action="store_true",
        help="print the JSON patches it would send; change nothing",
    )
    _k8s_target_args(scale)
    scale.set_defaults(func=_scale)


def _scale(args: argparse.Namespace) -> int:
    from cluster.capacity import hosted_models
    from cluster.kuberay import ManifestError
    from cluster.scaling import ScaleApiError, ScaleError, scale_provider
    from config import load_config

    cfg = load_config(args.config)
    try:
        provider = cfg.provider(args.provider)
    except KeyError as exc:
        return _fail("scale", str(exc).strip("\"'"), 2)
    serve_given = args.min_replicas is not None or args.max_replicas is not None
    workers_given = args.workers_min is not None or args.workers_max is not None
    if args.model and not serve_given:
        return _fail("scale", "--model needs --min and/or --max", 2)
    if not serve_given and not workers_given:
        return _fail(
            "scale", "nothing to change: give --min/--max and/or --workers-min/--workers-max", 2
        )
    models = args.model or [m.name for m in hosted_models(cfg, provider)]
    serve = {m: (args.min_replicas, args.max_replicas) for m in models} if serve_given else {}
    workers = {args.group: (args.workers_min, args.workers_max)} if workers_given else {}
    try:
        cluster = _provider_cluster(args, cfg, provider)
        patches = scale_provider(
            cfg, provider, cluster, serve=serve, workers=workers, dry_run=args.dry_run
        )
    except ManifestError as exc:
        return _fail("scale", str(exc), 2)
    except ScaleApiError as exc:
        return _fail("scale", str(exc), 1)
    except ScaleError as exc:  # refused before sending anything
        return _fail("scale", str(exc), 2)
    if args.dry_run:
        print(json.dumps([p.to_dict() for p in patches], indent=2))
        return 0
    for p in patches:
        print(f"easel: {provider.name}: {p.kind} {p.namespace}/{p.name}: {p.why}")
    return 0


# --- easel operator ---------------------------------------------------------------------------


def _register_operator(subparsers: argparse._SubParsersAction) -> None:
    op = subparsers.add_parser(
        "operator",
        help="move traffic weights and capacity between providers, in a loop",
        description="Every operator.interval_s: read the gateway's routing view and every "
        "provider's RayService, move each model's weights between its providers (price, "
        "headroom, health) and its per-provider Serve replica ceilings (queue depth, errors), "
        "draining a route at the gateway before scaling it in; log each decision with its "
        "reason (JSON lines on stdout).",
    )
    _config_arg(op)
    _url_arg(op)
    op.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    op.add_argument("--no-k8s", action="store_true", help="weights only; never scale")
    op.add_argument("--dry-run", action="store_true", help="log decisions, change nothing")
    op.add_argument("--iterations", type=int, help="stop after this many intervals")
    op.add_argument("--interval", type=float, help="seconds between intervals (config default)")
    op.set_defaults(func=_operator)


def _operator(args: argparse.Namespace) -> int:
    from cluster.capacity import hosted_models
    from cluster.k8s_common import context_of, namespace_of, rayservice_name
    from cluster.kuberay import ManifestError
    from cluster.operator import Operator
    from cluster.routing_client import RoutingError
    from cluster.scaling import ProviderCluster, ScaleError, custom_objects_api
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
        clusters = {}
        if not args.no_k8s:
            apis: dict[Any, Any] = {}  # one API client per kube context
            for p in cfg.providers:
                if not hosted_models(cfg, p):
                    continue
                ctx = context_of(cfg, p)
                if ctx not in apis:
                    apis[ctx] = custom_objects_api(args.kubeconfig, ctx)
                clusters[p.name] = ProviderCluster(
                    apis[ctx], namespace_of(cfg, p), rayservice_name(cfg, p)
                )
        with _routing(args, cfg) as routing:
            operator = Operator(
                cfg,
                routing,
                clusters,
                dry_run=args.dry_run,
                emit=lambda d: print(d.to_json(), flush=True),
            )
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
