"""The one diffusers loader and caller the serving backend uses.

`load_pipeline` turns a `ModelConfig` into a ready pipeline: `tiny://<recipe>` resolves to the
local tiny build (built on first use), anything else goes straight to
`<PipelineClass>.from_pretrained` as a hub id (at its pinned revision) or local path; a model with
more than one GPU is spread over them as `serve_apps.provider.placement` plans. `generate` runs
one batched call in which every prompt keeps its own seed, hiding each class's calling
convention.
`count_prompt_tokens` and `prompt_token_limit` let the server reject an over-long prompt instead
of letting the pipeline truncate it silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import ModelConfig
from serve_apps.provider import tiny
from serve_apps.provider.placement import check_loaded, plan_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from diffusers import DiffusionPipeline
    from PIL import Image

__all__ = [
    "count_prompt_tokens",
    "generate",
    "load_pipeline",
    "prompt_token_limit",
    "resolve_device",
    "resolve_weights",
]

_FLUX2 = ("Flux2Pipeline", "Flux2KleinPipeline")
_SDXL = "StableDiffusionXLPipeline"
# Scheduler overrides: class name and the config keys set over the checkpoint's own config.
_SCHEDULERS = {
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    "euler_ancestral_trailing": (
        "EulerAncestralDiscreteScheduler",
        {"timestep_spacing": "trailing"},
    ),
}


def resolve_weights(model: ModelConfig) -> str:
    """What `from_pretrained` gets: the tiny build's path (built if missing), else `weights`."""
    if model.backend != "diffusers" or not model.weights:
        raise ValueError(f"model {model.name!r} is not a diffusers model with weights")
    recipe = model.tiny_recipe
    if recipe is None:
        return model.weights
    spec = tiny.RECIPES.get(recipe)
    if spec is None:
        known = sorted(tiny.RECIPES)
        raise ValueError(f"model {model.name!r}: unknown tiny recipe {recipe!r}; known: {known}")
    if spec.pipeline != model.pipeline:
        raise ValueError(
            f"model {model.name!r}: tiny://{recipe} is a {spec.pipeline}, "
            f"but the model asks for {model.pipeline}"
        )
    return str(tiny.ensure(recipe))


def resolve_device(model: ModelConfig, device: str | None = None) -> tuple[str, Any]:
    """(device, torch dtype): CUDA with the model's dtype when available, else CPU float32."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, model.dtype) if device.startswith("cuda") else torch.float32
    return device, dtype


def load_pipeline(model: ModelConfig, device: str | None = None) -> DiffusionPipeline:
    """Load a model's pipeline with its UNet and scheduler overrides, on `device`.

    Args:
        model: a diffusers model from the config.
        device: "cpu", "cuda", "cuda:1", ...; None picks CUDA when available, else CPU.

    Returns:
        The pipeline, moved to the device, progress bars off.
    """
    import diffusers

    if model.pipeline not in (*_FLUX2, _SDXL):
        raise ValueError(f"model {model.name!r}: unsupported pipeline {model.pipeline!r}")
    if model.unet and model.pipeline != _SDXL:
        raise ValueError(f"model {model.name!r}: a `unet` override needs {_SDXL}")
    if model.scheduler != "default" and model.pipeline != _SDXL:
        raise ValueError(
            f"model {model.name!r}: scheduler {model.scheduler!r} is for {_SDXL}; "
            f"{model.pipeline} keeps its flow-matching scheduler"
        )
    device, dtype = resolve_device(model, device)
    path = resolve_weights(model)
    cls = getattr(diffusers, model.pipeline)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
    if model.revision:
        kwargs["revision"] = model.revision  # the pinned commit, from the cache when offline
    # More than one GPU: spread the components over them as planned, never one `.to("cuda")`.
    placement = plan_for(model.num_gpus, path, device, dtype, model.revision)
    if placement is not None:
        kwargs.update(placement.from_pretrained_kwargs())
    with tiny.no_progress_bars():
        if model.unet:
            kwargs["unet"] = _load_unet(
                model.unet, path, dtype, model.revision, model.unet_revision
            )
        pipe = cls.from_pretrained(path, **kwargs)
    if model.scheduler != "default":
        name, overrides = _SCHEDULERS[model.scheduler]
        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **overrides)
    pipe.set_progress_bar_config(disable=True)
    _drop_known_warnings()
    if placement is not None:
        check_loaded(pipe, placement)
        return pipe
    return pipe.to(device)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _drop_known_warnings() -> None:
    """Drop one warning that would otherwise fill a replica's log once per forward pass.

    Flux2Pipeline hands its tokenizer arguments (padding, truncation, max_length) to the
    Pixtral processor as plain kwargs; transformers still applies them, and warns each call.
    """
    log = logging.getLogger("transformers.processing_utils")
    if not any(isinstance(f, _DropMessage) for f in log.filters):
        log.addFilter(_DropMessage("Kwargs passed to `processor.__call__` have to be in"))


def _dtype_keyword() -> str:
    # diffusers renamed `torch_dtype` to `dtype` (the old name still works, with a warning).
    import diffusers.utils

    return "dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype"


def _load_unet(
    spec: str, base: str, dtype: Any, base_revision: str | None, revision: str | None
) -> Any:
    """A UNet override: a diffusers UNet folder / hub id, or one `.safetensors` state dict.

    A `.safetensors` spec is a local file or `owner/repo/file.safetensors` on the hub (the form
    SDXL-Lightning ships); it is loaded into a UNet shaped by the base pipeline's UNet config.
    Hub specs load at their pinned `revision` (the base's config at `base_revision`).
    """
    from diffusers import UNet2DConditionModel

    if not spec.endswith(".safetensors"):
        return UNet2DConditionModel.from_pretrained(
            spec, revision=revision, **{_dtype_keyword(): dtype}
        )
    from safetensors.torch import load_file

    file = Path(spec)
    if not file.is_file():
        parts = spec.split("/")
        if len(parts) < 3:
            raise ValueError(
                f"unet {spec!r}: not a local file, and not 'owner/repo/file.safetensors'"
            )
        from huggingface_hub import hf_hub_download

        file = Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), revision=revision))
    unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(base, subfolder="unet", revision=base_revision)
    )
    unet.load_state_dict(load_file(str(file)), strict=True)
    return unet.to(dtype)


def generate(
    pipe: DiffusionPipeline,
    prompts: Sequence[str],
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    seeds: Sequence[int],
    negative_prompts: Sequence[str | None] | None = None,
    images: Sequence[Image.Image] = (),
) -> list[Image.Image]:
    """One batched pipeline call; image i comes from prompts[i] with its own seeds[i].

    Each prompt gets its own CPU `torch.Generator`, so an image depends on its own seed only, on
    any device and whatever else shares its batch (up to float rounding in batched kernels).

    Args:
        negative_prompts: per-prompt negative prompts; SDXL only (used when guidance > 1).
        images: reference images the whole call is conditioned on, passed as `image=` (the
            Flux.2 pipelines take a list and repeat its latents over the batch); Flux.2 only.

    Raises:
        ValueError: mismatched lengths, a size the pipeline would silently round, or arguments
            this pipeline class does not take.
    """
    import torch

    prompts = list(prompts)
    seeds = [int(s) for s in seeds]
    if not prompts or len(prompts) != len(seeds):
        raise ValueError(
            f"need one seed per prompt, got {len(prompts)} prompts, {len(seeds)} seeds"
        )
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be strings")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    multiple = _size_multiple(pipe)
    if width < multiple or height < multiple or width % multiple or height % multiple:
        raise ValueError(
            f"{type(pipe).__name__} needs width and height in positive multiples of {multiple}, "
            f"got {width}x{height}"
        )
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    kwargs: dict[str, Any] = {
        "prompt": prompts,  # a keyword always: Flux2 pipelines take an image first
        "width": width,
        "height": height,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "generator": generators,
        "output_type": "pil",
    }
    if negative_prompts is not None:
        if len(negative_prompts) != len(prompts):
            raise ValueError("need one negative prompt (or None) per prompt")
        if any(negative_prompts):
            if type(pipe).__name__ != _SDXL:
                raise ValueError(f"{type(pipe).__name__} takes no negative prompt")
            kwargs["negative_prompt"] = [n or "" for n in negative_prompts]
    if images:
        if type(pipe).__name__ not in _FLUX2:
            raise ValueError(f"{type(pipe).__name__} takes no reference image")
        kwargs["image"] = list(images)
    return list(pipe(**kwargs).images)


def _size_multiple(pipe: DiffusionPipeline) -> int:
    # Flux.2 packs 2x2 latent patches; SDXL needs whole latent pixels.
    if type(pipe).__name__ in _FLUX2:
        return pipe.vae_scale_factor * 2
    return pipe.vae_scale_factor


def count_prompt_tokens(pipe: DiffusionPipeline, model: ModelConfig, prompt: str) -> int:
    """Tokens the pipeline's text encoder receives for `prompt`, before padding.

    Counted with the pipeline's own tokenizer(s) and exactly the wrapping the pipeline applies:
    BOS/EOS for CLIP (SDXL); the chat template for Flux.2 (Klein: user turn + empty think block;
    dev: the pipeline's system message + user turn). The pipeline truncates iff this count
    exceeds `prompt_token_limit`'s native part.
    """
    name = type(pipe).__name__
    if name == _SDXL:
        tokenizers = [t for t in (pipe.tokenizer, pipe.tokenizer_2) if t is not None]
        return max(len(t(prompt, truncation=False)["input_ids"]) for t in tokenizers)
    if name == "Flux2KleinPipeline":
        text = pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
        return len(pipe.tokenizer(text)["input_ids"])
    if name == "Flux2Pipeline":
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        inputs = pipe.tokenizer.apply_chat_template(
            format_input(prompts=[prompt], system_message=pipe.system_message),
            add_generation_prompt=False,
            tokenize=True,
            return_dict=True,
        )
        return len(inputs["input_ids"][0])
    raise ValueError(f"model {model.name!r}: cannot count tokens for {name}")


def prompt_token_limit(pipe: DiffusionPipeline, model: ModelConfig) -> int:
    """Most tokens (as `count_prompt_tokens` counts them) a prompt may have for this model.

    The smaller of the config's `max_prompt_tokens` and what the pipeline encodes without
    truncating (77 for SDXL's CLIP, the 512-token `max_sequence_length` for Flux.2).
    """
    name = type(pipe).__name__
    if name == _SDXL:
        native = min(
            t.model_max_length for t in (pipe.tokenizer, pipe.tokenizer_2) if t is not None
        )
    elif name in _FLUX2:
        native = pipe.tokenizer_max_length
    else:
        raise ValueError(f"model {model.name!r}: no token limit known for {name}")
    return min(model.max_prompt_tokens, native)
