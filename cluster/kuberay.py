"""KubeRay manifests rendered from the config: one Ray cluster per provider, the gateway in front,
the bench RayJob beside it.

Every provider is its own RayService, in its own Kubernetes cluster (`providers[].kubernetes`),
serving only that provider's models: `serveConfigV2` runs the provider's ingress application
(`serve_apps.provider:app_builder`, args `{config, provider}`) and one application per model
(`serve_apps.provider:model_app_builder`, args `{config, provider, model}`: its deployment with
its Serve autoscaling bounds, reachable at `/models/<model>`), and the Ray autoscaler
(`enableInTreeAutoscaling`) adds worker pods when Serve asks for replicas, within worker groups
sized by `cluster.capacity` (render refuses a config whose deployments cannot fit). Weights come
from a per-provider cache volume that a Job fills once with pinned revisions
(`cluster.k8s_weights`); replicas load from it offline.

`render(cfg)` returns every object by relative path: `<provider>/...`, `gateway/...` (see
`cluster.k8s_gateway`) and `bench/...` (see `cluster.k8s_bench`). Files are numbered in the
order to apply them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster._yaml import write_yaml_files
from cluster.capacity import GPU_GROUP, CapacityError, GroupPlan, hosted_models, plan_provider
from cluster.k8s_bench import bench_manifests
from cluster.k8s_common import (
    CONFIG_DIR,
    CONFIG_PATH,
    CONTEXT_ANNOTATION,
    PROVIDER_RESOURCE_UNITS,
    ManifestError,
    config_map,
    context_of,
    default_image,
    gib,
    image_of,
    labels,
    namespace_manifest,
    namespace_of,
    provider_digest,
    quantity,
    ray_version,
    rayservice_name,
    secret_env,
)
from cluster.k8s_gateway import gateway_manifests
from cluster.k8s_weights import MODELS_DIR, cache_env, model_cache_pvc, weights_job
from config import EaselConfig, ProviderConfig

__all__ = [
    "APP_IMPORT_PATH",
    "CONFIG_PATH",
    "MODEL_APP_IMPORT_PATH",
    "PROVIDER_RESOURCE_UNITS",
    "ManifestError",
    "default_image",
    "provider_config_map_name",
    "provider_manifests",
    "render",
    "serve_config",
    "serve_deployment_name",
    "write_manifests",
]

APP_IMPORT_PATH = "serve_apps.provider:app_builder"
MODEL_APP_IMPORT_PATH = "serve_apps.provider:model_app_builder"
PROVIDER_LABEL = "easel.dev/provider"
# GPU feature discovery's product label, for providers whose config gives no node selector.
_GPU_PRODUCT_LABELS = {
    ("A100-80GB", None): "NVIDIA-A100-SXM4-80GB",
    ("A100-80GB", "SXM"): "NVIDIA-A100-SXM4-80GB",
    ("A100-80GB", "PCIe"): "NVIDIA-A100-80GB-PCIe",
}
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_HEADER = (
    "# Rendered by `easel k8s render` from the easel config; do not edit by hand, re-render.\n"
)


def serve_deployment_name(model: str, provider: str) -> str:
    """The Serve deployment of `model` in `provider`'s app: `<model>--<provider>`, the name the
    serving app gives it (serveConfigV2 overrides deployments by name)."""
    return f"{model}--{provider}"


def provider_config_map_name(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """`<rayservice>-config-<digest>`: the digest covers only what the provider's pods run, so
    a price or traffic change keeps the name (and the pods); a model change rolls them."""
    return f"{rayservice_name(cfg, provider)}-config-{provider_digest(cfg, provider)}"


def serve_config(
    cfg: EaselConfig,
    provider: ProviderConfig,
    bounds: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The provider's `serveConfigV2`: its app on the mounted config, each model deployment with
    Serve autoscaling (config bounds, or `bounds[model] = (min, max)`)."""
    apps: list[dict[str, Any]] = [
        {
            "name": provider.name,
            "route_prefix": "/",
            "import_path": APP_IMPORT_PATH,
            "args": {"config": CONFIG_PATH, "provider": provider.name},
        }
    ]
    for m in hosted_models(cfg, provider):
        scale = m.autoscaling
        low, high = (bounds or {}).get(m.name, (scale.min_replicas, scale.max_replicas))
        auto: dict[str, Any] = {"min_replicas": low, "max_replicas": high}
        if scale.initial_replicas is not None:
            auto["initial_replicas"] = min(max(scale.initial_replicas, low), high)
        # float() throughout: a default `5` and a parsed `5.0` must render the same text.
        auto |= {
            "target_ongoing_requests": float(scale.target_ongoing_requests),
            "upscale_delay_s": float(scale.upscale_delay_s),
            "downscale_delay_s": float(scale.downscale_delay_s),
        }
        # The model's own application beside the ingress, under the names the provider app
        # expects (`<ingress app>--<model>` at `/models/<model>`: serve_apps.provider.app and
        # serve_apps.api.paths, a later floor; tests/cluster/test_kuberay.py keeps them equal).
        apps.append(
            {
                "name": f"{provider.name}--{m.name}",
                "route_prefix": f"/models/{m.name}",
                "import_path": MODEL_APP_IMPORT_PATH,
                "args": {"config": CONFIG_PATH, "provider": provider.name, "model": m.name},
                "deployments": [
                    {
                        "name": serve_deployment_name(m.name, provider.name),
                        "autoscaling_config": auto,
                    }
                ],
            }
        )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cfg.serve.port},
        "applications": apps,
    }


def provider_manifests(
    cfg: EaselConfig, provider: ProviderConfig, image: str
) -> dict[str, dict[str, Any]]:
    """One provider's objects by file name, in the order to apply them."""
    name = rayservice_name(cfg, provider)
    ns = namespace_of(cfg, provider)
    try:
        plans = plan_provider(cfg, provider)
    except CapacityError as exc:
        raise ManifestError(str(exc)) from None
    cm_name = provider_config_map_name(cfg, provider)
    k8s = cfg.kubernetes
    spec: dict[str, Any] = {
        "upgradeStrategy": {"type": k8s.upgrade_strategy},
        "rayClusterDeletionDelaySeconds": k8s.cluster_deletion_delay_s,
    }
    pk = provider.kubernetes
    if pk.serve_service_type == "LoadBalancer":
        service: dict[str, Any] = {"spec": {"type": "LoadBalancer"}}
        if pk.hostname:
            service["metadata"] = {
                "annotations": {"external-dns.alpha.kubernetes.io/hostname": pk.hostname}
            }
        spec["serveService"] = service
    spec["serveConfigV2"] = yaml.safe_dump(serve_config(cfg, provider), sort_keys=False)
    spec["rayClusterConfig"] = {
        **_cluster_spec(cfg, provider, image, cm_name, plans),
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
    }
    return {
        "00-namespace.yaml": namespace_manifest(cfg, ns, context_of(cfg, provider)),
        "10-configmap.yaml": config_map(cfg, cm_name, ns, cfg.to_yaml(), "provider", provider.name),
        "20-model-cache.yaml": model_cache_pvc(cfg, provider),
        "30-weights-job.yaml": weights_job(cfg, provider, image, cm_name),
        "40-rayservice.yaml": {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels(cfg, "provider", provider.name),
                # On the RayService, not the pod template: changing them rolls nothing.
                "annotations": {
                    CONTEXT_ANNOTATION: context_of(cfg, provider) or "(current)",
                    "easel.dev/cloud": provider.cloud,
                    "easel.dev/region": provider.region,
                    "easel.dev/price-per-gpu-hour": f"{provider.price_per_gpu_hour:g}",
                    "easel.dev/price-date": provider.price_date.isoformat(),
                },
            },
            "spec": spec,
        },
    }


def render(cfg: EaselConfig, image: str | None = None) -> dict[str, dict[str, Any]]:
    """Every manifest for `cfg` by relative path: `<provider>/NN-*.yaml` for each provider that
    serves an open model, `gateway/NN-*.yaml`, `bench/NN-*.yaml`.

    Raises:
        ValueError: a config that cannot run on KubeRay as rendered (`serve.share_tiny_replicas`
            is local mode's; here every model gets its own application).
    """
    if cfg.serve.share_tiny_replicas:
        raise ValueError(
            "serve.share_tiny_replicas is a local-mode setting (tiny CPU builds in one process); "
            "a RayService runs one application per model: set it to false to render"
        )
    image = image_of(cfg, image)
    out: dict[str, dict[str, Any]] = {}
    for p in cfg.providers:
        if not hosted_models(cfg, p):
            continue  # serves only closed models: the gateway calls those vendors itself
        for file, obj in provider_manifests(cfg, p, image).items():
            out[f"{p.name}/{file}"] = obj
    for file, obj in gateway_manifests(cfg, image).items():
        out[f"gateway/{file}"] = obj
    for file, obj in bench_manifests(cfg, image).items():
        out[f"bench/{file}"] = obj
    return out


def write_manifests(cfg: EaselConfig, out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Render `cfg` into `out_dir` (subfolders created as needed); returns the files written."""
    return write_yaml_files(render(cfg, image), out_dir, _HEADER)


# --- the provider's Ray cluster --------------------------------------------------------------


def _cluster_spec(
    cfg: EaselConfig,
    provider: ProviderConfig,
    image: str,
    config_map_name: str,
    plans: list[GroupPlan],
) -> dict[str, Any]:
    k8s = cfg.kubernetes
    env = [*secret_env(cfg, vendors=False, tenants=False), *cache_env(offline=True)]
    volumes = [
        {"name": "easel-config", "configMap": {"name": config_map_name}},
        {
            "name": "models",
            "persistentVolumeClaim": {
                "claimName": model_cache_pvc(cfg, provider)["metadata"]["name"],
                "readOnly": True,
            },
        },
    ]
    mounts = [
        {"name": "easel-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
    ]
    head_resources = {"cpu": quantity(k8s.head_cpus), "memory": gib(k8s.head_memory_gb)}
    head = {
        # The head schedules no work: GCS, the dashboard and the Serve controller keep its CPUs.
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": labels(cfg, "ray-head", provider.name)},
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
                            # KubeRay builds the Serve Service from the port named "serve".
                            {"name": "serve", "containerPort": cfg.serve.port},
                        ],
                        "resources": {"requests": head_resources, "limits": head_resources},
                        "env": env,
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        },
    }
    return {
        "rayVersion": ray_version(),
        # Serve asks for replicas within each deployment's autoscaling bounds; the Ray
        # autoscaler adds and removes worker pods to place them, within each group's bounds.
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": k8s.autoscaler_idle_timeout_s,
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            },
        },
        "headGroupSpec": head,
        "workerGroupSpecs": [
            _worker_group(cfg, provider, plan, image, env, volumes, mounts) for plan in plans
        ],
    }


def _worker_group(
    cfg: EaselConfig,
    provider: ProviderConfig,
    plan: GroupPlan,
    image: str,
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    k8s = cfg.kubernetes
    resources: dict[str, str] = {"cpu": quantity(plan.pod.cpus)}
    pod_spec: dict[str, Any] = {}
    if plan.name == GPU_GROUP:
        resources["memory"] = gib(k8s.worker_memory_gb_per_gpu * plan.pod.gpus)
        resources["nvidia.com/gpu"] = str(plan.pod.gpus)
        pod_spec["nodeSelector"] = _node_selector(cfg, provider)
        pod_spec["tolerations"] = [_GPU_TOLERATION] + [
            t.model_dump(exclude_none=True) for t in provider.tolerations
        ]
    else:
        resources["memory"] = gib(k8s.cpu_worker_memory_gb)
    # PyTorch and Ray's object store need more shared memory than a container's default 64 MiB.
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    pod_spec["containers"] = [
        {
            "name": "ray-worker",
            "image": image,
            "imagePullPolicy": k8s.image_pull_policy,
            "resources": {"requests": resources, "limits": resources},
            "env": env,
            "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        }
    ]
    pod_spec["volumes"] = [*volumes, shm]
    return {
        "groupName": plan.name,
        # The autoscaler owns `replicas` from here on; it starts at what the deployments' min
        # replicas fill, so the app can be placed at once.
        "replicas": max(plan.min_pods, min(plan.pods_at_min, plan.max_pods)),
        "minReplicas": plan.min_pods,
        "maxReplicas": plan.max_pods,
        "rayStartParams": {},
        "resources": {provider.resource: str(PROVIDER_RESOURCE_UNITS)},
        "template": {
            "metadata": {
                "labels": {
                    **labels(cfg, f"ray-{plan.name}-worker", provider.name),
                    PROVIDER_LABEL: provider.name,
                },
                "annotations": {
                    "easel.dev/cloud": provider.cloud,
                    "easel.dev/region": provider.region,
                },
            },
            "spec": pod_spec,
        },
    }


def _node_selector(cfg: EaselConfig, provider: ProviderConfig) -> dict[str, str]:
    if provider.node_selector:
        return dict(provider.node_selector)
    gpu = cfg.gpu(provider.gpu)
    label = _GPU_PRODUCT_LABELS.get((provider.gpu, gpu.form_factor))
    if label is None:
        known = sorted({g for g, _ in _GPU_PRODUCT_LABELS})
        raise ManifestError(
            f"provider {provider.name!r}: no node_selector in the config and no known node label "
            f"for gpu {provider.gpu!r} (known: {known}); set node_selector"
        )
    return {"nvidia.com/gpu.product": label}
