"""The placement plan a multi-GPU model loads by, checked on CPU (no GPU is needed to plan)."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from serve_apps.provider.placement import (
    ACTIVATION_RESERVE,
    Placement,
    PlacementError,
    check_loaded,
    component_sizes,
    gpus_for,
    plan_for,
    plan_placement,
)

GB = 10**9
A100_80GB = 85_899_345_920  # what torch reports as an A100 80GB's total_memory (80 GiB)
# FLUX.2-dev in bf16: a 32B-parameter transformer, a 24B Mistral text encoder, the VAE.
FLUX2_DEV = {"transformer": 32 * 2 * GB, "text_encoder": 24 * 2 * GB, "vae": 168 * 10**6}


def test_flux2_dev_spreads_over_two_a100s():
    plan = plan_placement(FLUX2_DEV, [A100_80GB, A100_80GB])
    assert plan.device_map == {"transformer": 0, "text_encoder": 1, "vae": 1}
    budget = int(A100_80GB * (1 - ACTIVATION_RESERVE))
    assert plan.max_memory == {0: budget, 1: budget}
    assert all(used <= budget for used in plan.used().values())
    assert plan.from_pretrained_kwargs() == {
        "device_map": "balanced",
        "max_memory": plan.max_memory,
    }


def test_one_gpu_is_refused_with_what_does_not_fit():
    with pytest.raises(PlacementError) as err:
        plan_placement(FLUX2_DEV, [A100_80GB])
    message = str(err.value)
    assert "'text_encoder' (48.0 GB) does not fit GPU 0" in message
    assert "needs 112.2 GB of weights over 1 GPU(s)" in message


def test_the_plan_is_diffusers_balanced_placement():
    """Reference: diffusers' own assignment on the same sizes and budgets (where it would
    offload to the CPU, the plan refuses instead)."""
    from diffusers.pipelines.pipeline_loading_utils import _assign_components_to_devices

    cases = [
        (FLUX2_DEV, [A100_80GB] * 2),
        ({"a": 25 * GB, "b": 15 * GB, "c": 15 * GB, "d": 5 * GB}, [40 * GB, 40 * GB]),
        ({"unet": 5 * GB, "text_encoder_2": 1 * GB, "vae": GB // 6}, [24 * GB] * 4),
    ]
    for sizes, memory in cases:
        plan = plan_placement(sizes, memory)
        ordered = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        theirs = _assign_components_to_devices(ordered, dict(plan.max_memory))
        assert "cpu" not in theirs
        assert {c: d for d, cs in theirs.items() for c in cs} == plan.device_map


def _safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * {"F32": 4, "BF16": 2, "I64": 8}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def test_component_sizes_read_the_headers_at_the_load_dtype(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "Flux2Pipeline",
                "transformer": ["diffusers", "X"],
                "text_encoder": ["transformers", "Y"],
                "tokenizer": ["transformers", "Z"],
                "scheduler": ["diffusers", "S"],
                "unused": [None, None],
            }
        )
    )
    for sub in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / sub).mkdir()
    _safetensors(tmp_path / "transformer" / "a.safetensors", {"w": ("F32", [1000, 10])})
    _safetensors(tmp_path / "transformer" / "a.fp16.safetensors", {"w": ("BF16", [1, 1])})
    _safetensors(
        tmp_path / "text_encoder" / "m-1.safetensors",
        {"w": ("BF16", [10, 10]), "ids": ("I64", [4])},
    )
    (tmp_path / "tokenizer" / "vocab.json").write_text("{}")
    # bf16 load: 2 bytes per float parameter; integer buffers keep their size; variants skipped.
    assert component_sizes(tmp_path, 2) == {"transformer": 20_000, "text_encoder": 232}
    with pytest.raises(PlacementError, match=r"no model_index\.json"):
        component_sizes(tmp_path / "transformer", 2)


def test_component_sizes_of_a_real_tiny_build(easel_cache):
    from serve_apps.provider import tiny

    sizes = component_sizes(tiny.ensure("flux2-klein"), 4)
    assert set(sizes) == {"transformer", "text_encoder", "vae"}
    assert all(s > 0 for s in sizes.values())


def test_single_device_replicas_have_no_plan(tmp_path):
    assert gpus_for(0) == gpus_for(0.5) == gpus_for(1) == 1 and gpus_for(2) == 2
    assert plan_for(1, tmp_path, "cuda", None) is None
    assert plan_for(2, tmp_path, "cpu", None) is None  # CPU runs: one device


def test_placement_module_imports_no_torch():
    import subprocess

    code = "import serve_apps.provider.placement, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_check_loaded_compares_the_pipeline_with_the_plan():
    plan = Placement({"transformer": 0, "vae": 1}, {0: 1, 1: 1}, {"transformer": 1, "vae": 1})

    class Pipe:
        def __init__(self, device_map: dict) -> None:
            self.hf_device_map = device_map

    check_loaded(Pipe({"transformer": 0, "vae": 1}), plan)
    with pytest.raises(PlacementError, match="'vae': 'cpu'"):
        check_loaded(Pipe({"transformer": 0, "vae": "cpu"}), plan)
