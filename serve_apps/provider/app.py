"""Build one provider's Serve application: its ingress plus one deployment per model it serves.

A provider is its own Ray cluster (a RayService at that provider, a cluster-launcher cluster, or
locally a Serve application of a shared Ray or a Ray of its own): this is the application it
runs. Ways in:

- `serve_apps.provider:app_builder` is the import path for `serve run`, a Serve config file and
  KubeRay's `serveConfigV2`, with application args `{"config": "<path to YAML>", "provider":
  "<name>"}` (config omitted: the embedded default config).
- `build_provider_app(cfg, provider)` returns the `serve.Application` for code holding a config.

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
from pathlib import Path
from typing import Any

from ray import serve

from config import EaselConfig, ModelConfig, ProviderConfig, load_config

__all__ = [
    "INGRESS_NAME",
    "PROVIDER_RESOURCE_AMOUNT",
    "app_builder",
    "build_provider_app",
    "deployment_name",
    "deployment_options",
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


def build_provider_app(cfg: EaselConfig, provider: str) -> serve.Application:
    """`provider`'s Serve application: its ingress bound to one deployment per model it serves.

    Raises:
        KeyError: an unknown provider.
        ValueError: a provider that serves no self-hosted model (nothing to deploy).
    """
    from serve_apps.provider.ingress import ProviderIngress
    from serve_apps.provider.model import DiffusersModel

    prov = cfg.provider(provider)
    models = provider_models(cfg, provider)
    if not models:
        raise ValueError(
            f"provider {provider!r} serves no self-hosted model (its closed models, if any, are "
            "called by the gateway): nothing to deploy"
        )
    shared = [m for m in models if cfg.serve.share_tiny_replicas and shares_a_process(m)]
    cfg = resolve_tiny_weights(cfg)
    handles = {}
    for model in models:
        if len(shared) > 1 and model in shared:
            continue
        model = cfg.model(model.name)  # with its resolved weights
        handles[model.name] = DiffusersModel.options(**deployment_options(model, prov)).bind(
            model.model_dump(mode="json"), prov.model_dump(mode="json")
        )
    if len(shared) > 1:
        handles.update(_shared_deployment([cfg.model(m.name) for m in shared], prov))
    sv = cfg.serve
    return ProviderIngress.options(
        name=INGRESS_NAME,
        num_replicas=sv.ingress_replicas,
        # The ingress only awaits; its own bound (ingress_max_in_flight) answers 503 in the
        # API's JSON shape, Serve's bound below is a backstop that should never be reached.
        max_ongoing_requests=sv.ingress_max_in_flight + 100,
        max_queued_requests=sv.ingress_max_in_flight,
        ray_actor_options={"num_cpus": sv.ingress_num_cpus},
    ).bind(cfg.model_dump(mode="json"), provider, handles)


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


def _shared_deployment(models: list[ModelConfig], prov: ProviderConfig) -> dict[str, Any]:
    """One `SharedDiffusersModels` deployment for `models`, with the sum of their CPUs and
    request bounds (one pool for all: Serve bounds a deployment, not a model in it);
    {model: its handle}."""
    from serve_apps.provider.model import SharedDiffusersModels

    options = deployment_options(models[0], prov)
    options["name"] = deployment_name(SHARED_DEPLOYMENT, prov.name)
    options["num_replicas"] = 1
    options["ray_actor_options"]["num_cpus"] = sum(m.num_cpus for m in models)
    options["max_ongoing_requests"] = sum(m.max_ongoing_requests for m in models)
    options["max_queued_requests"] = sum(m.max_queued_requests for m in models)
    handle = SharedDiffusersModels.options(**options).bind(
        [m.model_dump(mode="json") for m in models], prov.model_dump(mode="json")
    )
    return dict.fromkeys((m.name for m in models), handle)


_ARGS = ("config", "provider")


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point for `serve run serve_apps.provider:app_builder config=... provider=...`.

    Args:
        args: Application args: `provider` (required, a provider of the config) and `config`
            (a path to the YAML; omitted: the embedded default).
    """
    unknown = set(args) - set(_ARGS)
    if unknown:
        raise ValueError(f"unknown application args {sorted(unknown)} (allowed: {list(_ARGS)})")
    if not args.get("provider"):
        raise ValueError("application arg `provider` is required (the provider this cluster is)")
    return build_provider_app(load_config(args.get("config")), str(args["provider"]))
