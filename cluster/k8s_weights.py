"""The model cache of one provider on Kubernetes: a volume, and the Job that fills it.

The PVC `<rayservice>-models` is mounted read-only at /models in every pod of the provider's Ray
cluster, which loads from it offline (`HF_HUB_OFFLINE=1`, `HF_HOME=/models/hf`; tiny builds in
`EASEL_CACHE=/models/easel`). The Job `<rayservice>-weights-<digest>` mounts it read-write and
runs `easel k8s weights`, which downloads exactly the pinned revisions with the `HF_TOKEN` from
the Secret (optional: only gated checkpoints need it). The digest covers the weight list, so
pinning a new revision is a new Job to run, and the same list is the same Job (already done).
For a one-node test cluster a `hostPath` PersistentVolume bound to this claim is enough
(docs/operations.md shows one).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cluster.k8s_common import (
    CONFIG_DIR,
    CONFIG_PATH,
    ManifestError,
    labels,
    namespace_of,
    rayservice_name,
)
from cluster.weights import plan, unpinned
from config import EaselConfig, ProviderConfig

__all__ = ["MODELS_DIR", "cache_env", "model_cache_pvc", "weights_job", "weights_job_name"]

MODELS_DIR = "/models"
HF_HOME = f"{MODELS_DIR}/hf"
EASEL_CACHE = f"{MODELS_DIR}/easel"


def cache_env(*, offline: bool) -> list[dict[str, Any]]:
    """Where the pods find (or the Job writes) weights; `offline` forbids any download."""
    env = [
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": "EASEL_CACHE", "value": EASEL_CACHE},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    if offline:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def model_cache_pvc(cfg: EaselConfig, provider: ProviderConfig) -> dict[str, Any]:
    """The provider's model cache volume claim."""
    spec: dict[str, Any] = {
        "accessModes": [cfg.kubernetes.volume_access_mode],
        "resources": {"requests": {"storage": f"{cfg.kubernetes.model_cache_gb}Gi"}},
    }
    if provider.kubernetes.storage_class:
        spec["storageClassName"] = provider.kubernetes.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"{rayservice_name(cfg, provider)}-models",
            "namespace": namespace_of(cfg, provider),
            "labels": labels(cfg, "model-cache", provider.name),
        },
        "spec": spec,
    }


def weights_job_name(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """`<rayservice>-weights-<digest of the weight list>`."""
    items = [i.describe() for i in plan(cfg, provider)]
    digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:8]
    return f"{rayservice_name(cfg, provider)}-weights-{digest}"


def weights_job(
    cfg: EaselConfig, provider: ProviderConfig, image: str, config_map_name: str
) -> dict[str, Any]:
    """The Job that fills the provider's model cache; ManifestError for unpinned hub weights."""
    loose = unpinned(plan(cfg, provider))
    if loose:
        raise ManifestError(
            f"provider {provider.name!r}: pin the hub weights its replicas load offline: "
            + "; ".join(i.describe() for i in loose)
            + " (set models[].revision / unet_revision to the commit to serve)"
        )
    k8s = cfg.kubernetes
    token = {
        "name": "HF_TOKEN",
        "valueFrom": {
            # Optional: only gated checkpoints need a token.
            "secretKeyRef": {"name": k8s.secret_name, "key": k8s.hf_token_key, "optional": True}
        },
    }
    resources = {"cpu": "2", "memory": "8Gi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": weights_job_name(cfg, provider),
            "namespace": namespace_of(cfg, provider),
            "labels": labels(cfg, "weights", provider.name),
        },
        "spec": {
            "backoffLimit": 4,
            "ttlSecondsAfterFinished": 7 * 86_400,
            "template": {
                "metadata": {"labels": labels(cfg, "weights", provider.name)},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "fetch",
                            "image": image,
                            "imagePullPolicy": k8s.image_pull_policy,
                            "command": [
                                "easel",
                                "k8s",
                                "weights",
                                "--config",
                                CONFIG_PATH,
                                "--provider",
                                provider.name,
                                "--cache",
                                MODELS_DIR,
                            ],
                            "env": [*cache_env(offline=False), token],
                            "resources": {"requests": resources, "limits": resources},
                            "volumeMounts": [
                                {"name": "easel-config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "models", "mountPath": MODELS_DIR},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "easel-config", "configMap": {"name": config_map_name}},
                        {
                            "name": "models",
                            "persistentVolumeClaim": {
                                "claimName": model_cache_pvc(cfg, provider)["metadata"]["name"]
                            },
                        },
                    ],
                },
            },
        },
    }
