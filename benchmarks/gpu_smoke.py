"""GPU smoke: the production models' full-size architectures, random weights, one batch each.

No weights can be downloaded where easel is built, so this checks the next best thing before a
deployment: that every production model, built at its real size (the published architecture of
each component, weights drawn at random directly on the GPU in the model's dtype), fits the
GPUs it is given (placed by `serve_apps.provider.placement`), runs one batch of
`max_batch_size` images at the production config's default resolution and steps through the
real diffusers pipeline class, and how its seconds per image compare with the physical floor
(steps x TFLOP per step / the GPU's peak). Images are noise; shapes, memory and time are real.
Tokenizers and schedulers come from the tiny builds (token ids fall inside the full
vocabularies).

Usage (on a machine with CUDA):
    python benchmarks/gpu_smoke.py [--config config/shipped/production.example.yaml]
        [--models flux2-dev,sdxl-turbo] [--peak-tflops 989]
        [--out benchmarks/results/gpu_smoke.json]

Without CUDA it prints why and exits 0 (nothing measured). A model whose weights do not fit the
visible GPUs is skipped with the reason, not run partly on the CPU. `build_pipeline(model,
shrink=N)` builds the same architectures with every width divided by N: the CPU tests run that
variant end to end, and count the full-size parameters on the meta device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import ModelConfig, load_config, shipped_config_path

# Dense bf16 peak TFLOP/s by device name (vendor data sheets); `--peak-tflops` overrides.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
_PROMPT = "professional corporate headshot of a woman in a navy blazer, neutral grey backdrop"


# --- full-size architectures (published configs), every width divided by `s` -----------------


def _sdxl(s: int, tokenizer_vocab: int) -> dict[str, Callable[[], Any]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    l_hidden, g_hidden, time_dim = 768 // s, 1280 // s, 256 // s
    clip = {
        "vocab_size": tokenizer_vocab,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }
    return {
        # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (SDXL-Turbo/Lightning: same)
        "unet": lambda: UNet2DConditionModel(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320 // s, 640 // s, 1280 // s),
            layers_per_block=2,
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            cross_attention_dim=l_hidden + g_hidden,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + g_hidden,
            norm_num_groups=32 // s,
        ),
        "vae": lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128 // s, 256 // s, 512 // s, 512 // s),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32 // s,
            sample_size=1024,
            scaling_factor=0.13025,
        ),
        # OpenAI CLIP ViT-L/14 text tower; OpenCLIP ViT-bigG/14 text tower with projection.
        "text_encoder": lambda: CLIPTextModel(
            CLIPTextConfig(
                **clip,
                hidden_size=l_hidden,
                intermediate_size=3072 // s,
                num_hidden_layers=12,
                num_attention_heads=12,
                hidden_act="quick_gelu",
                projection_dim=l_hidden,
            )
        ),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(
            CLIPTextConfig(
                **clip,
                hidden_size=g_hidden,
                intermediate_size=5120 // s,
                num_hidden_layers=32,
                num_attention_heads=20,
                hidden_act="gelu",
                projection_dim=g_hidden,
            )
        ),
    }


def _dim(full: int, s: int, least: int = 8) -> int:
    """A width divided by `s`, never below `least` (rotary embeddings need even head sizes)."""
    return full if s == 1 else max(least, full // s)


def _flux2_vae(s: int) -> Callable[[], Any]:
    from diffusers import AutoencoderKLFlux2

    # FLUX.2's autoencoder: 32 latent channels (diffusers' defaults are its config).
    return lambda: AutoencoderKLFlux2(
        block_out_channels=tuple(_dim(c, s, 4) for c in (128, 256, 512, 512)),
        norm_num_groups=_dim(32, s, 1),
    )


def _flux2_transformer(
    s: int, *, double: int, single: int, heads: int, text_hidden: int, guidance: bool
) -> Callable[[], Any]:
    from diffusers import Flux2Transformer2DModel

    head_dim = _dim(128, s)
    return lambda: Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=head_dim,
        num_attention_heads=_dim(heads, s, 2),
        joint_attention_dim=3 * text_hidden,  # the pipelines stack 3 hidden-state layers
        axes_dims_rope=(head_dim // 4,) * 4,
        guidance_embeds=guidance,
    )


def _flux2_dev(s: int, tokenizer_vocab: int, ids: dict[str, int]) -> dict[str, Callable[[], Any]]:
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    hidden = 5120 // s
    # Mistral-Small-3.1-24B (text) with its Pixtral vision tower: FLUX.2-dev's text encoder.
    config = lambda: Mistral3Config(  # noqa: E731
        text_config={
            "model_type": "mistral",
            "vocab_size": max(131072 // s, tokenizer_vocab),
            "hidden_size": hidden,
            "intermediate_size": 32768 // s,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": _dim(128, s),
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1e9,
            "sliding_window": None,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 1024 // s,
            "intermediate_size": 4096 // s,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "head_dim": _dim(64, s),
            "image_size": 1540,
            "patch_size": 14,
            "num_channels": 3,
        },
        image_token_index=ids["[IMG]"],
        spatial_merge_size=2,
    )
    return {
        "text_encoder": lambda: Mistral3ForConditionalGeneration(config()),
        "transformer": _flux2_transformer(
            s, double=8, single=48, heads=48, text_hidden=hidden, guidance=True
        ),
        "vae": _flux2_vae(s),
    }


def _flux2_klein(s: int, tokenizer_vocab: int, ids: dict[str, int]) -> dict[str, Callable[[], Any]]:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    hidden = 2560 // s
    # Qwen3-4B: FLUX.2-klein-4B's text encoder.
    config = lambda: Qwen3Config(  # noqa: E731
        vocab_size=max(151936 // s, tokenizer_vocab),
        hidden_size=hidden,
        intermediate_size=9728 // s,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=_dim(128, s),
        max_position_embeddings=40960,
        tie_word_embeddings=True,
        pad_token_id=ids["pad"],
        eos_token_id=ids["eos"],
    )
    return {
        "text_encoder": lambda: Qwen3ForCausalLM(config()),
        "transformer": _flux2_transformer(
            s, double=5, single=20, heads=24, text_hidden=hidden, guidance=False
        ),
        "vae": _flux2_vae(s),
    }


def component_builders(model: ModelConfig, pipe: Any, shrink: int = 1) -> dict[str, Callable]:
    """Builders of the model's full-size components (widths / `shrink`), keyed by pipeline
    component name; `pipe` is the model's tiny build (for its tokenizers' ids)."""
    if model.pipeline == "StableDiffusionXLPipeline":
        # SDXL's widths divide by at most 16 (its GroupNorms take 32 // 16 = 2 groups).
        return _sdxl(min(shrink, 16), len(pipe.tokenizer))
    tok = pipe.tokenizer.tokenizer if model.pipeline == "Flux2Pipeline" else pipe.tokenizer
    if model.pipeline == "Flux2Pipeline":
        ids = {t: tok.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "[IMG]")}
        return _flux2_dev(shrink, len(tok), ids)
    if model.pipeline == "Flux2KleinPipeline":
        return _flux2_klein(shrink, len(tok), {"pad": tok.pad_token_id, "eos": tok.eos_token_id})
    raise ValueError(f"no full-size recipe for {model.pipeline}")


def tiny_pipeline(model: ModelConfig) -> Any:
    """The tiny build of the model's pipeline class (tokenizers, scheduler, the call)."""
    from config import parse_config
    from serve_apps.provider.pipelines import load_pipeline

    recipe = {
        "Flux2Pipeline": "flux2-dev",
        "Flux2KleinPipeline": "flux2-klein",
        "StableDiffusionXLPipeline": "sdxl-turbo",
    }[model.pipeline]
    data = load_config().model_dump(mode="json")
    (tiny,) = [m for m in data["models"] if m.get("weights") == f"tiny://{recipe}"]
    tiny["scheduler"] = (
        model.scheduler if model.pipeline == "StableDiffusionXLPipeline" else tiny["scheduler"]
    )
    return load_pipeline(parse_config(data).model(tiny["name"]), device="cpu")


def parameter_counts(model: ModelConfig, pipe: Any, shrink: int = 1) -> dict[str, int]:
    """Parameters of each full-size component, built on the meta device (no memory)."""
    import torch

    out = {}
    with torch.device("meta"):
        for name, build in component_builders(model, pipe, shrink).items():
            out[name] = sum(p.numel() for p in build().parameters())
    return out


def build_pipeline(
    model: ModelConfig,
    *,
    device: str,
    dtype: Any,
    shrink: int = 1,
    gpu_memory: list[int] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The model's pipeline class with full-size (or shrunk) random components on `device`.

    Each component is created directly where the placement plan puts it (`gpu_memory` given:
    spread over those GPUs; sizes counted on the meta device first) in `dtype`, so no copy of
    the weights ever exists elsewhere; the libraries' own initialisation draws the weights.
    Returns the pipeline and {component: device}.
    """
    import torch

    from serve_apps.provider.placement import plan_placement

    pipe = tiny_pipeline(model)
    builders = component_builders(model, pipe, shrink)
    where = dict.fromkeys(builders, device)
    if gpu_memory:
        per = torch.empty((), dtype=dtype).element_size()
        sizes = {n: c * per for n, c in parameter_counts(model, pipe, shrink).items()}
        plan = plan_placement(sizes, gpu_memory)
        where = {n: f"cuda:{i}" for n, i in plan.device_map.items()}
    modules = {}
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        for name, build in builders.items():
            with torch.device(where[name]):
                modules[name] = build().eval()
    finally:
        torch.set_default_dtype(default)
    if len(set(where.values())) > 1:
        from accelerate import dispatch_model

        # Hooks move each component's inputs to its device, as diffusers' balanced map does.
        modules = {n: dispatch_model(m, device_map={"": where[n]}) for n, m in modules.items()}
    pipe.register_modules(**modules)
    if len(set(where.values())) == 1:
        pipe.to(device)
    return pipe, where


def run_one(model: ModelConfig, pipe: Any, *, batch: int, steps: int, size: int) -> float:
    """Seconds for one batched call (after a 1-step warm-up), synchronised on CUDA."""
    import torch

    from serve_apps.provider.pipelines import generate

    def call(n_steps: int) -> None:
        generate(
            pipe,
            [_PROMPT] * batch,
            width=size,
            height=size,
            steps=n_steps,
            guidance=model.guidance.default,
            seeds=list(range(batch)),
        )

    call(1)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    call(steps)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--config", default=str(shipped_config_path("production.example.yaml")))
    parser.add_argument("--models", help="comma-separated subset (default: every open model)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak")
    parser.add_argument("--out", default="benchmarks/results/gpu_smoke.json")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    from easel.report.floor import floor_seconds
    from serve_apps.provider.placement import PlacementError

    cfg = load_config(args.config)
    wanted = set(args.models.split(",")) if args.models else None
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    rows = []
    for m in cfg.models:
        if m.backend != "diffusers" or (wanted and m.name not in wanted):
            continue
        gpus = min(max(1, int(m.num_gpus)), torch.cuda.device_count())
        memory = [torch.cuda.get_device_properties(i).total_memory for i in range(gpus)]
        dtype = getattr(torch, m.dtype)
        row: dict[str, Any] = {
            "model": m.name,
            "pipeline": m.pipeline,
            "gpus": gpus,
            "dtype": m.dtype,
            "size": m.resolution.default,
            "steps": m.steps.default,
            "batch": m.batching.max_batch_size,
        }
        try:
            pipe, where = build_pipeline(m, device="cuda", dtype=dtype, gpu_memory=memory)
        except PlacementError as exc:
            rows.append({**row, "skipped": str(exc)})
            print(f"{m.name}: skipped: {exc}", flush=True)
            continue
        seconds = run_one(m, pipe, batch=row["batch"], steps=row["steps"], size=row["size"])
        floor = floor_seconds(row["steps"], m.tflop_per_step, peak) if peak else None
        row |= {
            "placement": where,
            "batch_s": round(seconds, 3),
            "s_per_image": round(seconds / row["batch"], 3),
            "floor_s_per_image": None if floor is None else round(floor, 3),
            "vs_floor": None if floor is None else round(seconds / row["batch"] / floor, 2),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del pipe
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = {
        "device": name,
        "device_count": torch.cuda.device_count(),
        "peak_tflops": peak,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": args.config,
        "models": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
