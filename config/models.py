"""Models: how each is loaded or called, its request limits, batching and scaling."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, model_validator

from config._base import Name, Strict, check_ordered

__all__ = [
    "DIFFUSERS_PIPELINES",
    "REFERENCE_PIPELINES",
    "ApiConfig",
    "Autoscaling",
    "Batching",
    "FloatRange",
    "IntRange",
    "LatencyDistribution",
    "ModelConfig",
    "ReferenceLimits",
    "Resolution",
    "SimulatedVendor",
    "is_hub_id",
]


class IntRange(Strict):
    """A default with the inclusive range a request may ask for."""

    default: int = Field(ge=0, description="Value used when a request does not set it.")
    min: int = Field(ge=0, description="Smallest value a request may ask for.")
    max: int = Field(ge=0, description="Largest value a request may ask for.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_ordered(self.min, self.default, self.max)
        return self


class FloatRange(Strict):
    default: float = Field(ge=0, le=100, description="Value used when a request does not set it.")
    min: float = Field(ge=0, le=100, description="Smallest value a request may ask for.")
    max: float = Field(ge=0, le=100, description="Largest value a request may ask for.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_ordered(self.min, self.default, self.max)
        return self


class Resolution(Strict):
    """Square default and the allowed range for width and height, in pixels."""

    default: int = Field(ge=8, le=8192, description="Width and height when a request sets none.")
    min: int = Field(ge=8, le=8192, description="Smallest width or height.")
    max: int = Field(ge=8, le=8192, description="Largest width or height.")
    multiple: int = Field(
        default=16, ge=1, le=256, description="Width and height must be multiples of this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_ordered(self.min, self.default, self.max)
        for key in ("default", "min", "max"):
            if getattr(self, key) % self.multiple:
                raise ValueError(f"{key}={getattr(self, key)} is not a multiple of {self.multiple}")
        return self


class Batching(Strict):
    max_batch_size: int = Field(default=4, ge=1, le=256, description="Images per forward pass.")
    batch_wait_timeout_s: float = Field(
        default=0.02, ge=0, le=10, description="How long a batch waits to fill."
    )


class Autoscaling(Strict):
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


class LatencyDistribution(Strict):
    """Log-normal service time of a simulated vendor: median and p95, in milliseconds."""

    p50_ms: float = Field(gt=0, le=600_000)
    p95_ms: float = Field(gt=0, le=600_000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.p95_ms < self.p50_ms:
            raise ValueError(f"p95_ms ({self.p95_ms}) is below p50_ms ({self.p50_ms})")
        return self


class SimulatedVendor(Strict):
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


class ApiConfig(Strict):
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


def is_hub_id(spec: str) -> bool:
    """True when `spec` names a Hugging Face hub repository ('owner/repo', optionally followed by
    '/<file>'), not a local path or a tiny:// build."""
    if spec.startswith(("tiny://", "/", "./", "../", "~")):
        return False
    return re.match(r"^[A-Za-z0-9][-\w.]*/[-\w.]+(/[-\w./]+)?$", spec) is not None


DIFFUSERS_PIPELINES = ("Flux2Pipeline", "Flux2KleinPipeline", "StableDiffusionXLPipeline")
# The diffusers pipelines (0.42) whose __call__ takes `image=` (one or several reference images).
REFERENCE_PIPELINES = ("Flux2Pipeline", "Flux2KleinPipeline")
# What the Flux.2 pipelines' own `check_image_input` refuses (diffusers 0.42): sides under 64 px,
# aspect ratios over 8:1. The API refuses the same with a 4xx, before a replica would fail on it.
_FLUX2_MIN_SIDE = 64
_FLUX2_MAX_ASPECT = 8.0


class ReferenceLimits(Strict):
    """Reference images (`reference_images`) one request to this model may carry.

    A model without this section takes no reference image: a request with one gets a 422 that
    names the models that do.
    """

    max_count: int = Field(default=4, ge=1, le=16, description="References per request.")
    max_pixels: int = Field(
        default=1024 * 1024,
        ge=64 * 64,
        le=1 << 28,
        description="Largest width*height of one reference, checked from its header before "
        "decoding (the Flux.2 pipelines downscale anything above 1024*1024 anyway).",
    )
    max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1_024, le=1 << 30, description="Largest encoded reference."
    )
    min_side: int = Field(
        default=_FLUX2_MIN_SIDE, ge=1, le=8_192, description="Smallest width or height, pixels."
    )
    max_aspect: float = Field(
        default=_FLUX2_MAX_ASPECT, ge=1, le=100, description="Largest long side / short side."
    )


class ModelConfig(Strict):
    """One text-to-image model: how it is loaded or called, its request limits and its SLO."""

    name: Name = Field(description="Id used in the HTTP API and manifests.")
    display_name: str = Field(min_length=1, description="Name shown in reports.")
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Version shown in the report's Models table (e.g. 'v2.0.1', '4-step'). "
        "Left out: the weights id (open models) or the vendor's model name (APIs).",
    )
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
    revision: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{40}$",
        description="Commit of the hub checkpoint `weights` names (40 hex digits): the "
        "weight-fetch Job downloads exactly it, and replicas load it from the cache offline.",
    )
    unet: str | None = Field(
        default=None,
        description="UNet checkpoint (hub id, 'owner/repo/file.safetensors' or local path) loaded "
        "over the pipeline's own, e.g. the SDXL-Lightning 4-step UNet.",
    )
    unet_revision: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{40}$",
        description="Commit of the hub repository `unet` names (40 hex digits).",
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
    references: ReferenceLimits | None = Field(
        default=None,
        description="Reference images a request may carry (Flux.2 pipelines and vendor APIs "
        "that take them); left out: none.",
    )
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
            refs = self.references
            if refs is not None and self.pipeline not in REFERENCE_PIPELINES:
                raise ValueError(
                    f"references: {self.pipeline} takes no image; only {list(REFERENCE_PIPELINES)} "
                    "take reference images"
                )
            if refs is not None and (
                refs.min_side < _FLUX2_MIN_SIDE or refs.max_aspect > _FLUX2_MAX_ASPECT
            ):
                raise ValueError(
                    f"references: {self.pipeline} refuses references with a side under "
                    f"{_FLUX2_MIN_SIDE} px or an aspect ratio over {_FLUX2_MAX_ASPECT:g}:1; set "
                    f"min_side >= {_FLUX2_MIN_SIDE} and max_aspect <= {_FLUX2_MAX_ASPECT:g}"
                )
            if self.revision and not is_hub_id(self.weights):
                raise ValueError(
                    f"revision pins a hub checkpoint, but weights {self.weights!r} is not a hub id"
                )
            if self.unet_revision and not (self.unet and is_hub_id(self.unet)):
                raise ValueError("unet_revision pins a hub repository: set `unet` to one")
        else:
            if self.api is None:
                raise ValueError("an http_api model needs an `api` section")
            if self.price_per_image is None:
                raise ValueError("an http_api model needs `price_per_image`")
            if self.pipeline or self.weights or self.revision or self.unet:
                raise ValueError(
                    "`pipeline`, `weights`, `revision` and `unet` are for diffusers models only"
                )
        return self

    @property
    def tiny_recipe(self) -> str | None:
        """The tiny-zoo recipe when `weights` is 'tiny://<recipe>', else None."""
        if self.weights and self.weights.startswith("tiny://"):
            return self.weights.removeprefix("tiny://")
        return None
