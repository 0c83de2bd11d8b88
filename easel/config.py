"""The one config chain: a YAML file parsed into pydantic models.

Every later stage (serving, load tests, evaluation, cost, manifests for KubeRay) reads these
objects; nothing downstream re-reads YAML. Unknown keys are errors (``extra="forbid"``), every
number has bounds, and cross-field checks run at load time, so a typo fails here with the file,
the key path and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "DEFAULT_CONFIG",
    "PRODUCTION_EXAMPLE",
    "ConfigError",
    "EaselConfig",
    "KubernetesConfig",
    "ModelConfig",
    "NicheConfig",
    "OperatorConfig",
    "ProviderConfig",
    "Toleration",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = "default.yaml"
PRODUCTION_EXAMPLE = "production.example.yaml"

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
        description="Identifier: lower-case letters, digits, '_', '.', '-'; at most 63 chars.",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file that does not validate: names the file, the key path and what is allowed."""


# --- hardware and providers -------------------------------------------------------------------


class GpuType(_Strict):
    """A GPU model as the physical-floor and cost computations see it."""

    name: str = Field(min_length=1, description="GPU model, e.g. 'A100-80GB'.")
    peak_tflops: float = Field(gt=0, le=100_000, description="Dense bf16 peak, TFLOP/s.")
    memory_gb: float = Field(gt=0, le=10_000, description="Device memory, GB.")


class Toleration(_Strict):
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


class ProviderConfig(_Strict):
    """One place that runs replicas: a cloud region with a GPU type and a dated price."""

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


# --- models -----------------------------------------------------------------------------------


class IntRange(_Strict):
    """A default with the inclusive range a request may ask for."""

    default: int = Field(ge=0, description="Value used when a request does not set it.")
    min: int = Field(ge=0, description="Smallest value a request may ask for.")
    max: int = Field(ge=0, description="Largest value a request may ask for.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"need min <= default <= max, got {self.min} <= {self.default} <= {self.max}"
            )
        return self


class FloatRange(_Strict):
    default: float = Field(ge=0, le=100, description="Value used when a request does not set it.")
    min: float = Field(ge=0, le=100, description="Smallest value a request may ask for.")
    max: float = Field(ge=0, le=100, description="Largest value a request may ask for.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"need min <= default <= max, got {self.min} <= {self.default} <= {self.max}"
            )
        return self


class Resolution(_Strict):
    """Square default and the allowed range for width and height, in pixels."""

    default: int = Field(ge=8, le=8192, description="Width and height when a request sets none.")
    min: int = Field(ge=8, le=8192, description="Smallest width or height.")
    max: int = Field(ge=8, le=8192, description="Largest width or height.")
    multiple: int = Field(
        default=16, ge=1, le=256, description="Width and height must be multiples of this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"need min <= default <= max, got {self.min} <= {self.default} <= {self.max}"
            )
        for key in ("default", "min", "max"):
            if getattr(self, key) % self.multiple:
                raise ValueError(f"{key}={getattr(self, key)} is not a multiple of {self.multiple}")
        return self


class Batching(_Strict):
    max_batch_size: int = Field(default=4, ge=1, le=256, description="Images per forward pass.")
    batch_wait_timeout_s: float = Field(
        default=0.02, ge=0, le=10, description="How long a batch waits to fill."
    )


class Autoscaling(_Strict):
    """Ray Serve autoscaling for one (model, provider) deployment."""

    min_replicas: int = Field(default=1, ge=0, le=10_000)
    max_replicas: int = Field(default=1, ge=1, le=10_000)
    initial_replicas: int | None = Field(default=None, ge=0, le=10_000)
    target_ongoing_requests: float = Field(default=2, gt=0, le=10_000)
    upscale_delay_s: float = Field(default=5, ge=0, le=3_600)
    downscale_delay_s: float = Field(default=60, ge=0, le=86_400)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class LatencyDistribution(_Strict):
    """Log-normal service time of a simulated vendor: median and p95, in milliseconds."""

    p50_ms: float = Field(gt=0, le=600_000)
    p95_ms: float = Field(gt=0, le=600_000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.p95_ms < self.p50_ms:
            raise ValueError(f"p95_ms ({self.p95_ms}) is below p50_ms ({self.p50_ms})")
        return self


class SimulatedVendor(_Strict):
    """Behaviour of the simulated vendor server that stands in for a closed API locally."""

    latency: LatencyDistribution
    concurrency: int = Field(
        default=4, ge=1, le=10_000, description="Jobs the vendor works on at once; others queue."
    )
    failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of requests answered with a 5xx."
    )
    max_queue: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Jobs allowed to wait for a worker; beyond this the vendor answers 429 with "
        "Retry-After. None: the queue is unbounded.",
    )
    seed: int = Field(default=0, ge=0)


class ApiConfig(_Strict):
    """How to reach a closed model over HTTP."""

    protocol: Literal["openai_images", "queue"] = Field(
        description="'openai_images': one synchronous POST; 'queue': submit, poll, fetch."
    )
    base_url: str | None = Field(
        default=None,
        description="Vendor endpoint. Left out when `simulated` is set: the local simulated "
        "vendor's address is used.",
    )
    vendor_model: str = Field(default="", description="Model name the vendor expects.")
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable that holds the API key (the key is never logged).",
    )
    timeout_s: float = Field(default=60, gt=0, le=3_600)
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=0.2, ge=0, le=60, description="First retry delay; doubles.")
    poll_interval_s: float = Field(default=0.05, gt=0, le=60)
    simulated: SimulatedVendor | None = Field(
        default=None, description="Run a simulated vendor on 127.0.0.1 instead of a real API."
    )

    @model_validator(mode="after")
    def _endpoint(self) -> Self:
        if self.simulated is None and not self.base_url:
            raise ValueError("a real API needs base_url (or set `simulated` for a local stand-in)")
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self


DIFFUSERS_PIPELINES = ("Flux2Pipeline", "Flux2KleinPipeline", "StableDiffusionXLPipeline")


class ModelConfig(_Strict):
    """One text-to-image model: how it is loaded or called, its request limits and its SLO."""

    name: Name = Field(description="Id used in the HTTP API and manifests.")
    display_name: str = Field(min_length=1, description="Name shown in reports.")
    backend: Literal["diffusers", "http_api"]
    kind: Literal["open", "closed"] = Field(
        default="open", description="Open weights (self-hosted) or a closed API."
    )
    pipeline: str | None = Field(
        default=None, description=f"diffusers pipeline class: one of {list(DIFFUSERS_PIPELINES)}."
    )
    weights: str | None = Field(
        default=None,
        description="Hub id or local path for from_pretrained; 'tiny://<recipe>' for a tiny "
        "random-weight build of the same class in the local cache.",
    )
    unet: str | None = Field(
        default=None,
        description="UNet checkpoint (hub id or local path) loaded over the pipeline's own, "
        "e.g. the SDXL-Lightning 4-step UNet.",
    )
    scheduler: Literal["default", "euler_trailing", "euler_ancestral_trailing"] = Field(
        default="default", description="Scheduler override; 'default' keeps the checkpoint's."
    )
    steps: IntRange
    guidance: FloatRange
    resolution: Resolution
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="bfloat16", description="Weights dtype on a GPU; CPU runs use float32."
    )
    max_prompt_tokens: int = Field(
        default=77, ge=1, le=100_000, description="Longest prompt, in the model's own tokens."
    )
    batching: Batching = Field(default_factory=Batching)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(default=8, ge=1, le=100_000)
    max_queued_requests: int = Field(
        default=16,
        ge=1,  # Ray Serve takes -1 (unbounded, never wanted here) or a positive bound
        le=1_000_000,
        description="Requests queued per caller beyond max_ongoing_requests; beyond this, 503 "
        "at once.",
    )
    providers: list[Name] = Field(min_length=1, description="Providers that host this model.")
    num_gpus: float = Field(default=0, ge=0, le=16, description="GPUs per replica (0 on CPU).")
    num_cpus: float = Field(default=1, ge=0, le=256, description="CPUs per replica.")
    price_per_image: float | None = Field(
        default=None, ge=0, le=100, description="USD per image, for API models."
    )
    api: ApiConfig | None = None
    tflop_per_step: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Compute per denoising step at the default resolution, TFLOP (physical floor).",
    )
    slo_ms: float = Field(gt=0, le=3_600_000, description="Latency a request must meet.")

    @model_validator(mode="after")
    def _backend_fields(self) -> Self:
        if self.backend == "diffusers":
            if self.pipeline not in DIFFUSERS_PIPELINES:
                raise ValueError(
                    f"pipeline {self.pipeline!r} is not one of {list(DIFFUSERS_PIPELINES)}"
                )
            if not self.weights:
                raise ValueError("a diffusers model needs `weights` (hub id, path or tiny://)")
            if self.api is not None or self.price_per_image is not None:
                raise ValueError("`api` and `price_per_image` are for http_api models only")
        else:
            if self.api is None:
                raise ValueError("an http_api model needs an `api` section")
            if self.price_per_image is None:
                raise ValueError("an http_api model needs `price_per_image`")
            if self.pipeline or self.weights:
                raise ValueError("`pipeline` and `weights` are for diffusers models only")
        return self

    @property
    def tiny_recipe(self) -> str | None:
        """The tiny-zoo recipe when `weights` is 'tiny://<recipe>', else None."""
        if self.weights and self.weights.startswith("tiny://"):
            return self.weights.removeprefix("tiny://")
        return None


# --- niches, traffic, SLOs, evaluation, cost --------------------------------------------------


class NicheConfig(_Strict):
    """A use case with its prompt bank and reference images."""

    name: Name
    display_name: str = Field(min_length=1)
    prompts: list[Annotated[str, Field(min_length=1, max_length=4_000)]] = Field(min_length=1)
    reference_dir: str | None = Field(
        default=None,
        description="Folder of reference images. Left out: a synthetic set is generated locally "
        "and labelled synthetic in the report.",
    )
    weight: float = Field(default=1.0, gt=0, le=1_000, description="Share of traffic.")


class TrafficConfig(_Strict):
    """The open-loop arrival process of a benchmark run."""

    pattern: Literal["poisson", "gamma", "diurnal", "burst", "ramp", "replay"] = "poisson"
    jobs: int = Field(default=300, ge=1, le=10_000_000, description="Requests in the manifest.")
    rate: float = Field(default=5.0, gt=0, le=100_000, description="Mean requests per second.")
    burstiness: float = Field(
        default=1.0, gt=0, le=100, description="Gamma shape; 1 is Poisson, below 1 is burstier."
    )
    peak_ratio: float = Field(
        default=3.0, ge=1, le=1_000, description="Diurnal peak / trough, or burst rate / base."
    )
    burst_every_s: float = Field(default=20, gt=0, le=86_400)
    burst_length_s: float = Field(default=3, gt=0, le=86_400)
    ramp_to: float | None = Field(default=None, gt=0, le=100_000, description="Ramp's end rate.")
    replay_path: str | None = Field(default=None, description="Production log for 'replay'.")
    speedup: float = Field(default=1.0, gt=0, le=100_000, description="Replay speed-up factor.")
    model_mix: dict[str, float] = Field(
        default_factory=dict, description="Share of traffic per model; empty means even."
    )
    max_in_flight: int = Field(default=256, ge=1, le=1_000_000, description="Client bound.")
    warmup_requests: int = Field(
        default=1, ge=0, le=10_000, description="Requests per model sent before the clock starts."
    )
    dispatchers: int = Field(
        default=2, ge=1, le=256, description="Load-test dispatcher actors sending on the schedule."
    )
    request_timeout_s: float = Field(
        default=120, gt=0, le=3_600, description="Load-test client timeout per request, seconds."
    )
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _replay(self) -> Self:
        if self.pattern == "replay" and not self.replay_path:
            raise ValueError("pattern 'replay' needs replay_path")
        for share in self.model_mix.values():
            if share < 0:
                raise ValueError("model_mix shares must be >= 0")
        return self


class SloConfig(_Strict):
    error_budget: float = Field(
        default=0.01, ge=0, le=1, description="Share of requests allowed to fail."
    )
    percentile: float = Field(default=95, gt=0, lt=100, description="Percentile the SLO is on.")


class CompositeAnchors(_Strict):
    """Anchored 0-100 mappings, fixed in the config so scores compare across runs."""

    fid_best: float = Field(default=0.0, ge=0, description="FID that maps to 100.")
    fid_worst: float = Field(default=300.0, gt=0, description="FID that maps to 0.")
    clip_worst: float = Field(default=0.0, ge=-1, le=1, description="Cosine that maps to 0.")
    clip_best: float = Field(default=0.35, ge=-1, le=1, description="Cosine that maps to 100.")
    human_elo_span: float = Field(
        default=400.0, gt=0, description="Elo gap between a 0 and a 100 human score."
    )
    clip_ref_worst: float = Field(
        default=0.5,
        ge=-1,
        le=1,
        description="Image-to-reference-image cosine that maps to 0 (image pairs sit higher "
        "than image-text pairs, hence anchors of their own).",
    )
    clip_ref_best: float = Field(
        default=0.95, ge=-1, le=1, description="Image-to-reference-image cosine that maps to 100."
    )
    human_anchor_model: str | None = Field(
        default=None,
        description="Model whose Bradley-Terry strength maps to a human score of 50. Left out: "
        "the mean strength of the models in the fit (comparable only across runs with the "
        "same model set).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.fid_best >= self.fid_worst:
            raise ValueError("fid_best must be below fid_worst")
        if self.clip_worst >= self.clip_best:
            raise ValueError("clip_worst must be below clip_best")
        if self.clip_ref_worst >= self.clip_ref_best:
            raise ValueError("clip_ref_worst must be below clip_ref_best")
        return self


class EvaluationConfig(_Strict):
    feature_weights: str | None = Field(
        default=None,
        description="Local Inception-v3 FID weights file. Left out: a small local network, "
        "labelled 'not comparable to published FID'.",
    )
    clip_weights: str | None = Field(
        default=None,
        description="Local open_clip checkpoint. Left out: a small local CLIP, labelled as such.",
    )
    clip_model: str = Field(default="ViT-B-32", description="open_clip architecture name.")
    image_size: int = Field(default=64, ge=16, le=1024, description="Resize before features.")
    min_fid_n: int = Field(
        default=2_000, ge=2, le=10_000_000, description="Below this N, FID is flagged (use KID)."
    )
    batch_size: int = Field(default=32, ge=1, le=4_096)
    actors: int = Field(default=2, ge=1, le=1_024)
    num_gpus: float = Field(default=0, ge=0, le=16, description="GPUs per scorer actor.")
    human_pairs_per_model_pair: int = Field(default=500, ge=1, le=1_000_000)
    reference_images_per_niche: int = Field(default=64, ge=2, le=1_000_000)
    bootstrap: int = Field(default=200, ge=10, le=100_000, description="Bootstrap resamples.")
    weights: dict[Literal["fid", "clip", "human"], float] = Field(
        default_factory=lambda: {"fid": 0.4, "clip": 0.3, "human": 0.3}
    )
    anchors: CompositeAnchors = Field(default_factory=CompositeAnchors)
    images_saved_per_model: int = Field(default=16, ge=0, le=1_000_000)
    actor_num_cpus: float = Field(
        default=1, gt=0, le=256, description="CPUs per scorer actor (also its torch threads)."
    )
    clip_ref_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the CLIP score taken by image-to-reference similarity for jobs "
        "that carry a reference image; the rest is image-to-prompt.",
    )
    kid_subsets: int = Field(default=100, ge=1, le=10_000, description="KID subsets drawn.")
    kid_subset_size: int = Field(
        default=1_000,
        ge=2,
        le=1_000_000,
        description="Images per KID subset; capped at the smaller of the two set sizes.",
    )
    sensitivity_delta: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description="Weight-sensitivity check: each composite weight moved by +/- this much "
        "(others rescaled to keep the sum at 1); reports whether the model ranking survives.",
    )

    @model_validator(mode="after")
    def _weights(self) -> Self:
        if set(self.weights) != {"fid", "clip", "human"}:
            raise ValueError("weights needs exactly the keys fid, clip, human")
        if any(w < 0 for w in self.weights.values()) or abs(sum(self.weights.values()) - 1) > 1e-6:
            raise ValueError(f"weights must be >= 0 and sum to 1, got {self.weights}")
        return self


class CostConfig(_Strict):
    orchestration_overhead_per_image: float = Field(
        default=0.0005, ge=0, le=100, description="USD added per image for orchestration."
    )
    platform_fee_pct: float = Field(
        default=10.0, ge=0, le=1_000, description="Percent added on top of compute."
    )


class Tenant(_Strict):
    name: Name
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: int = Field(default=10, ge=1, le=1_000_000)
    models: list[Name] | None = Field(default=None, description="Models it may use; None = all.")


class RoutingConfig(_Strict):
    policy: Literal["weighted", "least_outstanding", "cheapest_healthy"] = "least_outstanding"
    weights: dict[str, float] = Field(
        default_factory=dict, description="Per-provider weight for 'weighted'; missing = 1."
    )
    unhealthy_after_errors: int = Field(default=3, ge=1, le=1_000)
    recheck_after_s: float = Field(default=5.0, gt=0, le=3_600)
    request_timeout_s: float = Field(default=120, gt=0, le=3_600)


class ServeConfig(_Strict):
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8000, ge=1, le=65_535)
    admin_key_env: str | None = Field(default="EASEL_ADMIN_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1_024, le=1 << 31)
    max_reference_pixels: int = Field(default=4096 * 4096, ge=64, le=1 << 31)
    tenants: list[Tenant] = Field(default_factory=list)
    ingress_replicas: int = Field(
        default=1, ge=1, le=1_000, description="Replicas of the HTTP ingress deployment."
    )
    ingress_num_cpus: float = Field(
        default=0.5, ge=0, le=64, description="CPUs reserved per ingress replica."
    )
    ingress_max_in_flight: int = Field(
        default=1_000,
        ge=1,
        le=1_000_000,
        description="Requests one ingress replica holds at once; beyond, 503 with Retry-After "
        "at once (the model deployments' own queues are bounded by max_queued_requests).",
    )


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class KubernetesConfig(_Strict):
    """How `easel k8s render` deploys this config on KubeRay, and what `easel scale` patches."""

    namespace: str = Field(
        default="easel", pattern=_DNS_LABEL, description="Namespace of every rendered object."
    )
    name: str | None = Field(
        default=None,
        pattern=_DNS_LABEL,
        max_length=40,
        description="Name of the RayService (the RayJob adds '-bench'). None: the config's name.",
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


class OperatorConfig(_Strict):
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

    @model_validator(mode="after")
    def _watermarks(self) -> Self:
        if self.queue_low >= self.queue_high:
            raise ValueError(
                f"queue_low ({self.queue_low}) must be below queue_high ({self.queue_high})"
            )
        return self


# --- the whole file ---------------------------------------------------------------------------


class EaselConfig(_Strict):
    """A whole benchmark or cluster, as one YAML file describes it."""

    name: Name
    description: str = ""
    seed: int = Field(default=0, ge=0)
    gpus: list[GpuType] = Field(min_length=1)
    providers: list[ProviderConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    niches: list[NicheConfig] = Field(min_length=1)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    operator: OperatorConfig = Field(default_factory=OperatorConfig)

    @model_validator(mode="after")
    def _cross_refs(self) -> Self:
        _unique("gpus", (g.name for g in self.gpus))
        _unique("providers", (p.name for p in self.providers))
        _unique("models", (m.name for m in self.models))
        _unique("niches", (n.name for n in self.niches))
        gpus = {g.name for g in self.gpus}
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        for p in self.providers:
            if p.gpu not in gpus:
                raise ValueError(
                    f"provider {p.name!r}: gpu {p.gpu!r} is not in gpus (allowed: {sorted(gpus)})"
                )
        for m in self.models:
            for prov in m.providers:
                if prov not in providers:
                    raise ValueError(
                        f"model {m.name!r}: provider {prov!r} is not defined "
                        f"(allowed: {sorted(providers)})"
                    )
        unknown = set(self.traffic.model_mix) - models
        if unknown:
            raise ValueError(
                f"traffic.model_mix names unknown models {sorted(unknown)} (allowed: "
                f"{sorted(models)})"
            )
        unknown = set(self.routing.weights) - providers
        if unknown:
            raise ValueError(
                f"routing.weights names unknown providers {sorted(unknown)} (allowed: "
                f"{sorted(providers)})"
            )
        for t in self.serve.tenants:
            if t.models and set(t.models) - models:
                raise ValueError(
                    f"tenant {t.name!r} names unknown models {sorted(set(t.models) - models)}"
                )
        return self

    def model(self, name: str) -> ModelConfig:
        """The model called `name`; KeyError naming the known ones otherwise."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"unknown model {name!r}; known: {[m.name for m in self.models]}")

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(f"unknown provider {name!r}; known: {[p.name for p in self.providers]}")

    def niche(self, name: str) -> NicheConfig:
        for n in self.niches:
            if n.name == name:
                return n
        raise KeyError(f"unknown niche {name!r}; known: {[n.name for n in self.niches]}")

    def gpu(self, name: str) -> GpuType:
        for g in self.gpus:
            if g.name == name:
                return g
        raise KeyError(f"unknown gpu {name!r}; known: {[g.name for g in self.gpus]}")

    def to_yaml(self) -> str:
        """The resolved config (defaults filled in) as YAML, for a run folder."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def digest(self) -> str:
        """A short hash of the resolved config, for reproducibility blocks and cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _unique(section: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{section}: name {n!r} appears twice")
        seen.add(n)


# --- loading ----------------------------------------------------------------------------------


def parse_config(data: Any, source: str = "<config>") -> EaselConfig:
    """Validate a parsed YAML document; a ConfigError names `source`, key paths, allowed values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return EaselConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} error(s)"]
        for err in exc.errors():
            path = _key_path(data, err["loc"])
            lines.append(f"  {path}: {_describe(err)}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path | None = None) -> EaselConfig:
    """Load a config file; None loads the embedded default config (tiny models, local CPU)."""
    if path is None:
        text = resources.files("easel.configs").joinpath(DEFAULT_CONFIG).read_text()
        source = f"<embedded {DEFAULT_CONFIG}>"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        text = p.read_text()
        source = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(data, source)


def shipped_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (default.yaml, production.example.yaml)."""
    return Path(str(resources.files("easel.configs").joinpath(name)))


def _key_path(data: Any, loc: tuple[Any, ...]) -> str:
    """Dotted key path; list items are shown by their `name` when they have one."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and key < len(node):
                item = node[key]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = item["name"]
                node = item
            else:
                node = None
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "<top level>"


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _describe(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key (not in the schema; check the spelling)"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    bounds = {k: v for k, v in ctx.items() if k in _SYMBOLS}
    if bounds:
        allowed = ", ".join(f"{_SYMBOLS[k]} {v}" for k, v in bounds.items())
        return f"{msg} (got {err.get('input')!r}; allowed: {allowed})"
    if kind == "literal_error":
        return f"got {err.get('input')!r}; allowed: {ctx.get('expected')}"
    return msg
