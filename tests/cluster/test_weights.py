"""Weights: what each provider fetches (pinned), how, and that replicas load it offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster.weights import WeightItem, WeightsError, fetch, plan, unpinned
from config import load_config, parse_config, shipped_config_path

PROD = shipped_config_path("production.example.yaml")
ROOT = Path(__file__).resolve().parents[2]


def test_production_plan_pins_every_hub_item():
    cfg = load_config(PROD)
    items = plan(cfg, cfg.provider("aws"))
    assert not unpinned(items)
    unet = next(i for i in items if i.kind == "file")
    assert (unet.source, unet.filename) == (
        "ByteDance/SDXL-Lightning",
        "sdxl_lightning_4step_unet.safetensors",
    )
    assert unet.revision == cfg.model("sdxl-lightning").unet_revision
    assert {i.model for i in items if i.kind == "snapshot"} == {
        "flux2-dev",
        "flux2-schnell",
        "sdxl-lightning",
        "sdxl-turbo",
    }
    # Closed models are the gateway's: nothing to fetch for them.
    assert not [i for i in plan(cfg, cfg.provider("lambda")) if i.model.startswith("proprietary")]


def test_default_plan_is_tiny_builds():
    cfg = load_config()
    assert {i.kind for p in cfg.providers for i in plan(cfg, p)} == {"tiny"}


def test_fetch_downloads_exactly_the_pinned_revisions(tmp_path):
    cfg = load_config(PROD)
    calls = []

    def snapshot(**kw):
        calls.append(("snapshot", kw))
        return str(tmp_path / kw["repo_id"])

    def file(**kw):
        calls.append(("file", kw))
        return str(tmp_path / kw["filename"])

    fetch(
        plan(cfg, cfg.provider("aws")),
        tmp_path / "hub",
        token="hf_x",
        snapshot_download=snapshot,
        hf_hub_download=file,
    )
    for kind, kw in calls:
        model = next(m for m in cfg.models if kw["repo_id"] in (m.weights, (m.unet or "")[:24]))
        assert kw["revision"] in (model.revision, model.unet_revision)
        assert kw["cache_dir"] == str(tmp_path / "hub") and kw["token"] == "hf_x"
        if kind == "snapshot":
            assert "model_index.json" in kw["allow_patterns"]  # not the root single-file blobs
    assert sorted(k for k, _ in calls) == ["file", "snapshot", "snapshot", "snapshot", "snapshot"]
    with pytest.raises(WeightsError, match="unpinned hub weights: x: snapshot a/b"):
        fetch(
            [WeightItem("x", "snapshot", "a/b")],
            tmp_path,
            snapshot_download=snapshot,
            hf_hub_download=file,
        )


def test_weights_cli_dry_run(capsys):
    from easel.cli import main

    assert (
        main(
            [
                "k8s",
                "weights",
                "--config",
                str(PROD),
                "--provider",
                "azure",
                "--cache",
                "/nonexistent",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "would fetch flux2-dev: snapshot black-forest-labs/FLUX.2-dev@26afe3a7" in out
    assert main(["k8s", "weights", "--provider", "nope", "--cache", "/x"]) == 2


def test_a_fetched_checkpoint_loads_offline_at_its_revision(tmp_path, easel_cache):
    """The cache the Job fills is the layout `from_pretrained(repo, revision=...)` reads with
    HF_HUB_OFFLINE=1: a tiny build stands in for the hub checkpoint (no download here). The
    cache has no `refs/main`, so the load only works because the loader asks for the revision."""
    from serve_apps.provider import tiny

    built = tiny.ensure("sdxl-turbo")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = "easel-test/tiny-sdxl-turbo"
    hf_home = tmp_path / "hf"

    def snapshot(repo_id, revision, cache_dir, **kw):
        # What huggingface_hub writes: models--<owner>--<name>/snapshots/<commit>/...
        dest = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision
        shutil.copytree(built, dest)
        return str(dest)

    data = load_config().model_dump(mode="json")
    model = next(m for m in data["models"] if m["name"] == "sdxl-turbo")
    model.update(weights=repo, revision=revision)
    cfg = parse_config(data)
    (item,) = [i for i in plan(cfg, cfg.provider("lambda-sim")) if i.model == "sdxl-turbo"]
    fetch([item], hf_home / "hub", snapshot_download=snapshot, hf_hub_download=None)
    script = textwrap.dedent(f"""
        import json
        from config import ModelConfig
        from serve_apps.provider.pipelines import load_pipeline
        model = ModelConfig.model_validate(json.loads({json.dumps(json.dumps(model))}))
        pipe = load_pipeline(model, device="cpu")
        print(type(pipe).__name__)
    """)
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("StableDiffusionXLPipeline")
