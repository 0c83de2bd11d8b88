"""Build one provider's Serve applications: its ingress, and one application per model.

A provider is its own Ray cluster (a RayService at that provider, a cluster-launcher cluster, or
locally Serve applications of a shared Ray or a Ray of its own): these are the applications it
runs.

- The ingress application (`<name>` at the provider's route prefix): easel's API for direct
  clients, `/v1/models`, `/healthz`, `/readyz`, `/v1/stats` (the gateway's probes).
- One application per model (`<name>--<model>` at `<prefix>/models/<model>`): the model's
  deployment is its own HTTP ingress, so the gateway's generate requests pass one Serve hop
  (proxy -> model replica, as in a bare Serve app) instead of two (proxy -> ingress -> model);
  the ingress calls the same deployments through handles.

Ways in:

- `serve_apps.provider:app_builder` (args `{"config": "<path to YAML>", "provider": "<name>"}`)
  and `serve_apps.provider:model_app_builder` (args `{config, provider, model}`) are the import
  paths for a Serve config file and KubeRay's `serveConfigV2` (config omitted: the embedded
  default config); `easel k8s render` writes them.
- `build_provider_apps(cfg, provider)` returns every application for code holding a config.

Only the self-hosted (diffusers) models of the provider are deployed here: closed models are
the gateway's upstreams, called over their vendors' HTTP APIs. Each model deployment is named
`<model>--<provider>` (so replica ids say where they ran) and asks for `provider:<provider>`
(0.001 of it) besides the model's CPUs and GPUs, so on a cluster whose worker groups carry that
resource Ray places it there. With `serve.share_tiny_replicas` (local mode; `easel bench` sets
it) the provider's tiny CPU builds share one deployment, `tiny-models--<provider>`: one replica
process holding each model's own pipeline and batcher (`model.SharedDiffusersModels`).
`tiny://` weights are resolved to absolute paths here, on the driver (building the tiny model if
needed), so replicas never depend on the driver's environment (EASEL_CACHE).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve

from config import EaselConfig, ModelConfig, ProviderConfig, load_config

__all__ = [
    "INGRESS_NAME",
    "PROVIDER_RESOURCE_AMOUNT",
    "SHARED_DEPLOYMENT",
    "ProviderApp",
    "app_builder",
    "build_ingress_app",
    "build_model_app",
    "build_provider_apps",
    "deployment_name",
    "deployment_options",
    "model_app_builder",
    "model_app_name",
    "model_units",
    "provider_models",
    "resolve_tiny_weights",
]

_log = logging.getLogger(__name__)

INGRESS_NAME = "ProviderIngress"
# The share of a provider resource one replica takes: a label, not a capacity limit.
PROVIDER_RESOURCE_AMOUNT = 0.001


def deployment_name(model: str, provider: str) -> str:
    """The Serve deployment name of `model` in `provider`'s app."""
    return f"{model}--{provider}"


def provider_models(cfg: EaselConfig, provider: str) -> list[ModelConfig]:
    """The self-hosted models `provider` serves (closed models are the gateway's business)."""
    cfg.provider(provider)  # KeyError naming the known providers
    return [m for m in cfg.models if m.backend == "diffusers" and provider in m.providers]


def deployment_options(model: ModelConfig, provider: ProviderConfig) -> dict[str, Any]:
    """Serve options of `model`'s deployment in `provider`'s app, all from the config."""
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
    from serve_apps.provider.pipelines import resolve_weights

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


@dataclass(frozen=True)
class ProviderApp:
    """One Serve application of a provider: its name, route prefix and what it runs."""

    name: str
    route_prefix: str
    app: serve.Application


def model_app_name(provider_app: str, model: str) -> str:
    """The Serve application of `model` beside the provider application `provider_app`."""
    return f"{provider_app}--{model}"


def _served(cfg: EaselConfig, provider: str) -> list[ModelConfig]:
    models = provider_models(cfg, provider)
    if not models:
        raise ValueError(
            f"provider {provider!r} serves no self-hosted model (its closed models, if any, are "
            "called by the gateway): nothing to deploy"
        )
    return models


def build_ingress_app(
    cfg: EaselConfig, provider: str, units: dict[str, str] | None = None
) -> serve.Application:
    """`provider`'s ingress application: easel's API, calling each model's application.

    `units` ({model: its unit}, `model_units`) defaults to the config's; a caller holding a
    config whose `tiny://` weights are already resolved passes the units it took before.

    Raises:
        KeyError: an unknown provider.
        ValueError: a provider that serves no self-hosted model (nothing to deploy).
    """
    from serve_apps.provider.ingress import ProviderIngress

    _served(cfg, provider)
    units = model_units(cfg, provider) if units is None else units
    sv = cfg.serve
    return ProviderIngress.options(
        name=INGRESS_NAME,
        num_replicas=sv.ingress_replicas,
        # The ingress only awaits; its own bound (ingress_max_in_flight) answers 503 in the
        # API's JSON shape, Serve's bound below is a backstop that should never be reached.
        max_ongoing_requests=sv.ingress_max_in_flight + 100,
        max_queued_requests=sv.ingress_max_in_flight,
        ray_actor_options={"num_cpus": sv.ingress_num_cpus},
    ).bind(cfg.model_dump(mode="json"), provider, units)


SHARED_DEPLOYMENT = "tiny-models"


def shares_a_process(model: ModelConfig) -> bool:
    """Whether `model` may share a replica process (`serve.share_tiny_replicas`): a tiny CPU
    build with one fixed replica, so nothing about its scaling or placement is per model."""
    scale = model.autoscaling
    return (
        model.tiny_recipe is not None
        and model.num_gpus == 0
        and scale.min_replicas == scale.max_replicas == 1
    )


def model_units(cfg: EaselConfig, provider: str) -> dict[str, str]:
    """{model: the unit that serves it}: the model's own name (its own deployment and
    application), or `SHARED_DEPLOYMENT` for the tiny builds that share one replica process
    (`serve.share_tiny_replicas`, when at least two of the provider's models may)."""
    models = provider_models(cfg, provider)
    shared = {m.name for m in models if cfg.serve.share_tiny_replicas and shares_a_process(m)}
    if len(shared) < 2:
        shared = set()
    return {m.name: SHARED_DEPLOYMENT if m.name in shared else m.name for m in models}


def _shared_app(cfg: EaselConfig, provider: str, models: list[str]) -> serve.Application:
    """One `SharedDiffusersModels` deployment for `models`, with the sum of their CPUs and
    request bounds (one pool for all: Serve bounds a deployment, not a model in it)."""
    from serve_apps.provider.model import SharedDiffusersModels

    prov = cfg.provider(provider)
    configs = [cfg.model(m) for m in models]
    options = deployment_options(configs[0], prov)
    options["name"] = deployment_name(SHARED_DEPLOYMENT, prov.name)
    options["num_replicas"] = 1
    options["ray_actor_options"]["num_cpus"] = sum(m.num_cpus for m in configs)
    options["max_ongoing_requests"] = sum(m.max_ongoing_requests for m in configs)
    options["max_queued_requests"] = sum(m.max_queued_requests for m in configs)
    return SharedDiffusersModels.options(**options).bind(
        [m.model_dump(mode="json") for m in configs],
        prov.model_dump(mode="json"),
        cfg.serve.model_dump(mode="json"),
    )


def build_model_app(cfg: EaselConfig, provider: str, model: str) -> serve.Application:
    """`model`'s application in `provider`: its deployment, the HTTP ingress of its own route.

    Raises:
        KeyError: an unknown provider or model.
        ValueError: a model `provider` does not serve itself.
    """
    from serve_apps.provider.model import DiffusersModel

    if model not in {m.name for m in _served(cfg, provider)}:
        raise ValueError(f"provider {provider!r} does not serve the self-hosted model {model!r}")
    m = resolve_tiny_weights(cfg).model(model)  # with its resolved weights
    prov = cfg.provider(provider)
    return DiffusersModel.options(**deployment_options(m, prov)).bind(
        m.model_dump(mode="json"), prov.model_dump(mode="json"), cfg.serve.model_dump(mode="json")
    )


def build_provider_apps(
    cfg: EaselConfig, provider: str, *, name: str = "provider", route_prefix: str = "/"
) -> list[ProviderApp]:
    """Every Serve application of `provider`: the ingress `name` at `route_prefix`, and per
    model it serves `<name>--<model>` at `<route_prefix>/models/<model>` (`model_route.py`).

    Raises:
        KeyError: an unknown provider.
        ValueError: a provider that serves no self-hosted model (nothing to deploy).
    """
    from serve_apps.api.paths import model_route_prefix, models_route_prefix

    _served(cfg, provider)
    units = model_units(cfg, provider)  # before the weights resolve: `tiny://` says what is tiny
    cfg = resolve_tiny_weights(cfg)
    apps = [ProviderApp(name, route_prefix, build_ingress_app(cfg, provider, units))]
    shared = [m for m, unit in units.items() if unit == SHARED_DEPLOYMENT]
    if shared:  # mounted at `<prefix>/models`: it answers `<prefix>/models/<model>/...` by path
        apps.append(
            ProviderApp(
                model_app_name(name, SHARED_DEPLOYMENT),
                models_route_prefix(route_prefix),
                _shared_app(cfg, provider, shared),
            )
        )
    for m, unit in units.items():
        if unit != SHARED_DEPLOYMENT:
            apps.append(
                ProviderApp(
                    model_app_name(name, m),
                    model_route_prefix(route_prefix, m),
                    build_model_app(cfg, provider, m),
                )
            )
    return apps


def _check_args(args: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    unknown = set(args) - set(allowed)
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)} (allowed: {list(allowed)})")
    for key in required:
        if not args.get(key):
            raise ValueError(f"application arg `{key}` is required ({_ARG_HELP[key]})")


_ARG_HELP = {"provider": "the provider this cluster is", "model": "the model this app serves"}


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point of a provider's ingress application (`serve_apps.provider:app_builder`).

    Its models run in applications of their own beside it (`model_app_builder`), named
    `<this app's name>--<model>`: a Serve config lists them all (`easel k8s render`).

    Args:
        args: Application args: `provider` (required, a provider of the config) and `config`
            (a path to the YAML; omitted: the embedded default).
    """
    _check_args(args, ("config", "provider"), ("provider",))
    return build_ingress_app(load_config(args.get("config")), str(args["provider"]))


def model_app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point of one model's application (`serve_apps.provider:model_app_builder`).

    Args:
        args: Application args: `provider` and `model` (required) and `config` (a path to the
            YAML; omitted: the embedded default).
    """
    _check_args(args, ("config", "provider", "model"), ("provider", "model"))
    cfg = load_config(args.get("config"))
    return build_model_app(cfg, str(args["provider"]), str(args["model"]))
