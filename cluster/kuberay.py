"""KubeRay manifests rendered from the config: a RayService, a RayJob for `easel bench`, and the
ConfigMap both read the config from.

The RayService's `serveConfigV2` runs the same application `easel serve` runs
(`serve_apps.app:app_builder`) on the same config file, mounted from the ConfigMap. Each
provider becomes one worker group whose Ray nodes carry the `provider:<name>` resource, so the
per-(model, provider) deployments land on that provider's GPU nodes exactly as they land on the
local cluster's nodes.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import yaml

from cluster._yaml import write_yaml_files
from cluster.providers import replica_bounds
from config import EaselConfig, ProviderConfig

__all__ = [
    "CONFIG_PATH",
    "PROVIDER_RESOURCE_UNITS",
    "SERVE_IMPORT_PATH",
    "ManifestError",
    "default_image",
    "render",
    "resource_name",
    "serve_config",
    "write_manifests",
]

SERVE_IMPORT_PATH = "serve_apps.app:app_builder"
CONFIG_DIR = "/etc/easel"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
RUNS_DIR = "/runs"
# Units of `provider:<name>` each Ray node of that provider carries; deployments ask for a small
# fraction of it, so the resource pins placement without limiting how many replicas fit.
PROVIDER_RESOURCE_UNITS = 100
PROVIDER_LABEL = "easel.dev/provider"
# GPU feature discovery's product label, for providers whose config gives no node selector.
_GPU_PRODUCT_LABELS = {"A100-80GB": "NVIDIA-A100-SXM4-80GB"}
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ManifestError(ValueError):
    """The config cannot be deployed as asked (names Kubernetes rejects, GPUs that do not fit)."""


def ray_version() -> str:
    """The installed Ray's version: the `rayVersion` every manifest pins."""
    return importlib.metadata.version("ray")


def default_image() -> str:
    """The image k8s/Dockerfile builds: easel on the Ray image of the installed version."""
    return f"easel:{importlib.metadata.version('easel')}-ray{ray_version()}"


def resource_name(cfg: EaselConfig) -> str:
    """Name of the RayService (and the prefix of everything else rendered)."""
    name = cfg.kubernetes.name or cfg.name
    if not _DNS_LABEL.match(name) or len(name) > 40:
        raise ManifestError(
            f"{name!r} cannot name a RayService: set kubernetes.name to at most 40 lower-case "
            "letters, digits and '-'"
        )
    return name


def serve_config(cfg: EaselConfig) -> dict[str, Any]:
    """The Serve config (`serveConfigV2`): the `easel serve` application on the mounted config."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cfg.serve.port},
        "applications": [
            {
                "name": "easel",
                "route_prefix": "/",
                "import_path": SERVE_IMPORT_PATH,
                "args": {"config": CONFIG_PATH},
            }
        ],
    }


def render(cfg: EaselConfig, image: str | None = None) -> dict[str, dict[str, Any]]:
    """Every manifest for `cfg`, by file name: configmap, rayservice and the bench rayjob."""
    name = resource_name(cfg)
    k8s = cfg.kubernetes
    image = image or k8s.image or default_image()
    # The config digest in the ConfigMap's name makes a config change a pod-template change,
    # so KubeRay rolls the cluster instead of serving the old config from a stale mount.
    config_map = f"{name}-config-{cfg.digest()[:10]}"
    labels = {"app.kubernetes.io/name": "easel", "app.kubernetes.io/instance": name}
    meta = {"namespace": k8s.namespace, "labels": labels}
    cluster = _cluster_spec(cfg, image, config_map, runs_volume=False)
    return {
        "configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map, **meta},
            "data": {"config.yaml": cfg.to_yaml()},
        },
        "rayservice.yaml": {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": name, **meta},
            "spec": {
                "serveConfigV2": yaml.safe_dump(serve_config(cfg), sort_keys=False),
                "rayClusterConfig": {
                    **cluster,
                    "gcsFaultToleranceOptions": {
                        "redisAddress": k8s.redis_address,
                        "redisPassword": {
                            "valueFrom": {
                                "secretKeyRef": {
                                    "name": k8s.redis_password_secret,
                                    "key": k8s.redis_password_key,
                                }
                            }
                        },
                    },
                },
            },
        },
        "rayjob-bench.yaml": {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": f"{name}-bench", **meta},
            "spec": {
                "entrypoint": f"easel bench --config {CONFIG_PATH} --out {RUNS_DIR}/{name}",
                "submissionMode": "K8sJobMode",
                "backoffLimit": 0,
                "shutdownAfterJobFinishes": True,
                # Time to copy the run folder off the head (`kubectl cp`) before the cluster goes.
                "ttlSecondsAfterFinished": 600,
                "rayClusterSpec": _cluster_spec(cfg, image, config_map, runs_volume=True),
            },
        },
    }


def write_manifests(cfg: EaselConfig, out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Render `cfg` into `out_dir` (created if needed); returns the files written."""
    return write_yaml_files(render(cfg, image), out_dir, _HEADER)


_HEADER = (
    "# Rendered by `easel k8s render` from the easel config; do not edit by hand, re-render.\n"
)


def _cluster_spec(
    cfg: EaselConfig, image: str, config_map: str, runs_volume: bool
) -> dict[str, Any]:
    k8s = cfg.kubernetes
    env = _secret_env(cfg)
    volumes = [{"name": "easel-config", "configMap": {"name": config_map}}]
    mounts = [{"name": "easel-config", "mountPath": CONFIG_DIR, "readOnly": True}]
    # `easel bench` runs on the head and writes its run folder there.
    head_volumes = [*volumes, {"name": "runs", "emptyDir": {}}] if runs_volume else volumes
    head_mounts = [*mounts, {"name": "runs", "mountPath": RUNS_DIR}] if runs_volume else mounts
    head_resources = {"cpu": _quantity(k8s.head_cpus), "memory": _gib(k8s.head_memory_gb)}
    head = {
        # The head schedules no work: GCS, the dashboard and the Serve controller keep its CPUs.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "ray-head"}},
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": image,
                        "imagePullPolicy": k8s.image_pull_policy,
                        "ports": [
                            {"name": "gcs-server", "containerPort": 6379},
                            {"name": "dashboard", "containerPort": 8265},
                            {"name": "client", "containerPort": 10001},
                            {"name": "serve", "containerPort": cfg.serve.port},
                        ],
                        "resources": {"requests": head_resources, "limits": head_resources},
                        "env": env,
                        "volumeMounts": head_mounts,
                    }
                ],
                "volumes": head_volumes,
            },
        },
    }
    return {
        "rayVersion": ray_version(),
        # `easel operator` and `easel scale` own worker counts; the Ray autoscaler would fight them.
        "enableInTreeAutoscaling": False,
        "headGroupSpec": head,
        "workerGroupSpecs": [
            _worker_group(cfg, p, image, env, volumes, mounts) for p in cfg.providers
        ],
    }


def _worker_group(
    cfg: EaselConfig,
    provider: ProviderConfig,
    image: str,
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    if not _DNS_LABEL.match(provider.name):
        raise ManifestError(
            f"provider {provider.name!r} cannot name a worker group: use lower-case letters, "
            "digits and '-'"
        )
    hosted = [m for m in cfg.models if provider.name in m.providers]
    for m in hosted:
        if m.num_gpus > provider.gpus_per_replica:
            raise ManifestError(
                f"model {m.name!r} needs num_gpus={m.num_gpus:g} per replica but provider "
                f"{provider.name!r} worker pods hold gpus_per_replica={provider.gpus_per_replica}"
                "; raise the provider's gpus_per_replica"
            )
    k8s = cfg.kubernetes
    low, high = replica_bounds(provider)
    # A provider that hosts a model starts with one worker, so every deployment can be placed.
    replicas = min(max(low, 1 if hosted else 0), high)
    gpus = provider.gpus_per_replica
    resources = {
        "cpu": _quantity(k8s.worker_cpus_per_gpu * gpus),
        "memory": _gib(k8s.worker_memory_gb_per_gpu * gpus),
        "nvidia.com/gpu": str(gpus),
    }
    tolerations = [_GPU_TOLERATION] + [
        t.model_dump(exclude_none=True) for t in provider.tolerations
    ]
    return {
        "groupName": provider.name,
        "replicas": replicas,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {},
        "resources": {provider.resource: str(PROVIDER_RESOURCE_UNITS)},
        "template": {
            "metadata": {
                "labels": {PROVIDER_LABEL: provider.name},
                "annotations": {
                    "easel.dev/cloud": provider.cloud,
                    "easel.dev/region": provider.region,
                    "easel.dev/price-per-gpu-hour": f"{provider.price_per_gpu_hour:g}",
                    "easel.dev/price-date": provider.price_date.isoformat(),
                },
            },
            "spec": {
                "nodeSelector": _node_selector(provider),
                "tolerations": tolerations,
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": image,
                        "imagePullPolicy": k8s.image_pull_policy,
                        "resources": {"requests": resources, "limits": resources},
                        "env": env,
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        },
    }


def _node_selector(provider: ProviderConfig) -> dict[str, str]:
    if provider.node_selector:
        return dict(provider.node_selector)
    label = _GPU_PRODUCT_LABELS.get(provider.gpu)
    if label is None:
        raise ManifestError(
            f"provider {provider.name!r}: no node_selector in the config and no known node label "
            f"for gpu {provider.gpu!r} (known: {sorted(_GPU_PRODUCT_LABELS)}); set node_selector"
        )
    return {"nvidia.com/gpu.product": label}


def _secret_env(cfg: EaselConfig) -> list[dict[str, Any]]:
    """Env variables the config names for secrets, each read from the one Secret by key."""
    names = []
    if cfg.serve.admin_key_env:
        names.append(cfg.serve.admin_key_env)
    for m in cfg.models:
        # A simulated vendor runs in-cluster and checks no key.
        if m.api is not None and m.api.api_key_env and m.api.simulated is None:
            names.append(m.api.api_key_env)
    names += [t.api_key_env for t in cfg.serve.tenants]
    secret = cfg.kubernetes.secret_name
    return [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}}
        for n in dict.fromkeys(names)
    ]


def _quantity(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{round(value * 1000)}m"


def _gib(gb: float) -> str:
    return f"{gb:g}Gi" if float(gb).is_integer() else f"{round(gb * 1024)}Mi"
