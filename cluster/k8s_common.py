"""What every rendered Kubernetes object shares: names, labels, quantities, secrets, digests.

Digests decide what rolls. A ConfigMap's name carries a digest of only the config fields that
change what the pods reading it run, so a config change that matters is a pod-template change
(KubeRay rolls a new cluster, a Deployment rolls its pods) and one that does not (prices,
traffic, operator thresholds, scoring, report settings) changes nothing that runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from typing import Any

from cluster.capacity import hosted_models
from config import EaselConfig, ProviderConfig

__all__ = [
    "CONFIG_DIR",
    "CONFIG_FILE",
    "CONFIG_PATH",
    "CONTEXT_ANNOTATION",
    "PROVIDER_RESOURCE_UNITS",
    "ManifestError",
    "base_name",
    "bench_name",
    "config_map",
    "context_of",
    "default_image",
    "gateway_digest",
    "gateway_name",
    "gib",
    "image_of",
    "labels",
    "namespace_manifest",
    "namespace_of",
    "provider_digest",
    "pullable",
    "quantity",
    "ray_version",
    "rayservice_name",
    "secret_env",
    "serve_service_url",
]

CONFIG_DIR = "/etc/easel"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
# Units of `provider:<name>` each Ray node of that provider carries; deployments ask for a small
# fraction of it, so the resource pins placement without limiting how many replicas fit.
PROVIDER_RESOURCE_UNITS = 100
# KubeRay appends "-<5 chars>" to a RayService's name for its RayCluster, and "-serve-svc" to
# name its Serve Service; RayCluster names are at most 53 characters (DNS-1035).
_MAX_RAYSERVICE = 47
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Fields no pod reads: changing them must not roll a cluster (see the module docstring).
_NOT_RUN = ("description", "traffic", "slo", "evaluation", "cost", "operator")
_PROVIDER_NOT_RUN = (
    "price_per_gpu_hour",
    "price_date",
    "price_source",
    "capacity",
    "min_replicas",
    "max_replicas",
    "project_id",
    "kubernetes",
)
# Per model: autoscaling is applied in place through serveConfigV2; the rest is report-only.
_MODEL_NOT_RUN = ("autoscaling", "slo_ms", "tflop_per_step")


class ManifestError(ValueError):
    """The config cannot be deployed as asked (names Kubernetes rejects, GPUs that do not fit)."""


def ray_version() -> str:
    """The installed Ray's version: the `rayVersion` every manifest pins."""
    return importlib.metadata.version("ray")


def default_image() -> str:
    """The tag k8s/Dockerfile builds: easel on the Ray image of the installed version."""
    return f"easel:{importlib.metadata.version('easel')}-ray{ray_version()}"


def image_of(cfg: EaselConfig, image: str | None = None) -> str:
    """The image every pod runs: `image`, else `kubernetes.image`, else the local default tag.

    Real (not simulated) providers pull it, so it must name a registry ('host/path:tag');
    ManifestError otherwise.
    """
    ref = image or cfg.kubernetes.image or default_image()
    real = [p.name for p in cfg.providers if not p.simulated]
    if real and not pullable(ref):
        raise ManifestError(
            f"image {ref!r} names no registry, so the nodes of {real} cannot pull it: push "
            "k8s/Dockerfile's image and set kubernetes.image (or --image) to its full reference, "
            "e.g. registry.example.com/easel:<tag>"
        )
    return ref


def pullable(ref: str) -> bool:
    """True when an image reference names a registry host ('host[:port]/path[:tag]')."""
    first = ref.split("/", 1)[0]
    return "/" in ref and ("." in first or ":" in first or first == "localhost")


def base_name(cfg: EaselConfig) -> str:
    """The prefix of every rendered name."""
    return cfg.kubernetes.name or cfg.name


def rayservice_name(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """`<prefix>-<provider>`: the provider's RayService (its RayCluster's name adds 6 chars)."""
    name = f"{base_name(cfg)}-{provider.name}"
    if len(name) > _MAX_RAYSERVICE or not _DNS1035.match(name):
        raise ManifestError(
            f"{name!r} cannot name provider {provider.name!r}'s RayService: KubeRay needs at most "
            f"{_MAX_RAYSERVICE} lower-case letters, digits and '-', starting with a letter; "
            "shorten kubernetes.name or the provider's name"
        )
    return name


def gateway_name(cfg: EaselConfig) -> str:
    """`<prefix>-gateway`: the gateway Deployment and Service."""
    return _checked(f"{base_name(cfg)}-gateway")


def bench_name(cfg: EaselConfig) -> str:
    """`<prefix>-bench`: the bench RayJob."""
    return _checked(f"{base_name(cfg)}-bench", _MAX_RAYSERVICE)


def _checked(name: str, limit: int = 63) -> str:
    if len(name) > limit or not _DNS1035.match(name):
        raise ManifestError(
            f"{name!r} is not a Kubernetes name (at most {limit} lower-case letters, digits and "
            "'-', starting with a letter): shorten kubernetes.name"
        )
    return name


def context_of(cfg: EaselConfig, provider: ProviderConfig | None = None) -> str | None:
    """The kubeconfig context a provider (None: the gateway and the bench) runs in."""
    if provider is not None and provider.kubernetes.context is not None:
        return provider.kubernetes.context
    return cfg.kubernetes.context


def namespace_of(cfg: EaselConfig, provider: ProviderConfig | None = None) -> str:
    """The namespace a provider (None: the gateway and the bench) runs in."""
    if provider is not None and provider.kubernetes.namespace is not None:
        return provider.kubernetes.namespace
    return cfg.kubernetes.namespace


def serve_service_url(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """Where the gateway's cluster reaches a provider that runs in the same Kubernetes cluster:
    the Serve Service KubeRay creates for the RayService (`<rayservice>-serve-svc`)."""
    rs = rayservice_name(cfg, provider)
    return f"http://{rs}-serve-svc.{namespace_of(cfg, provider)}.svc:{cfg.serve.port}"


def labels(cfg: EaselConfig, component: str, provider: str | None = None) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels, plus the provider's."""
    out = {
        "app.kubernetes.io/name": "easel",
        "app.kubernetes.io/instance": base_name(cfg),
        "app.kubernetes.io/component": component,
    }
    if provider is not None:
        out["easel.dev/provider"] = provider
    return out


CONTEXT_ANNOTATION = "easel.dev/kube-context"


def namespace_manifest(cfg: EaselConfig, namespace: str, context: str | None) -> dict[str, Any]:
    """The Namespace, so a folder applies on an empty cluster; it names the kube context the
    folder belongs to (`easel.dev/kube-context`; "(current)" for the current one)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {"app.kubernetes.io/name": "easel"},
            "annotations": {CONTEXT_ANNOTATION: context or "(current)"},
        },
    }


def config_map(
    cfg: EaselConfig,
    name: str,
    namespace: str,
    text: str,
    component: str,
    provider: str | None = None,
) -> dict[str, Any]:
    """A ConfigMap holding one config file (`config.yaml`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(cfg, component, provider),
        },
        "data": {CONFIG_FILE: text},
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(_canonical(obj), sort_keys=True).encode()).hexdigest()[:10]


def _canonical(obj: Any) -> Any:
    """Whole floats as ints: a default of `5` and a parsed `5.0` are the same setting."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def provider_digest(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """Digest of what `provider`'s pods run: its own entry (prices and bounds aside), its GPU
    type, the models it serves (autoscaling aside: serveConfigV2 applies that in place) and the
    serving limits. Prices, traffic, operator thresholds, scoring and other providers' models do
    not enter it."""
    data = {
        "name": cfg.name,
        "provider": _without(provider.model_dump(mode="json"), _PROVIDER_NOT_RUN),
        "gpu": cfg.gpu(provider.gpu).model_dump(mode="json"),
        "models": [
            _without(m.model_dump(mode="json"), _MODEL_NOT_RUN)
            for m in hosted_models(cfg, provider)
        ],
        "serve": _without(cfg.serve.model_dump(mode="json"), ("ingress_replicas",)),
    }
    return _digest(data)


def gateway_digest(cfg: EaselConfig, endpoints: dict[str, str]) -> str:
    """Digest of what the gateway runs: routing, serving limits, tenants, models and providers
    (prices included: `cheapest_healthy` routes by them) and the provider endpoints; traffic,
    operator thresholds, scoring and the report settings do not enter it."""
    data = _without(cfg.model_dump(mode="json"), (*_NOT_RUN, "kubernetes"))
    return _digest({"config": data, "endpoints": endpoints})


def _without(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def secret_env(cfg: EaselConfig, *, vendors: bool, tenants: bool) -> list[dict[str, Any]]:
    """Env variables the config names for secrets, each from `kubernetes.secret_name` by key.

    Args:
        vendors: include the closed-model API keys (the gateway calls the vendors).
        tenants: include the tenant keys (the gateway checks them; the bench sends one).
    """
    names = [cfg.serve.admin_key_env] if cfg.serve.admin_key_env else []
    if vendors:
        for m in cfg.models:
            # A simulated vendor runs beside the gateway and checks no key.
            if m.api is not None and m.api.api_key_env and m.api.simulated is None:
                names.append(m.api.api_key_env)
    if tenants:
        names += [t.api_key_env for t in cfg.serve.tenants]
    secret = cfg.kubernetes.secret_name
    return [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}}
        for n in dict.fromkeys(names)
    ]


def quantity(value: float) -> str:
    """A CPU quantity: whole or fractional cores, else millicores."""
    return f"{value:g}" if value >= 1 else f"{round(value * 1000)}m"


def gib(gb: float) -> str:
    """A memory quantity in Gi (or Mi for fractions)."""
    return f"{gb:g}Gi" if float(gb).is_integer() else f"{round(gb * 1024)}Mi"
