"""GPU types and providers: where replicas run and what a GPU-hour costs."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from config._base import DNS_LABEL, Name, Strict

__all__ = [
    "GpuType",
    "ProviderConfig",
    "ProviderKubernetes",
    "Toleration",
]


class GpuType(Strict):
    """A GPU model as the physical-floor and cost computations see it."""

    name: str = Field(min_length=1, description="GPU model, e.g. 'A100-80GB'.")
    peak_tflops: float = Field(gt=0, le=100_000, description="Dense bf16 peak, TFLOP/s.")
    memory_gb: float = Field(gt=0, le=10_000, description="Device memory, GB.")
    form_factor: Literal["SXM", "PCIe"] | None = Field(
        default=None,
        description="SXM (NVLink between the GPUs of a node) or PCIe boards; None accepts "
        "either when an instance type is chosen.",
    )


class Toleration(Strict):
    """A Kubernetes toleration (the fields of core/v1 Toleration that GPU node pools use)."""

    key: str = Field(min_length=1, max_length=316, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field(default="Exists")
    value: str | None = Field(default=None, max_length=63, description="For operator 'Equal'.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; None tolerates every effect."
    )

    @model_validator(mode="after")
    def _value(self) -> Self:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator 'Exists' takes no value")
        if self.operator == "Equal" and self.value is None:
            raise ValueError("a toleration with operator 'Equal' needs a value")
        return self


class ProviderKubernetes(Strict):
    """Where a provider's own Ray cluster (a RayService) runs on Kubernetes."""

    context: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="kubeconfig context of the provider's Kubernetes cluster. None: "
        "kubernetes.context (the gateway's cluster).",
    )
    namespace: str | None = Field(
        default=None, pattern=DNS_LABEL, description="Its namespace. None: kubernetes.namespace."
    )
    storage_class: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="StorageClass of the provider's model cache volume (one that serves "
        "kubernetes.volume_access_mode there). None: the cluster's default.",
    )
    serve_service_type: Literal["ClusterIP", "LoadBalancer"] = Field(
        default="ClusterIP",
        description="Type of the provider's Serve Service: ClusterIP when the gateway runs in "
        "the same Kubernetes cluster, LoadBalancer to reach it from another one (then set "
        "providers[].endpoint to its address).",
    )
    hostname: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="DNS name of the provider's Serve load balancer (serve_service_type "
        "LoadBalancer), set through external-dns's hostname annotation; the gateway reaches "
        "the provider at http://<hostname>:<serve.port> unless providers[].endpoint is set.",
    )

    @model_validator(mode="after")
    def _hostname(self) -> Self:
        if self.hostname and self.serve_service_type != "LoadBalancer":
            raise ValueError("hostname names a load balancer: set serve_service_type LoadBalancer")
        return self


class ProviderConfig(Strict):
    """One place that runs replicas: a cloud region with a GPU type and a dated price.

    Each provider is its own Ray cluster running the provider app; the gateway reaches it at
    `endpoint` over HTTP.
    """

    name: Name
    cloud: str = Field(min_length=1, description="Cloud or GPU cloud, e.g. 'aws', 'lambda'.")
    region: str = Field(min_length=1, description="Region or datacenter.")
    gpu: str = Field(min_length=1, description="Key into `gpus`.")
    gpus_per_replica: int = Field(default=1, ge=1, le=16, description="GPUs one replica holds.")
    price_per_gpu_hour: float = Field(gt=0, le=1_000, description="USD per GPU-hour.")
    price_date: dt.date = Field(description="When the price was read (ISO date).")
    price_source: str = Field(default="", description="Where the price was read.")
    capacity: int = Field(ge=0, le=100_000, description="Most GPUs this provider may hold.")
    simulated: bool = Field(
        description="True when this provider is simulated on the local machine (a Ray custom "
        "resource on a local node), not a real cloud."
    )
    endpoint: str | None = Field(
        default=None,
        description="Base URL of this provider's cluster (its provider app), as the gateway "
        "reaches it, e.g. 'http://easel-lambda.example.com:8000'. None: filled in by the local "
        "modes (`easel cluster up --local`, `easel serve`, `easel bench`) that start it, and "
        "on Kubernetes by `easel k8s render` (kubernetes.hostname, or the provider's Serve "
        "Service when it shares the gateway's cluster).",
    )
    min_replicas: int = Field(default=0, ge=0, le=10_000, description="Operator lower bound.")
    max_replicas: int = Field(default=8, ge=0, le=10_000, description="Operator upper bound.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes node labels for this provider's GPU nodes."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Kubernetes tolerations for this provider's GPU nodes, beyond the "
        "nvidia.com/gpu taint every GPU worker tolerates.",
    )
    kubernetes: ProviderKubernetes = Field(default_factory=ProviderKubernetes)
    project_id: str | None = Field(
        default=None,
        pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$",
        description="GCP project the cluster launcher creates this provider's VMs in (GCP only).",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {value!r}")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        return self

    @property
    def resource(self) -> str:
        """The Ray custom resource that pins work to this provider's nodes."""
        return f"provider:{self.name}"
