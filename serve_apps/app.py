"""Build the Serve application from a config: the ingress plus one deployment per (model, provider).

Three ways in, one application:
- `serve_apps.app:app_builder` is the import path for `serve run`, a Serve config file and
  KubeRay's `serveConfigV2`, with application args `{"config": "<path to YAML>"}` (omitted: the
  embedded default config).
- `build_app(cfg)` returns the `serve.Application` for code that already holds a config.
- `run_app(cfg, host=..., port=...)` starts Serve's HTTP proxy and deploys, for `easel serve` and
  `easel bench` (in-process).

Each (model, provider) deployment is named `<model>--<provider>` and asks for
`provider:<provider>` (0.001 of it) besides the model's CPUs and GPUs, so Ray places it on that
provider's nodes only; locally, simulated providers are custom resources on the local node.
`tiny://` weights are resolved to absolute paths here, on the driver (building the tiny model
if needed), so replicas never depend on the driver's environment (EASEL_CACHE).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ray import serve

from config import EaselConfig, ModelConfig, ProviderConfig, load_config
from serve_apps.deployments import DiffusersModel, HttpApiModel
from serve_apps.ingress import EaselIngress
from serve_apps.routing import deployment_name

__all__ = [
    "APP_NAME",
    "INGRESS_NAME",
    "PROVIDER_RESOURCE_AMOUNT",
    "app_builder",
    "build_app",
    "deployment_options",
    "ensure_ray",
    "resolve_tiny_weights",
    "run_app",
    "wait_until_interrupted",
]

_log = logging.getLogger(__name__)

APP_NAME = "easel"
INGRESS_NAME = "EaselIngress"
# The share of a provider resource one replica takes: a label, not a capacity limit.
PROVIDER_RESOURCE_AMOUNT = 0.001
# What a local Ray gives each simulated provider: room for 1000 replicas per provider.
_LOCAL_PROVIDER_AMOUNT = 1.0


def deployment_options(model: ModelConfig, provider: ProviderConfig) -> dict[str, Any]:
    """Serve options of the (model, provider) deployment, all from the config."""
    scale = model.autoscaling
    options: dict[str, Any] = {
        "name": deployment_name(model.name, provider.name),
        "ray_actor_options": {
            "num_cpus": model.num_cpus,
            "num_gpus": model.num_gpus,
            "resources": {provider.resource: PROVIDER_RESOURCE_AMOUNT},
        },
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
    }
    if scale.min_replicas == scale.max_replicas:
        options["num_replicas"] = scale.min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scale.min_replicas,
            "max_replicas": scale.max_replicas,
            "initial_replicas": scale.initial_replicas,
            "target_ongoing_requests": scale.target_ongoing_requests,
            "upscale_delay_s": scale.upscale_delay_s,
            "downscale_delay_s": scale.downscale_delay_s,
        }
    return options


def resolve_tiny_weights(cfg: EaselConfig) -> EaselConfig:
    """`cfg` with every `tiny://<recipe>` replaced by the built model's absolute path."""
    from serve_apps.pipelines import resolve_weights

    models = []
    for m in cfg.models:
        if m.tiny_recipe is not None:
            started = time.perf_counter()
            path = str(Path(resolve_weights(m)).resolve())
            _log.info("%s: tiny://%s -> %s (%.1fs)", m.name, m.tiny_recipe, path,
                      time.perf_counter() - started)  # fmt: skip
            m = m.model_copy(update={"weights": path})
        models.append(m)
    return cfg.model_copy(update={"models": models})


def build_app(cfg: EaselConfig) -> serve.Application:
    """The Serve application for `cfg`: the ingress bound to every (model, provider) deployment."""
    cfg = resolve_tiny_weights(cfg)
    handles = {}
    for model in cfg.models:
        cls = DiffusersModel if model.backend == "diffusers" else HttpApiModel
        for p in model.providers:
            provider = cfg.provider(p)
            handles[deployment_name(model.name, p)] = cls.options(
                **deployment_options(model, provider)
            ).bind(model.model_dump(mode="json"), provider.model_dump(mode="json"))
    sv = cfg.serve
    return EaselIngress.options(
        name=INGRESS_NAME,
        num_replicas=sv.ingress_replicas,
        # The ingress only awaits; its own bound (ingress_max_in_flight) answers 503 in the
        # API's JSON shape, Serve's bound below is a backstop that should never be reached.
        max_ongoing_requests=sv.ingress_max_in_flight + 100,
        max_queued_requests=sv.ingress_max_in_flight,
        ray_actor_options={"num_cpus": sv.ingress_num_cpus},
    ).bind(cfg.model_dump(mode="json"), handles, cfg.digest())


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point for `serve run serve_apps.app:app_builder config=...` and Serve config files.

    Args:
        args: Application args; `config` is a path to the YAML (omitted: the embedded default).
    """
    unknown = set(args) - {"config"}
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)} (allowed: ['config'])")
    return build_app(load_config(args.get("config")))


def ensure_ray(cfg: EaselConfig, address: str | None = None) -> bool:
    """Connect to Ray: join `address`, or start a local Ray whose node carries every simulated
    provider's resource. Returns True when this call started a local Ray (the caller shuts it).
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)
        return False
    real = [p.name for p in cfg.providers if not p.simulated]
    if real:
        _log.warning(
            "providers %s are not simulated: their deployments wait for nodes with their "
            "provider:<name> resource, which a local Ray does not have (use --address)",
            real,
        )
    ray.init(
        address="local",
        include_dashboard=False,
        resources={p.resource: _LOCAL_PROVIDER_AMOUNT for p in cfg.providers if p.simulated},
    )
    return True


def run_app(
    cfg: EaselConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    blocking: bool = False,
    address: str | None = None,
) -> str:
    """Start Serve's HTTP proxy on host:port and deploy `cfg`; returns the base URL.

    Starts (or joins, with `address`) Ray first when needed. With `blocking`, serves until
    Ctrl-C, then shuts Serve (and a Ray this call started) down before returning.
    """

    started_ray = ensure_ray(cfg, address)
    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if blocking:
        _log.info("serving on %s; Ctrl-C to stop", base_url)
        wait_until_interrupted(shutdown_ray=started_ray)
    return base_url


def wait_until_interrupted(*, shutdown_ray: bool) -> None:
    """Block until Ctrl-C, then shut Serve down (and Ray, when `shutdown_ray`)."""
    import ray

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _log.info("shutting down")
    finally:
        serve.shutdown()
        if shutdown_ray:
            ray.shutdown()
