"""benchmarks/gpu_smoke.py: correct by construction on CPU; measured only where CUDA is.

On CPU: every production model's full-size components, built on the meta device, have the
published parameter counts and consistent shapes; the same builders with every width divided
run one batch end to end through the real pipeline class. On a CUDA machine (marker `gpu`):
the full-size smoke itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from config import load_config, shipped_config_path

PROD = shipped_config_path("production.example.yaml")
_SPEC = importlib.util.spec_from_file_location(
    "gpu_smoke", Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_smoke.py"
)
gpu_smoke = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_smoke)

# Published sizes, in billions of parameters (the model cards): (low, high) bounds.
SIZES = {
    "flux2-dev": {"transformer": (31.5, 32.5), "text_encoder": (22.5, 24.5), "vae": (0.05, 0.1)},
    "flux2-schnell": {"transformer": (3.5, 4.2), "text_encoder": (3.9, 4.1), "vae": (0.05, 0.1)},
    "sdxl-lightning": {
        "unet": (2.55, 2.58),
        "text_encoder": (0.12, 0.13),
        "text_encoder_2": (0.69, 0.70),
        "vae": (0.08, 0.09),
    },
}


@pytest.fixture(scope="module")
def tiny(easel_cache):
    cfg = load_config(PROD)
    return {name: (cfg.model(name), gpu_smoke.tiny_pipeline(cfg.model(name))) for name in SIZES}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_size_parameter_counts(tiny, name):
    model, pipe = tiny[name]
    counts = gpu_smoke.parameter_counts(model, pipe)
    for component, (low, high) in SIZES[name].items():
        assert low <= counts[component] / 1e9 <= high, (component, counts[component])


@pytest.mark.parametrize("name", sorted(SIZES))
def test_the_shrunk_variant_runs_one_batch_through_the_pipeline(tiny, name):
    import torch

    model, _ = tiny[name]
    pipe, where = gpu_smoke.build_pipeline(model, device="cpu", dtype=torch.float32, shrink=64)
    assert type(pipe).__name__ == model.pipeline and set(where.values()) == {"cpu"}
    assert gpu_smoke.run_one(model, pipe, batch=2, steps=1, size=64) > 0


def test_flux2_dev_is_placed_over_two_80gb_gpus(tiny):
    from serve_apps.provider.placement import plan_placement

    model, pipe = tiny["flux2-dev"]
    sizes = {n: c * 2 for n, c in gpu_smoke.parameter_counts(model, pipe).items()}  # bf16
    plan = plan_placement(sizes, [85_899_345_920] * 2)
    assert plan.device_map == {"transformer": 0, "text_encoder": 1, "vae": 1}


def test_without_cuda_it_measures_nothing(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the gpu test measures")
    out = tmp_path / "r.json"
    assert gpu_smoke.main(["--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().out and not out.exists()


@pytest.mark.gpu
def test_gpu_smoke_on_cuda(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = tmp_path / "gpu_smoke.json"
    assert gpu_smoke.main(["--config", str(PROD), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["models"]
    assert {r["model"] for r in rows} == {
        m.name for m in load_config(PROD).models if m.backend == "diffusers"
    }
    for r in rows:
        if "skipped" not in r:
            assert r["s_per_image"] > 0
            if r["floor_s_per_image"] is not None:  # nothing beats the compute floor
                assert r["s_per_image"] >= r["floor_s_per_image"]
