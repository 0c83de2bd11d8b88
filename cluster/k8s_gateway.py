"""The gateway on Kubernetes: a Deployment of `easel gateway` processes behind a Service.

The gateway holds no Ray: it routes each request by model to provider endpoints over HTTP (and to
closed-model vendors), so it scales as a plain Deployment. It reads the same config as every
other part, with `providers[].endpoint` filled in for each provider that serves open models:
the endpoint the config gives; else `http://<hostname>:<port>` for a provider exposed through a
load balancer with a DNS name; else, for a provider in the gateway's own Kubernetes cluster, the
Serve Service KubeRay creates for its RayService. A provider in another cluster with none of
these cannot be reached, and render says so. Only the gateway's copy of the config carries the
filled-in endpoints; the providers' copies keep what the config says.
"""

from __future__ import annotations

from typing import Any

import yaml

from cluster.capacity import hosted_models
from cluster.k8s_common import (
    CONFIG_DIR,
    CONFIG_PATH,
    ManifestError,
    config_map,
    context_of,
    gateway_digest,
    gateway_name,
    gib,
    labels,
    namespace_manifest,
    namespace_of,
    quantity,
    secret_env,
    serve_service_url,
)
from config import EaselConfig, ProviderConfig

__all__ = ["gateway_config_yaml", "gateway_manifests", "gateway_url", "provider_endpoint"]


def provider_endpoint(cfg: EaselConfig, provider: ProviderConfig) -> str:
    """The base URL the gateway reaches `provider`'s Serve app at (see the module docstring)."""
    if provider.endpoint:
        return provider.endpoint
    if provider.kubernetes.hostname:
        return f"http://{provider.kubernetes.hostname}:{cfg.serve.port}"
    if context_of(cfg, provider) == context_of(cfg):
        return serve_service_url(cfg, provider)
    raise ManifestError(
        f"provider {provider.name!r} runs in kube context {context_of(cfg, provider)!r}, the "
        f"gateway in {context_of(cfg)!r}: the gateway cannot reach its cluster-internal Service. "
        "Expose it (providers[].kubernetes.serve_service_type: LoadBalancer with a hostname) or "
        "set providers[].endpoint"
    )


def gateway_url(cfg: EaselConfig) -> str:
    """The gateway Service's address inside its cluster (what the bench RayJob targets)."""
    return f"http://{gateway_name(cfg)}.{namespace_of(cfg)}.svc:{cfg.serve.port}"


def endpoints(cfg: EaselConfig) -> dict[str, str]:
    """Provider name -> endpoint, for every provider that serves open models."""
    return {p.name: provider_endpoint(cfg, p) for p in cfg.providers if hosted_models(cfg, p)}


def gateway_config_yaml(cfg: EaselConfig) -> str:
    """The config the gateway reads: `cfg` with each provider's endpoint filled in."""
    urls = endpoints(cfg)
    data = cfg.model_dump(mode="json")
    for p in data["providers"]:
        if p["name"] in urls and not p["endpoint"]:
            p["endpoint"] = urls[p["name"]]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def gateway_manifests(cfg: EaselConfig, image: str) -> dict[str, dict[str, Any]]:
    """The gateway's objects by file name, in the order to apply them."""
    name = gateway_name(cfg)
    ns = namespace_of(cfg)
    gw = cfg.kubernetes.gateway
    cm_name = f"{name}-config-{gateway_digest(cfg, endpoints(cfg))}"
    select = {
        "app.kubernetes.io/instance": labels(cfg, "gateway")["app.kubernetes.io/instance"],
        "app.kubernetes.io/component": "gateway",
    }
    resources = {"cpu": quantity(gw.cpus), "memory": gib(gw.memory_gb)}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    container = {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": cfg.kubernetes.image_pull_policy,
        "command": [
            "easel",
            "gateway",
            "--config",
            CONFIG_PATH,
            "--host",
            "0.0.0.0",
            "--port",
            str(cfg.serve.port),
            "--workers",
            str(gw.workers),
        ],
        "ports": [{"name": "http", "containerPort": cfg.serve.port}],
        "env": secret_env(cfg, vendors=True, tenants=True),
        "resources": {"requests": resources, "limits": resources},
        "readinessProbe": {**probe, "failureThreshold": 2},
        "livenessProbe": {**probe, "failureThreshold": 6, "initialDelaySeconds": 10},
        "volumeMounts": [{"name": "easel-config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels(cfg, "gateway")},
        "spec": {
            "replicas": gw.replicas,
            "selector": {"matchLabels": select},
            # A new config (the ConfigMap's name changes) replaces pods one at a time, never
            # below the replica count.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels(cfg, "gateway")},
                "spec": {
                    # Room for requests in flight to finish after the pod leaves the Service.
                    "terminationGracePeriodSeconds": int(cfg.routing.request_timeout_s) + 10,
                    "containers": [container],
                    "volumes": [{"name": "easel-config", "configMap": {"name": cm_name}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels(cfg, "gateway")},
        "spec": {
            "type": gw.service_type,
            "selector": select,
            "ports": [{"name": "http", "port": cfg.serve.port, "targetPort": "http"}],
        },
    }
    out = {
        "00-namespace.yaml": namespace_manifest(cfg, ns, context_of(cfg)),
        "10-configmap.yaml": config_map(cfg, cm_name, ns, gateway_config_yaml(cfg), "gateway"),
        "20-deployment.yaml": deployment,
        "30-service.yaml": service,
    }
    if gw.replicas > 1:
        out["40-disruption-budget.yaml"] = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns, "labels": labels(cfg, "gateway")},
            "spec": {"minAvailable": gw.replicas - 1, "selector": {"matchLabels": select}},
        }
    return out
