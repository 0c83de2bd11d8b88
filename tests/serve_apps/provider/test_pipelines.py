"""The diffusers loader and batched caller, on the tiny builds of the default config's models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config import ModelConfig, load_config
from serve_apps.provider import pipelines, tiny

MODELS = {m.name: m for m in load_config().models if m.backend == "diffusers"}
NAMES = list(MODELS)


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    """Each default diffusers model, loaded once on CPU (tiny builds made on first use)."""
    return {name: pipelines.load_pipeline(model, device="cpu") for name, model in MODELS.items()}


def _gen(
    pipe: Any,
    model: ModelConfig,
    prompts: Sequence[str],
    seeds: Sequence[int],
    width: int = 64,
    height: int = 64,
) -> list[np.ndarray]:
    images = pipelines.generate(
        pipe,
        prompts,
        width=width,
        height=height,
        steps=model.steps.default,
        guidance=model.guidance.default,
        seeds=seeds,
    )
    return [np.asarray(im, dtype=np.int16) for im in images]


def test_resolve_weights() -> None:
    turbo = MODELS["sdxl-turbo"]
    assert pipelines.resolve_weights(turbo) == str(tiny.model_path("sdxl-turbo"))
    hub = turbo.model_copy(update={"weights": "stabilityai/sdxl-turbo"})
    assert pipelines.resolve_weights(hub) == "stabilityai/sdxl-turbo"
    with pytest.raises(ValueError, match="unknown tiny recipe 'nope'"):
        pipelines.resolve_weights(turbo.model_copy(update={"weights": "tiny://nope"}))
    with pytest.raises(ValueError, match="is a Flux2KleinPipeline"):
        pipelines.resolve_weights(turbo.model_copy(update={"weights": "tiny://flux2-klein"}))


@pytest.mark.parametrize("name", NAMES)
def test_load_pipeline_class_dtype_scheduler(pipes: dict[str, Any], name: str) -> None:
    import torch

    pipe, model = pipes[name], MODELS[name]
    assert type(pipe).__name__ == model.pipeline
    assert pipe.device.type == "cpu"
    assert pipe.dtype == torch.float32, "CPU runs use float32 whatever the configured dtype"
    assert pipe._progress_bar_config == {"disable": True}
    expected = {
        "euler_trailing": "EulerDiscreteScheduler",
        "euler_ancestral_trailing": "EulerAncestralDiscreteScheduler",
        "default": "FlowMatchEulerDiscreteScheduler",
    }[model.scheduler]
    assert type(pipe.scheduler).__name__ == expected
    if model.scheduler != "default":
        assert pipe.scheduler.config.timestep_spacing == "trailing"


def test_scheduler_override_replaces_the_checkpoint_scheduler() -> None:
    # The turbo build ships EulerAncestral; the override must win.
    model = MODELS["sdxl-turbo"].model_copy(update={"scheduler": "euler_trailing"})
    pipe = pipelines.load_pipeline(model, device="cpu")
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    # ... keeping the checkpoint's own noise schedule.
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_sdxl_only_overrides_are_rejected_for_flux() -> None:
    flux = MODELS["flux2-dev"]
    with pytest.raises(ValueError, match="flow-matching"):
        pipelines.load_pipeline(flux.model_copy(update={"scheduler": "euler_trailing"}), "cpu")
    with pytest.raises(ValueError, match="`unet` override"):
        pipelines.load_pipeline(flux.model_copy(update={"unet": "some/unet"}), "cpu")


@pytest.mark.parametrize("form", ["folder", "safetensors"])
def test_unet_override(pipes: dict[str, Any], tmp_path: Path, form: str) -> None:
    import torch
    from safetensors.torch import save_file

    unet = pipes["sdxl-lightning"].unet
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    state["conv_out.bias"] += 1.0  # a UNet that differs from the pipeline's own
    if form == "folder":
        other = type(unet).from_config(unet.config)
        other.load_state_dict(state)
        other.save_pretrained(tmp_path / "unet")
        spec = str(tmp_path / "unet")
    else:
        spec = str(tmp_path / "lightning_4step_unet.safetensors")
        save_file(state, spec)
    model = MODELS["sdxl-lightning"].model_copy(update={"unet": spec})
    pipe = pipelines.load_pipeline(model, device="cpu")
    assert torch.equal(pipe.unet.conv_out.bias, state["conv_out.bias"])
    assert not torch.equal(pipe.unet.conv_out.bias, unet.conv_out.bias)


@pytest.mark.parametrize("name", NAMES)
def test_generate_requested_sizes(pipes: dict[str, Any], name: str) -> None:
    pipe, model = pipes[name], MODELS[name]
    for width, height in [(64, 64), (64, 32), (48, 64)]:
        (image,) = pipelines.generate(
            pipe,
            ["a red bicycle"],
            width=width,
            height=height,
            steps=model.steps.default,
            guidance=model.guidance.default,
            seeds=[1],
        )
        assert image.size == (width, height)
        assert image.mode == "RGB"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_pixels_other_seed_other_pixels(pipes: dict[str, Any], name: str) -> None:
    pipe, model = pipes[name], MODELS[name]
    (a,) = _gen(pipe, model, ["a lighthouse at dusk"], [11])
    (b,) = _gen(pipe, model, ["a lighthouse at dusk"], [11])
    (c,) = _gen(pipe, model, ["a lighthouse at dusk"], [12])
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 5


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_calls(pipes: dict[str, Any], name: str) -> None:
    pipe, model = pipes[name], MODELS[name]
    prompts = ["a cat", "a product photo of a mug", "a portrait in oil"]
    seeds = [5, 6, 7]
    batch = _gen(pipe, model, prompts, seeds)
    singles = [_gen(pipe, model, [p], [s])[0] for p, s in zip(prompts, seeds, strict=True)]
    for got, want in zip(batch, singles, strict=True):
        # Batched kernels may round differently in the last bit; never more than a level or two.
        assert np.abs(got - want).max() <= 2


def test_batch_of_eight_keeps_each_seed(pipes: dict[str, Any]) -> None:
    pipe, model = pipes["sdxl-turbo"], MODELS["sdxl-turbo"]
    seeds = list(range(100, 108))
    batch = _gen(pipe, model, ["a dog"] * 8, seeds)
    assert len(batch) == 8
    for i in (0, 7):
        assert np.abs(batch[i] - _gen(pipe, model, ["a dog"], [seeds[i]])[0]).max() <= 2
    assert min(np.abs(batch[i] - batch[i + 1]).mean() for i in range(7)) > 5


def test_a_fresh_load_gives_the_same_image(pipes: dict[str, Any]) -> None:
    model = MODELS["flux2-schnell"]
    fresh = pipelines.load_pipeline(model, device="cpu")
    (a,) = _gen(pipes["flux2-schnell"], model, ["a mountain lake"], [3])
    (b,) = _gen(fresh, model, ["a mountain lake"], [3])
    assert np.array_equal(a, b)


def test_generate_rejects_bad_input(pipes: dict[str, Any]) -> None:
    flux, sdxl = MODELS["flux2-dev"], MODELS["sdxl-turbo"]

    def call(name: str, **kw: Any) -> None:
        args = {"width": 64, "height": 64, "steps": 1, "guidance": 0.0, "seeds": [1]}
        args.update(kw)
        prompts = args.pop("prompts", ["x"])
        pipelines.generate(pipes[name], prompts, **args)

    with pytest.raises(ValueError, match="multiples of 16, got 40x64"):
        call(flux.name, width=40)
    with pytest.raises(ValueError, match="multiples of 8, got 64x36"):
        call(sdxl.name, height=36)
    with pytest.raises(ValueError, match="one seed per prompt"):
        call(sdxl.name, prompts=["a", "b"])
    with pytest.raises(ValueError, match="one seed per prompt"):
        call(sdxl.name, prompts=[], seeds=[])
    with pytest.raises(ValueError, match="takes no negative prompt"):
        call(flux.name, negative_prompts=["blurry"])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        call(sdxl.name, steps=0)


def test_sdxl_negative_prompt_is_used(pipes: dict[str, Any]) -> None:
    pipe = pipes["sdxl-lightning"]
    args = {"width": 64, "height": 64, "steps": 2, "guidance": 2.0, "seeds": [4]}
    plain = pipelines.generate(pipe, ["a cat"], **args)[0]
    same = pipelines.generate(pipe, ["a cat"], negative_prompts=[None], **args)[0]
    negative = pipelines.generate(pipe, ["a cat"], negative_prompts=["zebra"], **args)[0]
    assert np.array_equal(np.asarray(plain), np.asarray(same))
    assert not np.array_equal(np.asarray(plain), np.asarray(negative))


def _photo(seed: int, size: tuple[int, int] = (96, 80)) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["flux2-dev", "flux2-schnell"])
def test_flux2_reference_images_condition_the_output(pipes: dict[str, Any], name: str) -> None:
    """`images` reach the Flux.2 pipelines as `image=`: the output depends on them, per call."""
    pipe, model = pipes[name], MODELS[name]
    args = {
        "width": 64, "height": 64, "steps": 2, "guidance": model.guidance.default, "seeds": [4],
    }  # fmt: skip
    plain = np.asarray(pipelines.generate(pipe, ["a headshot"], **args)[0], dtype=np.int16)
    one = pipelines.generate(pipe, ["a headshot"], images=[_photo(1)], **args)[0]
    again = pipelines.generate(pipe, ["a headshot"], images=[_photo(1)], **args)[0]
    other = pipelines.generate(pipe, ["a headshot"], images=[_photo(2)], **args)[0]
    two = pipelines.generate(pipe, ["a try-on"], images=[_photo(1), _photo(3, (64, 128))], **args)
    one, again, other = (np.asarray(x, dtype=np.int16) for x in (one, again, other))
    assert one.shape == plain.shape == (64, 64, 3) and two[0].size == (64, 64)
    assert np.array_equal(one, again)
    assert np.abs(one - plain).max() > 0 and np.abs(one - other).max() > 0
    # A batch shares its references (the pipeline repeats their latents over the batch).
    batch = pipelines.generate(
        pipe, ["a headshot", "a headshot"], images=[_photo(1)], **{**args, "seeds": [4, 5]}
    )
    assert np.abs(np.asarray(batch[0], dtype=np.int16) - one).max() <= 2


def test_sdxl_takes_no_reference_image(pipes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="takes no reference image"):
        pipelines.generate(
            pipes["sdxl-turbo"], ["x"], width=64, height=64, steps=1, guidance=0.0, seeds=[1],
            images=[_photo(1)],
        )  # fmt: skip


def test_count_prompt_tokens_sdxl_counts_clip_tokens(pipes: dict[str, Any]) -> None:
    pipe, model = pipes["sdxl-turbo"], MODELS["sdxl-turbo"]
    assert pipelines.count_prompt_tokens(pipe, model, "a cat") == 4  # BOS a cat EOS
    long = "a photo of a cat " * 20
    assert pipelines.count_prompt_tokens(pipe, model, long) == 2 + 5 * 20
    assert pipelines.prompt_token_limit(pipe, model) == 77


@pytest.mark.parametrize("name", ["flux2-dev", "flux2-schnell"])
def test_count_prompt_tokens_flux_matches_what_the_encoder_gets(
    pipes: dict[str, Any], name: str
) -> None:
    """The count equals the unpadded tokens the pipeline feeds its text encoder."""
    pipe, model = pipes[name], MODELS[name]
    seen: list[int] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(int(kwargs["attention_mask"].sum()))

    handle = pipe.text_encoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        short, long = "a red bicycle by a wall", "word " * 600
        pipe.encode_prompt(short)
        pipe.encode_prompt(long)
    finally:
        handle.remove()
    limit = pipelines.prompt_token_limit(pipe, model)
    assert limit == 512
    assert pipelines.count_prompt_tokens(pipe, model, short) == seen[0] < limit
    # Over the limit, the pipeline truncates silently: the server must reject instead.
    assert pipelines.count_prompt_tokens(pipe, model, long) > limit == seen[1]


def test_prompt_token_limit_takes_the_smaller(pipes: dict[str, Any]) -> None:
    model = MODELS["flux2-dev"].model_copy(update={"max_prompt_tokens": 100})
    assert pipelines.prompt_token_limit(pipes["flux2-dev"], model) == 100
    model = MODELS["sdxl-turbo"].model_copy(update={"max_prompt_tokens": 1000})
    assert pipelines.prompt_token_limit(pipes["sdxl-turbo"], model) == 77


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_load_uses_the_configured_dtype(name: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = MODELS[name]
    pipe = pipelines.load_pipeline(model)  # auto: CUDA when available
    assert pipe.device.type == "cuda"
    assert pipe.dtype == getattr(torch, model.dtype)
    images = _gen(pipe, model, ["a cat", "a dog"], [1, 2])
    assert [im.shape for im in images] == [(64, 64, 3)] * 2
    assert all(im.std() > 1 for im in images), "a flat image means NaNs in reduced precision"
