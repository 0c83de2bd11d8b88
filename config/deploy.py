"""Serving, routing, tenants, Kubernetes and the operator loop."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from config._base import DNS_LABEL, Name, Strict

__all__ = [
    "GatewayDeployment",
    "KubernetesConfig",
    "OperatorConfig",
    "RoutingConfig",
    "ServeConfig",
    "Tenant",
]


class Tenant(Strict):
    name: Name
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: int = Field(default=10, ge=1, le=1_000_000)
    models: list[Name] | None = Field(default=None, description="Models it may use; None = all.")


class RoutingConfig(Strict):
    """How the gateway picks a provider, judges its health and fails over."""

    policy: Literal["weighted", "least_outstanding", "cheapest_healthy"] = Field(
        default="least_outstanding",
        description="'weighted': random by weight; 'least_outstanding': fewest requests in "
        "flight per unit of the provider's capacity (replicas x max_ongoing_requests); "
        "'cheapest_healthy': lowest price first.",
    )
    weights: dict[str, float] = Field(
        default_factory=dict, description="Per-provider weight for 'weighted'; missing = 1."
    )
    unhealthy_after_errors: int = Field(
        default=3,
        ge=1,
        le=1_000,
        description="Provider errors (5xx, timeouts) in a row that mark a provider unhealthy; "
        "a refused connection (request or probe) marks it at once.",
    )
    recheck_after_s: float = Field(
        default=5.0,
        gt=0,
        le=3_600,
        description="Least time a provider stays unhealthy before a good probe (or, for a vendor "
        "API, one trial request) may restore it.",
    )
    request_timeout_s: float = Field(
        default=120, gt=0, le=3_600, description="Deadline of one request over all its attempts."
    )
    probe_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="How often each gateway process probes each provider's /v1/stats (off the "
        "request path).",
    )
    probe_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="A probe slower than this counts as failed."
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="TCP connect timeout to a provider or vendor."
    )


class ServeConfig(Strict):
    """The gateway (the API customers call) and the provider apps behind it."""

    host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    port: int = Field(default=8000, ge=1, le=65_535, description="Port the gateway binds.")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Gateway processes sharing the port, each with its own routing state.",
    )
    admin_key_env: str | None = Field(default="EASEL_ADMIN_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1_024, le=1 << 31)
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Longest a client may take to send a request body; beyond, 408 (a client "
        "that trickles its body must not hold a connection and a task forever).",
    )
    max_reference_pixels: int = Field(default=4096 * 4096, ge=64, le=1 << 31)
    tenants: list[Tenant] = Field(default_factory=list)
    ingress_replicas: int = Field(
        default=1, ge=1, le=1_000, description="Replicas of each provider app's ingress."
    )
    ingress_num_cpus: float = Field(
        default=0.5, ge=0, le=64, description="CPUs reserved per provider-ingress replica."
    )
    share_tiny_replicas: bool = Field(
        default=False,
        description="Local mode: a provider's tiny (`tiny://`) CPU models with one fixed replica "
        "each share one replica process (one torch and diffusers import), each with its own "
        "pipeline, batcher, inference thread and usage row. `easel bench` sets it unless "
        "--full-matrix; never for real weights or GPUs.",
    )
    ingress_max_in_flight: int = Field(
        default=1_000,
        ge=1,
        le=1_000_000,
        description="Requests one provider-ingress replica holds at once; beyond, 503 with "
        "Retry-After at once (the model deployments' own queues are bounded by "
        "max_queued_requests).",
    )


_DNS_LABEL = DNS_LABEL


class GatewayDeployment(Strict):
    """The gateway on Kubernetes: a Deployment of `easel gateway` processes behind a Service."""

    replicas: int = Field(default=2, ge=1, le=1_000, description="Gateway pods.")
    workers: int = Field(
        default=2, ge=1, le=256, description="`easel gateway --workers`: processes per pod."
    )
    cpus: float = Field(default=2, gt=0, le=256, description="CPU request and limit per pod.")
    memory_gb: float = Field(default=4, gt=0, le=1_024, description="Memory per pod, GB.")
    service_type: Literal["ClusterIP", "LoadBalancer"] = Field(
        default="ClusterIP",
        description="How customers reach the gateway Service: in-cluster only, or a cloud "
        "load balancer.",
    )


class KubernetesConfig(Strict):
    """How `easel k8s render` deploys this config: one RayService per provider (each in its own
    Kubernetes cluster), the gateway and the bench RayJob; and what `easel scale` patches."""

    context: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="kubeconfig context of the cluster that runs the gateway and the bench RayJob "
        "(and every provider that names no context of its own). None: the current context.",
    )
    namespace: str = Field(
        default="easel",
        pattern=_DNS_LABEL,
        description="Namespace of the gateway, the bench RayJob, and of providers that name none.",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$",
        max_length=40,
        description="Prefix of every rendered name: the provider RayServices are "
        "'<name>-<provider>', the gateway '<name>-gateway', the RayJob '<name>-bench'. None: "
        "the config's name.",
    )
    image: str | None = Field(
        default=None,
        description="Container image with easel installed (k8s/Dockerfile builds it). None: "
        "'easel:<easel version>-ray<installed Ray version>'.",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    head_cpus: float = Field(default=4, gt=0, le=1_024, description="Head pod CPU request.")
    head_memory_gb: float = Field(default=16, gt=0, le=16_384, description="Head pod memory, GB.")
    worker_cpus_per_gpu: float = Field(
        default=8, gt=0, le=1_024, description="Worker pod CPUs per GPU it holds."
    )
    worker_memory_gb_per_gpu: float = Field(
        default=64, gt=0, le=16_384, description="Worker pod memory per GPU it holds, GB."
    )
    cpu_worker_cpus: float = Field(
        default=8,
        gt=0,
        le=1_024,
        description="CPUs of a CPU worker pod (the provider's ingress, models with num_gpus 0, "
        "the bench's load generation and CPU scoring).",
    )
    cpu_worker_memory_gb: float = Field(
        default=32, gt=0, le=16_384, description="Memory of a CPU worker pod, GB."
    )
    autoscaler_idle_timeout_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Seconds a worker pod sits idle before the Ray autoscaler removes it.",
    )
    upgrade_strategy: Literal["NewCluster", "None"] = Field(
        default="NewCluster",
        description="What KubeRay does when a provider's pod template changes: bring up a new "
        "cluster and switch once it serves (needs room for both), or nothing ('None': delete "
        "and re-apply the RayService to upgrade).",
    )
    cluster_deletion_delay_s: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="Seconds KubeRay keeps the old cluster after an upgrade switched traffic.",
    )
    model_cache_gb: int = Field(
        default=500,
        ge=1,
        le=1_000_000,
        description="Size of each provider's model cache volume (the weights of the models it "
        "serves, pinned revisions), GB.",
    )
    volume_access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany",
        description="Access mode of the model cache and data volumes: ReadWriteMany when pods "
        "on several nodes read them (the usual case); ReadWriteOnce for one-node clusters.",
    )
    storage_class: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="StorageClass of the gateway cluster's volumes (bench runs and data). None: "
        "the cluster's default.",
    )
    runs_gb: int = Field(
        default=100, ge=1, le=1_000_000, description="Volume for bench run folders, GB."
    )
    data_gb: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Volume for the bench's inputs: reference images, traces, scoring weights, GB.",
    )
    hf_token_key: str = Field(
        default="HF_TOKEN",
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in `secret_name` holding the Hugging Face token the weight-fetch Jobs "
        "use for gated checkpoints (serving pods never see it: they load offline).",
    )
    gateway: GatewayDeployment = Field(default_factory=GatewayDeployment)
    redis_address: str = Field(
        default="redis:6379",
        pattern=r"^[^\s:]+:[0-9]{1,5}$",
        description="Redis for GCS fault tolerance, host:port.",
    )
    redis_password_secret: str = Field(
        default="easel-redis", pattern=_DNS_LABEL, description="Secret holding the Redis password."
    )
    redis_password_key: str = Field(
        default="password", pattern=r"^[-._a-zA-Z0-9]+$", description="Key in that Secret."
    )
    secret_name: str = Field(
        default="easel-secrets",
        pattern=_DNS_LABEL,
        description="Secret whose keys are the env variables the config names (admin key, vendor "
        "and tenant API keys); each is passed to the pods through a secretKeyRef.",
    )


class OperatorConfig(Strict):
    """The `easel operator` loop: when it moves routing weight and capacity between providers."""

    interval_s: float = Field(default=15, gt=0, le=3_600, description="Seconds between decisions.")
    queue_high: float = Field(
        default=4,
        gt=0,
        le=10_000,
        description="Outstanding requests per worker replica above which capacity grows.",
    )
    queue_low: float = Field(
        default=0.5,
        ge=0,
        le=10_000,
        description="Outstanding requests per worker replica below which capacity shrinks.",
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A provider whose share of failed requests in one interval exceeds this gets "
        "weight 0 and gives its capacity to the others.",
    )
    min_requests: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Requests an interval needs before its error rate is judged.",
    )
    price_exponent: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="Weights scale with replicas × (cheapest price / price) ** this; 0 ignores "
        "price.",
    )
    scale_step: int = Field(default=1, ge=1, le=1_000, description="Replicas added or removed.")
    cooldown_s: float = Field(
        default=60, ge=0, le=86_400, description="Least time between two scalings of a provider."
    )
    drain_timeout_s: float = Field(
        default=60,
        gt=0,
        le=3_600,
        description="Before it scales a provider's model in, the operator drains that route at "
        "the gateway and waits at most this long for its requests in flight to finish.",
    )

    @model_validator(mode="after")
    def _watermarks(self) -> Self:
        if self.queue_low >= self.queue_high:
            raise ValueError(
                f"queue_low ({self.queue_low}) must be below queue_high ({self.queue_high})"
            )
        return self
