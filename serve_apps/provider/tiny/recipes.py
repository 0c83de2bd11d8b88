"""How each tiny model is made: offline tokenizers, narrow components, the real pipeline class.

A recipe returns an unsaved pipeline of the real diffusers class, every component built from a
small config with seeded random weights (the same seed gives byte-identical weights) and real
tokenizers made offline: OpenAI's CLIP BPE from the vocabulary open_clip ships, and byte-level
BPEs trained in well under a second with `tokenizers`. `zoo` saves, caches and lists them.
Heavy libraries are imported inside the builders, so importing this module is cheap.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RECIPES", "RECIPE_FORMAT", "TinyRecipe"]

# Bump when any recipe's output changes: `zoo.ensure` then rebuilds older caches.
RECIPE_FORMAT = 1

# Mistral-style special tokens, in id order (ids 0..10), as the Pixtral processor expects them.
_MISTRAL_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "<pad>",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
)
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen2's pre-tokenizer split; the tiny BPE is trained with it so Qwen2Tokenizer reproduces it.
_QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Mistral-Small-3.x style: [SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST], content as parts.
_MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}[SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' -%}[INST]{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}[IMG]{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}[/SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' -%}[/INST]"
    "{%- elif message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
# Qwen3 style, with the `enable_thinking=False` empty think block Flux2KleinPipeline asks for.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyRecipe:
    """How one tiny model is made: the real pipeline class and a builder of its components."""

    name: str
    pipeline: str
    description: str
    make: Callable[[int], Any]  # seed -> an unsaved DiffusionPipeline


def _seeded(seed: int, recipe: str, component: str) -> None:
    """Seed torch's global RNG for one component, stable across runs and component order."""
    import torch

    digest = hashlib.sha256(f"{seed}:{recipe}:{component}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# --- tokenizers (all offline) -----------------------------------------------------------------


def _clip_merges() -> list[tuple[str, str]]:
    """OpenAI CLIP's BPE merges, from the vocabulary file open_clip ships."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed; it carries the CLIP BPE vocabulary")
    path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    # The same slice open_clip's SimpleTokenizer takes: 49408 tokens in all.
    return [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # type: ignore[misc]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _clip_tokenizer(pad_token: str) -> Any:
    """A real CLIP tokenizer (OpenAI's 49408-token vocab), model_max_length=77."""
    from transformers import CLIPTokenizer

    merges = _clip_merges()
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)


def _english_corpus() -> list[str]:
    """Lines of English words for training a small BPE, from CLIP's merges (no download).

    Whole words appear in CLIP's merge list roughly in order of frequency; repeating the early
    ones (Zipf-like) gives a tokenizer whose tokens-per-word resembles a real one's.
    """
    import random

    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    words = []
    for a, b in _clip_merges():
        word = a + b
        if word.endswith("</w>") and word[:-4].isalpha():
            words.append(word[:-4])
    seq = [w for rank, w in enumerate(words) for _ in range(max(1, 4000 // (rank + 1)))]
    random.Random(0).shuffle(seq)
    return [" ".join(seq[i : i + 64]) for i in range(0, len(seq), 64)] + [SYSTEM_MESSAGE]


def _train_byte_bpe(special_tokens: tuple[str, ...], vocab_size: int = 8192) -> Any:
    """A byte-level BPE (Qwen2's split), trained in well under a second; deterministic."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_english_corpus(), trainer)
    return tok


def _qwen_tokenizer() -> Any:
    """A Qwen2Tokenizer (the class Flux2KleinPipeline declares) over a freshly trained BPE."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    trained = json.loads(_train_byte_bpe(_QWEN_SPECIALS).to_str())["model"]
    tok = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) for m in trained["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tok.add_tokens([AddedToken(t, special=True) for t in _QWEN_SPECIALS])
    tok.chat_template = _QWEN_CHAT_TEMPLATE
    return tok


def _pixtral_processor() -> Any:
    """A PixtralProcessor (what Flux2Pipeline takes as `tokenizer`), built offline."""
    from tokenizers import AddedToken
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_byte_bpe(_MISTRAL_SPECIALS),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=131072,
    )
    tok.add_tokens([AddedToken(t, special=True) for t in _MISTRAL_SPECIALS])
    return PixtralProcessor(
        image_processor=PixtralImageProcessor(),
        tokenizer=tok,
        patch_size=16,
        spatial_merge_size=2,
        chat_template=_MISTRAL_CHAT_TEMPLATE,
    )


# --- components -------------------------------------------------------------------------------

# Narrow but deep text encoders: the Flux.2 pipelines read hidden states at fixed depths by default
# ((10, 20, 30) for Mistral, (9, 18, 27) for Qwen3), so deep-narrow encoders run with the
# pipelines' own defaults and the serving code needs no tiny-only arguments.
_TEXT_HIDDEN = 32
_FLUX_TEXT_LAYERS = 3  # hidden-state layers the pipelines stack into the transformer's context


def _flux2_vae(seed: int, recipe: str) -> Any:
    from diffusers import AutoencoderKLFlux2

    _seeded(seed, recipe, "vae")
    # Four blocks: the real 8x spatial factor, so any multiple of 16 works as in production.
    return AutoencoderKLFlux2(
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )


def _flux2_transformer(seed: int, recipe: str, *, guidance: bool, double: int, single: int) -> Any:
    from diffusers import Flux2Transformer2DModel

    _seeded(seed, recipe, "transformer")
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * 4,  # 2x2-patchified latents of the 4-channel tiny VAE
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_FLUX_TEXT_LAYERS * _TEXT_HIDDEN,
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance,
    )


def _flow_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.2's scheduler config: resolution-dependent shift (the pipelines pass `mu`).
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _make_flux2_dev(seed: int) -> Any:
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    recipe = "flux2-dev"
    processor = _pixtral_processor()
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "[IMG]")}
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tok),
            "hidden_size": _TEXT_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 31,  # hidden_states[30] exists and is not the final norm
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "sliding_window": None,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 1024,
            "patch_size": 16,
            "num_channels": 3,
        },
        image_token_index=ids["[IMG]"],
        spatial_merge_size=2,
    )
    _seeded(seed, recipe, "text_encoder")
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    return Flux2Pipeline(
        scheduler=_flow_scheduler(),
        vae=_flux2_vae(seed, recipe),
        text_encoder=text_encoder,
        tokenizer=processor,
        transformer=_flux2_transformer(seed, recipe, guidance=True, double=2, single=4),
    )


def _make_flux2_klein(seed: int) -> Any:
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    recipe = "flux2-klein"
    tok = _qwen_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=28,  # hidden_states[27] exists and is not the final norm
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    _seeded(seed, recipe, "text_encoder")
    text_encoder = Qwen3ForCausalLM(config).eval()
    return Flux2KleinPipeline(
        scheduler=_flow_scheduler(),
        vae=_flux2_vae(seed, recipe),
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=_flux2_transformer(seed, recipe, guidance=False, double=1, single=2),
        is_distilled=True,  # the few-step distilled Klein: no CFG pass
    )


def _make_sdxl(recipe: str, seed: int, scheduler: Any) -> Any:
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    tokenizer = _clip_tokenizer(pad_token="<|endoftext|>")
    tokenizer_2 = _clip_tokenizer(pad_token="!")  # as SDXL's second (OpenCLIP bigG) tokenizer
    clip = {
        "vocab_size": len(tokenizer),
        "hidden_size": _TEXT_HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": 1,
    }
    _seeded(seed, recipe, "text_encoder")
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip, hidden_act="quick_gelu")).eval()
    _seeded(seed, recipe, "text_encoder_2")
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(**clip, hidden_act="gelu", projection_dim=_TEXT_HIDDEN)
    ).eval()
    _seeded(seed, recipe, "unet")
    # SDXL's layout (one plain block, two cross-attention blocks, text_time conditioning), narrow.
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        attention_head_dim=(2, 2, 2),
        transformer_layers_per_block=(1, 1, 1),
        cross_attention_dim=2 * _TEXT_HIDDEN,  # both encoders' hidden states, concatenated
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + _TEXT_HIDDEN,  # 6 time ids + pooled text
        norm_num_groups=8,
    )
    _seeded(seed, recipe, "vae")
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,  # as SDXL's VAE: decoded in float32 when the pipeline runs in fp16
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def _sdxl_scheduler_config() -> dict[str, Any]:
    """stabilityai/stable-diffusion-xl-base-1.0's Euler scheduler config."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


def _make_sdxl_lightning(seed: int) -> Any:
    from diffusers import EulerDiscreteScheduler

    # SDXL-Lightning's recommended sampler: Euler with trailing timesteps, 4 steps, guidance 0.
    scheduler = EulerDiscreteScheduler(
        **{**_sdxl_scheduler_config(), "timestep_spacing": "trailing"}
    )
    return _make_sdxl("sdxl-lightning", seed, scheduler)


def _make_sdxl_turbo(seed: int) -> Any:
    from diffusers import EulerAncestralDiscreteScheduler

    # sdxl-turbo ships EulerAncestral with trailing timesteps; 1 step, guidance 0.
    scheduler = EulerAncestralDiscreteScheduler(
        **{**_sdxl_scheduler_config(), "timestep_spacing": "trailing"}
    )
    return _make_sdxl("sdxl-turbo", seed, scheduler)


RECIPES: dict[str, TinyRecipe] = {
    r.name: r
    for r in (
        TinyRecipe(
            "flux2-dev",
            "Flux2Pipeline",
            "Flux.2 [dev]: Mistral-3 text encoder + Pixtral processor, guidance-embedded DiT",
            _make_flux2_dev,
        ),
        TinyRecipe(
            "flux2-klein",
            "Flux2KleinPipeline",
            "Flux.2 distilled few-step (Klein, the [schnell] row): Qwen3 text encoder",
            _make_flux2_klein,
        ),
        TinyRecipe(
            "sdxl-lightning",
            "StableDiffusionXLPipeline",
            "SDXL Lightning: two CLIP encoders, UNet, Euler trailing (4 steps, guidance 0)",
            _make_sdxl_lightning,
        ),
        TinyRecipe(
            "sdxl-turbo",
            "StableDiffusionXLPipeline",
            "SDXL Turbo: two CLIP encoders, UNet, EulerAncestral trailing (1 step, guidance 0)",
            _make_sdxl_turbo,
        ),
    )
}
