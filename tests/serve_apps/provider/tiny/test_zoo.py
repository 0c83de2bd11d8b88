"""The tiny model zoo: builds, reloads through from_pretrained, atomic and deterministic builds."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from config import load_config
from easel.cli import main as easel_main
from serve_apps.provider import tiny

RECIPES = list(tiny.RECIPES)


def _weights_digest(path: Path) -> str:
    """Hash of every file of a build except its marker (which holds timings)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != "easel_tiny.json"):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own, for tests that build from scratch."""
    monkeypatch.setenv("EASEL_CACHE", str(tmp_path))
    return tmp_path


def test_default_config_recipes_exist_with_matching_class() -> None:
    used = [m for m in load_config().models if m.tiny_recipe]
    assert {m.tiny_recipe for m in used} == set(RECIPES)
    for model in used:
        assert tiny.RECIPES[model.tiny_recipe].pipeline == model.pipeline


def test_cache_dir_follows_easel_cache(easel_cache: Path) -> None:
    assert tiny.cache_dir() == easel_cache
    assert tiny.model_path("sdxl-turbo") == easel_cache / "tiny" / "sdxl-turbo"


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_and_reloads_through_from_pretrained(recipe: str) -> None:
    import diffusers
    import torch

    spec = tiny.RECIPES[recipe]
    path = tiny.ensure(recipe)
    assert json.loads((path / "model_index.json").read_text())["_class_name"] == spec.pipeline
    item = tiny.info(recipe)
    assert item.built and item.seed == tiny.DEFAULT_SEED
    assert 0 < item.size_bytes < 40e6, "a tiny model must stay tiny"

    pipe = getattr(diffusers, spec.pipeline).from_pretrained(path)
    assert type(pipe).__name__ == spec.pipeline
    assert pipe.vae_scale_factor == 8, "tiny VAEs keep the real 8x spatial factor"
    params = sum(
        p.numel()
        for c in pipe.components.values()
        if isinstance(c, torch.nn.Module)
        for p in c.parameters()
    )
    assert params == item.parameters


def test_ensure_does_not_rebuild_a_current_build() -> None:
    path = tiny.ensure("flux2-klein")
    marker = path / "easel_tiny.json"
    before = marker.stat().st_mtime_ns
    assert tiny.ensure("flux2-klein") == path
    assert tiny.ensure("flux2-klein", seed=tiny.DEFAULT_SEED) == path
    assert marker.stat().st_mtime_ns == before


def test_same_seed_same_weights_other_seed_other_weights(private_cache: Path) -> None:
    first = _weights_digest(tiny.build("flux2-klein", seed=7))
    again = _weights_digest(tiny.build("flux2-klein", seed=7))
    other = _weights_digest(tiny.build("flux2-klein", seed=8))
    assert first == again
    assert first != other


def test_ensure_with_another_seed_rebuilds(private_cache: Path) -> None:
    tiny.ensure("flux2-klein")
    assert tiny.info("flux2-klein").seed == tiny.DEFAULT_SEED
    tiny.ensure("flux2-klein")  # no seed asked: any build will do
    assert tiny.info("flux2-klein").seed == tiny.DEFAULT_SEED
    tiny.ensure("flux2-klein", seed=3)
    assert tiny.info("flux2-klein").seed == 3
    assert not list((private_cache / "tiny").glob(".flux2-klein.*-*")), "no temp/old folders left"


def test_failed_build_leaves_no_half_built_model(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny.RECIPES["flux2-klein"]

    class _DiesWhileSaving:
        def save_pretrained(self, path: Path, **_: object) -> None:
            (Path(path) / "model_index.json").write_text("{}")
            raise OSError("disk full")

    monkeypatch.setitem(
        tiny.RECIPES, "flux2-klein", replace(spec, make=lambda seed: _DiesWhileSaving())
    )
    with pytest.raises(OSError, match="disk full"):
        tiny.ensure("flux2-klein")
    assert not tiny.model_path("flux2-klein").exists()
    assert not tiny.info("flux2-klein").built
    assert not list((private_cache / "tiny").glob(".flux2-klein.build-*"))

    monkeypatch.setitem(tiny.RECIPES, "flux2-klein", spec)
    assert (tiny.ensure("flux2-klein") / "easel_tiny.json").is_file()


def test_a_killed_builder_leaves_nothing_behind_after_the_next_build(private_cache: Path) -> None:
    # What a builder killed mid-build (SIGKILL: no cleanup) leaves: a temp folder.
    leftover = private_cache / "tiny" / ".flux2-klein.build-dead"
    (leftover / "vae").mkdir(parents=True)
    assert not tiny.info("flux2-klein").built
    tiny.ensure("flux2-klein")
    assert not leftover.exists()


def test_failed_rebuild_keeps_the_previous_build(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny.ensure("flux2-klein")
    digest = _weights_digest(path)
    spec = tiny.RECIPES["flux2-klein"]

    def _boom(seed: int) -> None:
        raise RuntimeError("recipe broke")

    monkeypatch.setitem(tiny.RECIPES, "flux2-klein", replace(spec, make=_boom))
    with pytest.raises(RuntimeError, match="recipe broke"):
        tiny.build("flux2-klein", seed=5, force=True)
    assert _weights_digest(path) == digest
    assert tiny.info("flux2-klein").seed == tiny.DEFAULT_SEED


def test_concurrent_ensure_builds_once(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny.RECIPES["flux2-klein"]
    calls: list[int] = []

    def _counting(seed: int) -> object:
        calls.append(seed)
        return spec.make(seed)

    monkeypatch.setitem(tiny.RECIPES, "flux2-klein", replace(spec, make=_counting))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(tiny.ensure("flux2-klein")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3 and len(set(results)) == 1
    assert calls == [tiny.DEFAULT_SEED]


def test_unknown_recipe_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown tiny recipe 'sd15'.*flux2-dev"):
        tiny.ensure("sd15")


def test_cli_build_and_list(private_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert easel_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert out.count("(not built)") == len(RECIPES)

    assert easel_main(["models", "build", "--only", "flux2-klein", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "flux2-klein" in out and "built in" in out and "MB" in out

    assert easel_main(["models", "build", "--only", "flux2-klein", "--seed", "2"]) == 0
    assert "up to date" in capsys.readouterr().out

    assert easel_main(["models", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == set(RECIPES)
    assert "flux2-schnell" in lines["flux2-klein"]  # the config model that uses the recipe
    assert (
        "Flux2KleinPipeline" in lines["flux2-klein"] and "(not built)" not in lines["flux2-klein"]
    )
    assert "(not built)" in lines["sdxl-turbo"]


def test_clip_tokenizer_matches_open_clip_reference() -> None:
    """The offline CLIP tokenizer tokenizes as OpenAI's CLIP does (open_clip's implementation)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    ours = CLIPTokenizer.from_pretrained(tiny.ensure("sdxl-turbo") / "tokenizer")
    reference = SimpleTokenizer()
    assert ours.model_max_length == 77
    for prompt in [
        "a photo of a Cat, 42 dogs!",
        "professional corporate headshot of a woman in a navy blazer, neutral grey backdrop",
        "pop-art portrait of a dancer, bold flat colours, halftone dots",
    ]:
        want = [reference.sot_token_id, *reference.encode(prompt), reference.eot_token_id]
        assert ours(prompt)["input_ids"] == want
