"""The bench RayJob: benchmark the deployment that is running, from beside the gateway.

The RayJob brings up its own small Ray cluster (a head, CPU workers for load generation, GPU
workers for scoring when `evaluation.num_gpus` asks, both autoscaled from zero extra pods) and
runs `easel bench --url <gateway Service> --address auto` on it: KubeRay submits the entrypoint as
a Ray job, whose driver finds this cluster through `RAY_ADDRESS` (so no second Ray is started),
and `--url` benchmarks the running gateway without deploying or deleting any serving app. The run
folder goes to a PersistentVolumeClaim (`/runs`), which outlives the job's cluster; inputs
(reference images, traces, scoring weights) come read-only from a data volume (`/data`, with
`/models` its `models/` folder), filled once through the loader pod.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from cluster.capacity import PodShape, ReplicaNeed, pods_needed
from cluster.k8s_common import (
    CONFIG_DIR,
    CONFIG_PATH,
    bench_name,
    config_map,
    gib,
    labels,
    namespace_of,
    quantity,
    ray_version,
    secret_env,
)
from cluster.k8s_gateway import gateway_url
from config import EaselConfig

__all__ = ["RUNS_DIR", "bench_entrypoint", "bench_manifests"]

RUNS_DIR = "/runs"
DATA_DIR = "/data"
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Ray Data's manifest reading and the run's bookkeeping, beside the scorer actors.
_LOAD_CPUS = 2.0


def bench_entrypoint(cfg: EaselConfig) -> str:
    """The RayJob's entrypoint; each run writes a new folder under /runs (shell-expanded)."""
    return (
        f"easel bench --url {gateway_url(cfg)} --address auto --config {CONFIG_PATH} "
        f'--out {RUNS_DIR}/{cfg.name}-"$(date -u +%Y%m%dT%H%M%SZ)"'
    )


def _pvc(cfg: EaselConfig, name: str, gb: int, mode: str, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": f"{gb}Gi"}},
    }
    if cfg.kubernetes.storage_class:
        spec["storageClassName"] = cfg.kubernetes.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace_of(cfg),
            "labels": labels(cfg, component),
        },
        "spec": spec,
    }


def bench_manifests(cfg: EaselConfig, image: str) -> dict[str, dict[str, Any]]:
    """The bench's objects by file name, in the order to apply them."""
    name = bench_name(cfg)
    ns = namespace_of(cfg)
    k8s = cfg.kubernetes
    text = cfg.to_yaml()
    cm_name = f"{name}-config-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    runs, data = f"{name}-runs", f"{name}-data"
    volumes = [
        {"name": "easel-config", "configMap": {"name": cm_name}},
        {"name": "data", "persistentVolumeClaim": {"claimName": data, "readOnly": True}},
    ]
    mounts = [
        {"name": "easel-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR, "subPath": "data", "readOnly": True},
        {"name": "data", "mountPath": "/models", "subPath": "models", "readOnly": True},
    ]
    env = secret_env(cfg, vendors=False, tenants=True)
    head_resources = {"cpu": quantity(k8s.head_cpus), "memory": gib(k8s.head_memory_gb)}
    # The driver (and the load dispatchers beside it) run on the head and write the run folder.
    head = {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {
            "metadata": {"labels": labels(cfg, "bench-head")},
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
                        ],
                        "resources": {"requests": head_resources, "limits": head_resources},
                        "env": env,
                        "volumeMounts": [*mounts, {"name": "runs", "mountPath": RUNS_DIR}],
                    }
                ],
                "volumes": [
                    *volumes,
                    {"name": "runs", "persistentVolumeClaim": {"claimName": runs}},
                ],
            },
        },
    }
    ev = cfg.evaluation
    cpu_needs = [ReplicaNeed("load", 0, _LOAD_CPUS, 1)]
    if ev.num_gpus == 0:
        cpu_needs.append(ReplicaNeed("scorer", 0, ev.actor_num_cpus, ev.actors))
    groups = [
        _group(
            cfg,
            "cpu",
            image,
            env,
            volumes,
            mounts,
            gpus=0,
            cpus=k8s.cpu_worker_cpus,
            memory_gb=k8s.cpu_worker_memory_gb,
            low=1,
            high=_pods(cpu_needs, 0, k8s.cpu_worker_cpus),
        ),
    ]
    if ev.num_gpus > 0:
        gpus = math.ceil(ev.num_gpus)
        cpus = k8s.worker_cpus_per_gpu * gpus
        need = [ReplicaNeed("scorer", ev.num_gpus, ev.actor_num_cpus, ev.actors)]
        groups.append(
            _group(
                cfg,
                "gpu",
                image,
                env,
                volumes,
                mounts,
                gpus=gpus,
                cpus=cpus,
                memory_gb=k8s.worker_memory_gb_per_gpu * gpus,
                low=0,
                high=_pods(need, gpus, cpus),
            )
        )
    job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": ns, "labels": labels(cfg, "bench")},
        "spec": {
            "entrypoint": bench_entrypoint(cfg),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            # The run folder is on the volume: the cluster can go as soon as the job ends.
            "ttlSecondsAfterFinished": 60,
            "rayClusterSpec": {
                "rayVersion": ray_version(),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 60,
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                },
                "headGroupSpec": head,
                "workerGroupSpecs": groups,
            },
        },
    }
    loader = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-data-loader",
            "namespace": ns,
            "labels": labels(cfg, "bench-data-loader"),
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "loader",
                    "image": image,
                    "imagePullPolicy": k8s.image_pull_policy,
                    # Idles while `kubectl cp` fills the volume; delete the pod when done.
                    "command": ["sleep", "86400"],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    },
                    "volumeMounts": [{"name": "data", "mountPath": "/volume"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": data}}],
        },
    }
    return {
        "10-configmap.yaml": config_map(cfg, cm_name, ns, text, "bench"),
        "20-runs-volume.yaml": _pvc(cfg, runs, k8s.runs_gb, "ReadWriteOnce", "bench-runs"),
        "21-data-volume.yaml": _pvc(cfg, data, k8s.data_gb, k8s.volume_access_mode, "bench-data"),
        "30-data-loader.yaml": loader,
        "40-rayjob.yaml": job,
    }


def _pods(needs: list[ReplicaNeed], gpus: int, cpus: float) -> int:
    return max(1, pods_needed(needs, PodShape(gpus, cpus)))


def _group(
    cfg: EaselConfig,
    group: str,
    image: str,
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    *,
    gpus: int,
    cpus: float,
    memory_gb: float,
    low: int,
    high: int,
) -> dict[str, Any]:
    resources = {"cpu": quantity(cpus), "memory": gib(memory_gb)}
    spec: dict[str, Any] = {}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
        spec["tolerations"] = [_GPU_TOLERATION]
    spec["containers"] = [
        {
            "name": "ray-worker",
            "image": image,
            "imagePullPolicy": cfg.kubernetes.image_pull_policy,
            "resources": {"requests": resources, "limits": resources},
            "env": env,
            "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        }
    ]
    spec["volumes"] = [*volumes, {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    return {
        "groupName": group,
        "replicas": low,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {},
        "template": {"metadata": {"labels": labels(cfg, f"bench-{group}-worker")}, "spec": spec},
    }
