"""Reference sets: the synthetic stand-in is deterministic; the stats cache key tracks changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from config import NicheConfig, load_config
from evaluation.features import resolve_feature_spec
from evaluation.fid import FeatureStats
from evaluation.references import (
    generate_synthetic,
    load_cached_stats,
    reference_key,
    reference_set,
    save_cached_stats,
)


def test_synthetic_set_is_deterministic_and_labelled(tmp_path: Path) -> None:
    generate_synthetic("corporate-headshots", tmp_path / "a", 5)
    generate_synthetic("corporate-headshots", tmp_path / "b", 5)
    generate_synthetic("ecommerce-products", tmp_path / "c", 5)
    a = sorted((tmp_path / "a").glob("*.png"))
    assert len(a) == 5
    for p in a:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
    assert a[0].read_bytes() != (tmp_path / "c" / a[0].name).read_bytes()

    cfg = load_config()
    refset = reference_set(cfg.niche("corporate-headshots"), cfg.evaluation)
    assert refset.synthetic and "synthetic" in refset.label
    assert len(refset.files) == cfg.evaluation.reference_images_per_niche


def _folder(tmp_path: Path, n: int) -> NicheConfig:
    folder = tmp_path / "refs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return NicheConfig(name="n", display_name="N", prompts=["p"], reference_dir=str(folder))


def test_key_changes_with_images_network_and_resize_policy(tmp_path: Path) -> None:
    ev = load_config().evaluation
    niche = _folder(tmp_path, 3)
    refset = reference_set(niche, ev)
    assert not refset.synthetic and len(refset.files) == 3
    spec = resolve_feature_spec(ev)
    key = reference_key(refset, spec)
    assert reference_key(refset, spec) == key
    resized = resolve_feature_spec(ev.model_copy(update={"image_size": 32}))
    assert reference_key(refset, resized) != key
    assert reference_key(refset, dataclasses.replace(spec, key="other-net")) != key
    Image.new("RGB", (16, 16)).save(refset.files[0])
    assert reference_key(refset, spec) != key


def test_cached_stats_round_trip(easel_cache: Path) -> None:
    s = FeatureStats(3)
    s.update(["a", "b"], np.array([[1.0, 2, 3], [4, 5, 6]]))
    assert load_cached_stats("niche-x", "k1") is None
    save_cached_stats("niche-x", "k1", s)
    back = load_cached_stats("niche-x", "k1")
    assert back is not None and back.n == 2 and back.ids == ["a", "b"]
    np.testing.assert_array_equal(back.cov_sum, s.cov_sum)


def test_bad_reference_folders_are_clear_errors(tmp_path: Path) -> None:
    ev = load_config().evaluation
    gone = str(tmp_path / "x")
    missing = NicheConfig(name="m", display_name="M", prompts=["p"], reference_dir=gone)
    with pytest.raises(FileNotFoundError, match="reference_dir"):
        reference_set(missing, ev)
    with pytest.raises(ValueError, match="at least 2"):
        reference_set(_folder(tmp_path, 1), ev)
