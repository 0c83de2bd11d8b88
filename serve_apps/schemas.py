"""Request and response models of the HTTP API, and the per-model limits applied to them.

Two layers: the pydantic models check what holds for every model (types, absolute bounds, no
unknown fields); `resolve_generate` then applies the limits of the one model asked for (its
resolution range and multiple, steps, guidance, what inputs it accepts) and fills its defaults.
Nothing is clamped or corrected: a value out of range is a 422 that names the allowed range.
Prompt length in the model's own tokens is checked where the tokenizer lives, in the model
replica (see `deployments.py`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from easel.config import ModelConfig
from serve_apps.errors import ApiError

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "GenerateRequest",
    "ImagesRequest",
    "ResolvedRequest",
    "model_capabilities",
    "new_request_id",
    "parse_size",
    "resolve_generate",
]

MAX_SEED = 2**32 - 1
# An absolute cap before any tokenizer runs; the per-model token limit is the real one.
MAX_PROMPT_CHARS = 100_000
_REQUEST_ID = r"^[A-Za-z0-9._:-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Body):
    """Body of `POST /v1/generate`. Unset fields take the model's defaults."""

    model: str = Field(min_length=1, max_length=63, description="Model id from /v1/models.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    niche: str | None = Field(default=None, max_length=63, description="Use-case label.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    reference_image: str | None = Field(
        default=None, description="Base64 PNG/JPEG/WebP (or a base64 data URL)."
    )
    width: int | None = Field(default=None, ge=1, le=16_384)
    height: int | None = Field(default=None, ge=1, le=16_384)
    steps: int | None = Field(default=None, ge=1, le=10_000)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    request_id: str | None = Field(default=None, pattern=_REQUEST_ID)


class ImagesRequest(_Body):
    """Body of `POST /v1/images/generations` (the OpenAI Images API), plus easel extras."""

    model: str = Field(min_length=1, max_length=63)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=16, description="Images; each gets seed, seed+1, ...")
    size: str | None = Field(default=None, description="'WIDTHxHEIGHT' or 'auto'.")
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="b64_json (default) or url (a data: URL; nothing is hosted)."
    )
    output_format: Literal["png"] | None = None
    quality: Literal["auto", "standard"] | None = None
    background: Literal["auto", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    style: None = None
    user: str | None = Field(default=None, max_length=256)
    # easel extensions (the openai client sends them through `extra_body`)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    steps: int | None = Field(default=None, ge=1, le=10_000)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    niche: str | None = Field(default=None, max_length=63)


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked against one model's limits, with its defaults filled in.

    This is what travels from the ingress to a model replica (a plain, picklable dataclass).
    """

    request_id: str
    model: str
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    negative_prompt: str | None = None
    reference_png: bytes | None = None
    niche: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_request_id() -> str:
    return uuid.uuid4().hex


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """'512x768' → (512, 768); None or 'auto' → (None, None) (the model's default); 422 else."""
    if size is None or size == "auto":
        return None, None
    m = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if not m:
        raise ApiError(422, f"size: expected 'WIDTHxHEIGHT' or 'auto', got {size!r}")
    return int(m.group(1)), int(m.group(2))


def model_capabilities(model: ModelConfig) -> dict[str, bool]:
    """Which optional inputs a model accepts (also shown in /v1/models)."""
    closed = model.backend == "http_api"
    return {
        # Only the SDXL pipeline has a negative prompt among the open models served here.
        "negative_prompt": closed or model.pipeline == "StableDiffusionXLPipeline",
        # The text-to-image pipelines served here take no image input; vendor APIs may.
        "reference_image": closed,
    }


def resolve_generate(
    *,
    model: ModelConfig,
    request_id: str,
    prompt: str,
    width: int | None,
    height: int | None,
    steps: int | None,
    guidance: float | None,
    seed: int | None,
    negative_prompt: str | None = None,
    reference_png: bytes | None = None,
    niche: str | None = None,
    default_seed: int,
) -> ResolvedRequest:
    """Apply `model`'s limits and defaults; ApiError(422) naming the allowed values otherwise."""
    if not prompt.strip():
        raise ApiError(422, "prompt: must not be blank")
    res = model.resolution
    w = res.default if width is None else width
    h = res.default if height is None else height
    for name, value in (("width", w), ("height", h)):
        if not res.min <= value <= res.max or value % res.multiple:
            raise ApiError(
                422,
                f"{name}: {value} is not allowed for model {model.name!r} (allowed: "
                f"{res.min}..{res.max}, a multiple of {res.multiple})",
                code="invalid_resolution",
            )
    s = model.steps.default if steps is None else steps
    if not model.steps.min <= s <= model.steps.max:
        raise ApiError(
            422,
            f"steps: {s} is not allowed for model {model.name!r} (allowed: "
            f"{model.steps.min}..{model.steps.max})",
            code="invalid_steps",
        )
    g = model.guidance.default if guidance is None else guidance
    if not model.guidance.min <= g <= model.guidance.max:
        raise ApiError(
            422,
            f"guidance: {g} is not allowed for model {model.name!r} (allowed: "
            f"{model.guidance.min}..{model.guidance.max})",
            code="invalid_guidance",
        )
    caps = model_capabilities(model)
    if negative_prompt is not None and not caps["negative_prompt"]:
        raise ApiError(
            422,
            f"negative_prompt: model {model.name!r} does not take a negative prompt",
            code="unsupported_input",
        )
    if negative_prompt is not None and model.backend == "diffusers" and g <= 1:
        # Without classifier-free guidance the pipeline never looks at the negative prompt.
        raise ApiError(
            422,
            f"negative_prompt: has no effect at guidance {g} on model {model.name!r}; it needs "
            f"guidance > 1 (allowed up to {model.guidance.max})",
            code="unsupported_input",
        )
    if reference_png is not None and not caps["reference_image"]:
        raise ApiError(
            422,
            f"reference_image: model {model.name!r} does not take a reference image",
            code="unsupported_input",
        )
    return ResolvedRequest(
        request_id=request_id,
        model=model.name,
        prompt=prompt,
        width=w,
        height=h,
        steps=s,
        guidance=float(g),
        seed=default_seed if seed is None else seed,
        negative_prompt=negative_prompt,
        reference_png=reference_png,
        niche=niche,
    )
