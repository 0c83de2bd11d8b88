"""The config chain: shipped configs validate, and every error names the file and the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from config import (
    DEFAULT_CONFIG,
    PRODUCTION_EXAMPLE,
    ConfigError,
    EaselConfig,
    load_config,
    parse_config,
    shipped_config_path,
)


@pytest.fixture(scope="module")
def default_doc() -> dict:
    return yaml.safe_load(shipped_config_path(DEFAULT_CONFIG).read_text())


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _error(tmp_path: Path, doc: dict) -> str:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    return message


def test_embedded_default_config_describes_the_post() -> None:
    cfg = load_config()
    assert len(cfg.models) == 6
    assert {m.backend for m in cfg.models} == {"diffusers", "http_api"}
    open_models = [m for m in cfg.models if m.backend == "diffusers"]
    assert {m.pipeline for m in open_models} == {
        "Flux2Pipeline",
        "Flux2KleinPipeline",
        "StableDiffusionXLPipeline",
    }
    assert all(m.tiny_recipe for m in open_models), "the default runs tiny local builds only"
    closed = [m for m in cfg.models if m.backend == "http_api"]
    assert all(m.api and m.api.simulated for m in closed)
    assert {m.api.protocol for m in closed} == {"openai_images", "queue"}
    assert len(cfg.providers) == 3 and all(p.simulated for p in cfg.providers)
    # the post's three niches, plus virtual try-on (its Q2 plan), image-conditioned like headshots
    assert [n.name for n in cfg.niches] == [
        "corporate-headshots",
        "ecommerce-products",
        "creative-portraits",
        "try-on",
    ]
    kinds = {n.name: n.conditioning.kind for n in cfg.niches if n.conditioning}
    assert kinds == {"corporate-headshots": "identity", "try-on": "try-on"}
    # Real A100 80GB prices, GPU clouds and a large cloud (CONTEXT.md's ranges).
    prices = sorted(p.price_per_gpu_hour for p in cfg.providers)
    assert 1.6 <= prices[0] <= 1.9 and 3.4 <= prices[-1] <= 5.1


def test_production_example_validates_with_real_checkpoints() -> None:
    cfg = load_config(shipped_config_path(PRODUCTION_EXAMPLE))
    weights = {m.name: m.weights for m in cfg.models if m.backend == "diffusers"}
    assert weights["flux2-dev"] == "black-forest-labs/FLUX.2-dev"
    assert not any(w.startswith("tiny://") for w in weights.values())
    assert not any(p.simulated for p in cfg.providers)
    assert {cfg.provider(p.name).gpu for p in cfg.providers} == {"A100-80GB"}
    assert all(
        m.api and m.api.simulated is None and m.api.base_url
        for m in cfg.models
        if m.backend == "http_api"
    )


def test_production_example_pins_every_hub_checkpoint() -> None:
    cfg = load_config(shipped_config_path(PRODUCTION_EXAMPLE))
    for m in cfg.models:
        if m.backend == "diffusers":
            assert m.revision and len(m.revision) == 40, m.name
    assert cfg.model("sdxl-lightning").unet_revision
    assert {p.kubernetes.context for p in cfg.providers} == {"lambda", "aws", "azure"}


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config()
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert again.digest() == cfg.digest()


def test_unknown_key_is_named(tmp_path: Path, default_doc: dict) -> None:
    doc = copy.deepcopy(default_doc)
    doc["models"][0]["stpes"] = 20
    message = _error(tmp_path, doc)
    assert "models[flux2-dev].stpes" in message
    assert "unknown key" in message


def test_out_of_range_number_is_named_with_its_bound(tmp_path: Path, default_doc: dict) -> None:
    doc = copy.deepcopy(default_doc)
    doc["providers"][1]["price_per_gpu_hour"] = -1
    message = _error(tmp_path, doc)
    assert "providers[runpod-sim].price_per_gpu_hour" in message
    assert "> 0" in message and "-1" in message


def test_dangling_provider_is_named(tmp_path: Path, default_doc: dict) -> None:
    doc = copy.deepcopy(default_doc)
    doc["models"][2]["providers"] = ["runpod-sim", "gcp-sim"]
    message = _error(tmp_path, doc)
    assert "gcp-sim" in message and "sdxl-lightning" in message
    assert "allowed" in message and "lambda-sim" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["models"][0].update(steps={"default": 60, "min": 1, "max": 50}),
            "models[flux2-dev].steps",
        ),
        (
            lambda d: d["models"][3].update(resolution={"default": 60, "min": 32, "max": 256}),
            "not a multiple of 16",
        ),
        (lambda d: d["models"][0].update(backend="onnx"), "allowed: 'diffusers' or 'http_api'"),
        (lambda d: d["models"][0].update(pipeline="FluxPipeline"), "Flux2Pipeline"),
        (lambda d: d["models"][4].pop("price_per_image"), "price_per_image"),
        (lambda d: d["models"][4]["api"].pop("simulated"), "base_url"),
        (lambda d: d["providers"].append(dict(d["providers"][0])), "appears twice"),
        (lambda d: d["traffic"].update(model_mix={"dalle": 1.0}), "traffic.model_mix"),
        (lambda d: d["providers"][0].update(gpu="H100"), "gpu 'H100' is not in gpus"),
        (
            lambda d: d.update(evaluation={"weights": {"fid": 0.5, "clip": 0.3, "human": 0.3}}),
            "sum to 1",
        ),
        (lambda d: d["traffic"].update(pattern="replay"), "replay_path"),
        (lambda d: d.pop("models"), "models: required key is missing"),
        # Deployment: pinned revisions are commits, for hub checkpoints only.
        (lambda d: d["models"][0].update(revision="main"), "models[flux2-dev].revision"),
        (lambda d: d["models"][0].update(revision="a" * 40), "is not a hub id"),
        (lambda d: d["models"][2].update(unet_revision="b" * 40), "unet_revision pins"),
        (
            lambda d: d["providers"][0].update(kubernetes={"hostname": "x.example.com"}),
            "set serve_service_type LoadBalancer",
        ),
        (lambda d: d["providers"][0].update(kubernetes={"namespace": "Bad_NS"}), "namespace"),
        (lambda d: d.update(kubernetes={"name": "1easel"}), "kubernetes.name"),
    ],
)
def test_invalid_values_fail_with_the_key(tmp_path, default_doc, mutate, expected) -> None:
    doc = copy.deepcopy(default_doc)
    mutate(doc)
    assert expected in _error(tmp_path, doc)


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_lookups_name_what_is_known() -> None:
    cfg = load_config()
    assert cfg.model("sdxl-turbo").steps.default == 1
    assert cfg.provider("azure-sim").resource == "provider:azure-sim"
    with pytest.raises(KeyError, match="known"):
        cfg.model("dalle")


def test_parse_config_accepts_a_dict(default_doc: dict) -> None:
    assert isinstance(parse_config(copy.deepcopy(default_doc)), EaselConfig)
