"""Request models of the HTTP API, and the per-model limits applied to them.

The gateway and every provider app speak this one API. Two layers: the pydantic models check
what holds for every model (types, absolute bounds, no unknown fields); `resolve_generate` then
applies the limits of the one model asked for (its resolution range and multiple, steps,
guidance, what inputs it accepts) and fills its defaults. Nothing is clamped or corrected: a
value out of range is a 422 that names the allowed range. Prompt length in the model's own
tokens is checked where the tokenizer lives, in the model replica (`provider/batcher.py`); the
gateway checks it for closed models (`gateway/upstreams.py`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from config import ModelConfig
from serve_apps.api.errors import ApiError, validation_message

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_REFERENCES",
    "MAX_SEED",
    "MODEL_ID_PATTERN",
    "REQUEST_ID_PATTERN",
    "GenerateRequest",
    "ImagesRequest",
    "ResolvedRequest",
    "RoutingUpdate",
    "check_reference_count",
    "model_capabilities",
    "new_request_id",
    "parse_size",
    "read_capped_body",
    "read_json_body",
    "reference_models",
    "resolve_generate",
]

MAX_SEED = 2**32 - 1
_JSON_TYPES = ("application/json", "text/json")
# An absolute cap before any tokenizer runs; the per-model token limit is the real one.
MAX_PROMPT_CHARS = 100_000
# ASCII only: a request id travels in HTTP headers (X-Request-Id) to providers and vendors.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# A model id is checked for shape before it is looked up, logged or counted: ASCII, bounded.
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,62}$"
# Control characters (C0 but tab/newline/return, DEL, C1) and lone surrogates: text with them
# cannot be sent on (a surrogate is not encodable as UTF-8) or is not text a client meant.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _clean_text(value: str) -> str:
    m = _BAD_CHARS.search(value)
    if m is not None:
        raise ValueError(
            f"contains the character U+{ord(m.group()):04X} at position {m.start()} (control "
            "characters and lone surrogates are not accepted; tab and newline are)"
        )
    return value


Text = Annotated[str, AfterValidator(_clean_text)]
ModelId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=MODEL_ID_PATTERN,
        description="Model id from /v1/models (ASCII letters, digits, '._:/-'; 1-63 chars).",
    ),
]
Label = Annotated[Text, Field(max_length=63)]
# An absolute cap on references per request (ReferenceLimits.max_count's bound); the model's own
# `references.max_count` is the real one.
MAX_REFERENCES = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Body):
    """Body of `POST /v1/generate`. Unset fields take the model's defaults."""

    model: ModelId
    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    niche: Label | None = Field(default=None, description="Use-case label.")
    negative_prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    reference_image: str | None = Field(
        default=None,
        max_length=1 << 31,
        description="One reference image: base64 PNG/JPEG/WebP (or a base64 data URL); the "
        "one-image form of reference_images.",
    )
    reference_images: list[Annotated[str, Field(max_length=1 << 31)]] | None = Field(
        default=None,
        max_length=MAX_REFERENCES,
        description="Reference images (base64 PNG/JPEG/WebP or data URLs), for the models "
        "whose /v1/models card shows max_reference_images > 0.",
    )
    width: int | None = Field(default=None, ge=1, le=16_384)
    height: int | None = Field(default=None, ge=1, le=16_384)
    steps: int | None = Field(default=None, ge=1, le=10_000)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class ImagesRequest(_Body):
    """Body of `POST /v1/images/generations` (the OpenAI Images API), plus easel extras."""

    model: ModelId
    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=16, description="Images; each gets seed, seed+1, ...")
    size: str | None = Field(default=None, max_length=16, description="'WIDTHxHEIGHT' or 'auto'.")
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="b64_json (default) or url (a data: URL; nothing is hosted)."
    )
    output_format: Literal["png"] | None = None
    quality: Literal["auto", "standard"] | None = None
    background: Literal["auto", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    style: None = None
    user: Text | None = Field(default=None, max_length=256)
    # easel extensions (the openai client sends them through `extra_body`)
    negative_prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    steps: int | None = Field(default=None, ge=1, le=10_000)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    niche: Label | None = None


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked against one model's limits, with its defaults filled in.

    The gateway sends it to a provider as a `/v1/generate` body (`wire_body`, every default
    made explicit, the seed included, so a failover repeats the same request); the provider's
    ingress hands it to a model replica as it is (a plain, picklable dataclass).
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
    references: tuple[bytes, ...] = field(default=(), repr=False)
    niche: str | None = None

    def batch_key(self) -> tuple[int, int, int, float, int, str]:
        """Requests with equal keys can share one forward pass.

        Shape (width, height, steps, guidance), the reference count and a digest of the
        references themselves: the Flux.2 pipelines take one `image=` list per call and repeat
        its latents over the whole batch (diffusers 0.42), so only requests conditioned on the
        same photos (several outputs from one customer's set) can be batched together.
        """
        digest = ""
        if self.references:
            h = hashlib.sha256()
            for image in self.references:
                h.update(hashlib.sha256(image).digest())
            digest = h.hexdigest()
        n_refs = len(self.references)
        return (self.width, self.height, self.steps, self.guidance, n_refs, digest)

    def wire_body(self) -> dict[str, Any]:
        """The `/v1/generate` JSON body that resolves to this same request on any provider."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "request_id": self.request_id,
        }
        if self.negative_prompt is not None:
            body["negative_prompt"] = self.negative_prompt
        if self.niche is not None:
            body["niche"] = self.niche
        if self.references:
            body["reference_images"] = [
                base64.b64encode(image).decode("ascii") for image in self.references
            ]
        return body


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


def model_capabilities(model: ModelConfig) -> dict[str, bool | int]:
    """Which optional inputs a model accepts (also shown in /v1/models)."""
    closed = model.backend == "http_api"
    refs = model.references
    return {
        # Only the SDXL pipeline has a negative prompt among the open models served here.
        "negative_prompt": closed or model.pipeline == "StableDiffusionXLPipeline",
        # Set by the model's `references` section (the Flux.2 pipelines, vendor APIs).
        "reference_image": refs is not None,
        "max_reference_images": refs.max_count if refs is not None else 0,
    }


def reference_models(models: Iterable[ModelConfig]) -> list[str]:
    """Names of the models that take reference images, sorted."""
    return sorted(m.name for m in models if m.references is not None)


def check_reference_count(
    model: ModelConfig, count: int, all_models: Iterable[ModelConfig] = ()
) -> None:
    """422 unless `model` takes `count` reference images (the message says which models do)."""
    if count == 0:
        return
    refs = model.references
    if refs is None:
        accepting = reference_models(all_models)
        raise ApiError(
            422,
            f"reference_images: model {model.name!r} does not take reference images; models "
            f"that do: {accepting or 'none in this config'}",
            code="unsupported_input",
        )
    if count > refs.max_count:
        raise ApiError(
            422,
            f"reference_images: {count} images, but model {model.name!r} takes at most "
            f"{refs.max_count}",
            code="too_many_references",
        )


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
    references: Sequence[bytes] = (),
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
    g = model.guidance.default if guidance is None else guidance
    for name, value, allowed in (("steps", s, model.steps), ("guidance", g, model.guidance)):
        if not allowed.min <= value <= allowed.max:
            raise ApiError(
                422,
                f"{name}: {value} is not allowed for model {model.name!r} (allowed: "
                f"{allowed.min}..{allowed.max})",
                code=f"invalid_{name}",
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
    check_reference_count(model, len(references))
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
        references=tuple(references),
        niche=niche,
    )


Weight = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class RoutingUpdate(_Body):
    """Body of `PUT /v1/admin/routing`."""

    policy: Label | None = Field(default=None, description="weighted | least_outstanding | ...")
    weights: dict[Label, Weight] | None = Field(
        default=None, max_length=1_000, description="Provider -> weight, 0..1e6."
    )
    drain: list[Label] | None = Field(
        default=None, max_length=1_000, description="Providers to take off new traffic."
    )
    undrain: list[Label] | None = Field(
        default=None, max_length=1_000, description="Providers to give traffic again."
    )
    model: ModelId | None = Field(
        default=None, description="Limit weights and drains to one model."
    )


async def read_capped_body(request: Request, max_bytes: int, timeout_s: float = 10.0) -> bytes:
    """The request's body, refused with 413 as soon as it passes `max_bytes`, 408 after `timeout_s`.

    Read in chunks, whatever Content-Length claims (a claim over the cap is refused at once);
    a body still arriving after `timeout_s` is a slow-loris body and is refused.
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, f"body of {length} bytes is over the limit of {max_bytes} bytes")
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > max_bytes:
                    raise ApiError(413, f"body is over the limit of {max_bytes} bytes")
    except TimeoutError:
        raise ApiError(
            408,
            f"the body took longer than {timeout_s:g}s to arrive ({len(raw)} bytes so far); "
            "send it at once",
            code="body_timeout",
        ) from None
    return bytes(raw)


async def read_json_body(
    request: Request, schema: type[BaseModel], max_bytes: int, timeout_s: float = 10.0
) -> Any:
    """Read a JSON body of at most `max_bytes` into `schema`; ApiError 400/408/413/415/422 else.

    The body is read in chunks and refused as soon as it passes the cap, whatever
    Content-Length claims, or once reading it has taken `timeout_s` (a slow-loris body); a
    missing Content-Type is taken as JSON.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise ApiError(
            415,
            f"Content-Type {ctype!r} is not accepted; send 'Content-Type: application/json'",
        )
    raw = await read_capped_body(request, max_bytes, timeout_s)
    if not raw:
        raise ApiError(400, "empty body: send a JSON object", code="invalid_json")
    try:
        return schema.model_validate_json(bytes(raw))
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            why = str(errors[0]["msg"])
            if "surrogate" in why or "hex escape" in why:
                why += "; a \\u escape must be a character: lone surrogates (U+D800-DFFF) are not"
            raise ApiError(400, f"body is not valid JSON ({why})", code="invalid_json") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in errors):
            raise ApiError(422, "body must be a JSON object") from None
        raise ApiError(422, validation_message(list(errors))) from None
