"""The reproducibility block records the weights every open model loaded, pinned or not."""

from __future__ import annotations

from config import load_config, shipped_config_path
from easel.report.repro import collect_repro, format_weights


def test_weights_and_revisions_are_recorded():
    cfg = load_config(shipped_config_path("production.example.yaml"))
    weights = collect_repro(cfg)["weights"]
    assert set(weights) == {m.name for m in cfg.models if m.backend == "diffusers"}
    dev = weights["flux2-dev"]
    assert dev == {
        "weights": "black-forest-labs/FLUX.2-dev",
        "revision": cfg.model("flux2-dev").revision,
    }
    lightning = weights["sdxl-lightning"]
    assert lightning["unet_revision"] == cfg.model("sdxl-lightning").unet_revision
    line = format_weights(weights)
    assert "flux2-dev black-forest-labs/FLUX.2-dev@26afe3a78bb2" in line
    assert "+ ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors@c9a24f48e1c0" in line
    # The default config's tiny builds are not hub checkpoints: recorded as unpinned.
    assert "sdxl-turbo tiny://sdxl-turbo@unpinned" in format_weights(
        collect_repro(load_config())["weights"]
    )
