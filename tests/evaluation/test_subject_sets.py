"""Photo sets of conditioned niches: built locally and labelled, or the user's folder, hashed."""

from __future__ import annotations

import shutil
from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image

from config import ConditioningConfig, ConfigError, NicheConfig, load_config, parse_config
from evaluation.identity import detection_view
from evaluation.subject_sets import (
    build_derived_subjects,
    build_drawn_garments,
    conditioning_sets,
    folder_sha256,
    garment_set,
    subject_set,
)

pytest.importorskip("skimage")


def _niche(**conditioning: object) -> NicheConfig:
    return NicheConfig(
        name="corporate-headshots",
        display_name="Headshots",
        prompts=["a headshot"],
        conditioning=ConditioningConfig(**conditioning),  # type: ignore[arg-type]
    )


def test_the_derived_subject_set_holds_faces_dlib_finds(easel_cache: Path) -> None:
    s = subject_set(_niche(kind="identity", local_set_size=6))
    assert s.origin == "derived" and s.synthetic and len(s.files) == 6
    assert "scikit-image" in s.label and "not customer photos" in s.label
    assert Path(s.folder).is_relative_to(easel_cache)
    detector = dlib.get_frontal_face_detector()
    for f in s.files:
        arr, upsample = detection_view(Image.open(f), 160)
        assert len(detector(arr, upsample)) >= 1, f
    # the astronaut first, the LFW faces after: different pictures
    a, b = (np.asarray(Image.open(f)) for f in s.files[:2])
    assert a.shape == b.shape == (128, 128, 3) and not np.array_equal(a, b)
    assert s.sha256 == folder_sha256(s.files) and s.to_dict()["n"] == 6


def test_local_sets_are_deterministic(tmp_path: Path) -> None:
    build_derived_subjects(tmp_path / "a", 4)
    build_derived_subjects(tmp_path / "b", 4)
    build_drawn_garments(tmp_path / "ga", 5, seed_text="try-on")
    build_drawn_garments(tmp_path / "gb", 5, seed_text="try-on")
    for x, y in (("a", "b"), ("ga", "gb")):
        fx = sorted((tmp_path / x).glob("*.png"))
        fy = sorted((tmp_path / y).glob("*.png"))
        assert [f.read_bytes() for f in fx] == [f.read_bytes() for f in fy] and fx
    build_drawn_garments(tmp_path / "gc", 5, seed_text="other-niche")
    assert (tmp_path / "gc" / "garment-001.png").read_bytes() != (
        tmp_path / "ga" / "garment-001.png"
    ).read_bytes()


def test_try_on_has_drawn_garments_labelled_synthetic() -> None:
    niche = _niche(kind="try-on", local_set_size=4)
    sets = conditioning_sets(niche)
    assert [s.role for s in sets] == ["subjects", "garments"]
    g = sets[1]
    assert g.origin == "drawn" and g.synthetic and g.label.startswith("synthetic")
    assert Image.open(g.files[0]).size == (128, 128)
    assert garment_set(_niche(kind="identity")) is None


def test_a_folder_of_real_photos_records_its_consent_and_hash(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    build_derived_subjects(src, 3)
    note = "staff volunteers, written consent 2026-11, internal benchmark use only"
    s = subject_set(_niche(kind="identity", subjects_dir=str(src), consent=note))
    assert s.origin == "folder" and not s.synthetic and note in s.label
    assert s.to_dict()["consent"] == note and len(s.files) == 3
    before = s.sha256
    shutil.copy(s.files[0], src / "zz-extra.jpg")
    assert subject_set(_niche(kind="identity", subjects_dir=str(src), consent=note)).sha256 != (
        before
    )
    with pytest.raises(FileNotFoundError, match=r"conditioning\.subjects_dir: no such folder"):
        subject_set(_niche(kind="identity", subjects_dir=str(tmp_path / "nope"), consent=note))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        subject_set(_niche(kind="identity", subjects_dir=str(tmp_path / "empty"), consent=note))


def test_config_requires_consent_with_a_folder_and_try_on_keys_for_try_on() -> None:
    base = load_config().model_dump(mode="json")

    def with_conditioning(cond: dict | None, floor: dict | None = None) -> dict:
        data = dict(base)
        first = {**base["niches"][0], "conditioning": cond}
        if floor is not None:
            first["quality_floor"] = floor
        data["niches"] = [first, *base["niches"][1:]]
        return data

    with pytest.raises(ConfigError, match="consent") as err:
        parse_config(with_conditioning({"kind": "identity", "subjects_dir": "/photos"}), "x.yaml")
    assert "niches[corporate-headshots].conditioning" in str(err.value)
    with pytest.raises(ConfigError, match="for kind 'try-on' only"):
        parse_config(with_conditioning({"kind": "identity", "garments_dir": "/g"}), "x.yaml")
    # identity and garment floors are named metrics of quality_floor, bounded like the others
    with pytest.raises(ConfigError, match="try-on niches only"):
        parse_config(with_conditioning({"kind": "identity"}, {"garment": 0.5}), "x.yaml")
    with pytest.raises(ConfigError, match=r"quality_floor\.identity"):
        parse_config(with_conditioning({"kind": "identity"}, {"identity": 1.5}), "x.yaml")
    with pytest.raises(ConfigError, match="needs reference faces"):
        parse_config(with_conditioning(None, {"identity": 0.9}), "x.yaml")
    with pytest.raises(ConfigError, match="identity_floor"):  # the old key is gone, loudly
        parse_config(with_conditioning({"kind": "identity", "identity_floor": 0.9}), "x.yaml")
    ok = parse_config(
        with_conditioning(
            {"kind": "try-on", "garments_dir": "/g", "consent": "CC-BY 4.0"},
            {"identity": 0.93, "garment": 0.2},
        )
    )
    assert ok.niches[0].quality_floor == {"identity": 0.93, "garment": 0.2}
