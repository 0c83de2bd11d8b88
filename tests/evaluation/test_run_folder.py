"""A job's reference photos as the manifest carries them: paths or bytes, roles, the old column."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.run_folder import job_references, load_run_images
from tests.evaluation._fixtures import make_run


def _row(**cols: object) -> dict[str, object]:
    return {"reference_image": None, "reference_images": None, "reference_roles": None, **cols}


def test_paths_relative_to_the_run_absolute_paths_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "me.png").write_bytes(b"me")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"abs")
    row = _row(reference_images=np.array(["refs/me.png", str(outside), b"raw"], dtype=object))
    refs = job_references(row, tmp_path, "identity")
    assert refs.faces == (b"me", b"abs", b"raw") and not refs.errors
    assert refs.first == b"me"


def test_roles_follow_the_niche_unless_the_row_names_them(tmp_path: Path) -> None:
    two = [b"person", b"shirt"]
    tryon = job_references(_row(reference_images=two), tmp_path, "try-on")
    assert tryon.faces == (b"person",) and tryon.garments == (b"shirt",)
    plain = job_references(_row(reference_images=two), tmp_path, None)
    assert plain.other == (b"person", b"shirt") and not plain.faces  # CLIP only
    named = job_references(
        _row(reference_images=two, reference_roles=["garment", "person"]), tmp_path, None
    )
    assert named.faces == (b"shirt",) and named.garments == (b"person",)


def test_bad_references_are_recorded_never_raised(tmp_path: Path) -> None:
    row = _row(
        reference_images=["missing.png", b"ok", 7],
        reference_roles=["face", "hat", "face"],
    )
    refs = job_references(row, tmp_path, "identity")
    assert refs.faces == () and len(refs.errors) == 3
    assert "cannot read 'missing.png'" in refs.errors[0]
    assert "role 'hat'" in refs.errors[1] and "neither image bytes nor a path" in refs.errors[2]
    mismatch = job_references(
        _row(reference_images=[b"a", b"b"], reference_roles=["face"]), tmp_path, "try-on"
    )
    assert mismatch.faces == (b"a",) and mismatch.garments == (b"b",)
    assert "roles taken from the niche" in mismatch.errors[0]
    assert job_references(_row(), tmp_path, "identity") == job_references(_row(), tmp_path, None)


def test_the_one_image_column_is_base64(tmp_path: Path) -> None:
    row = _row(reference_image=base64.b64encode(b"face").decode())
    assert job_references(row, tmp_path, "identity").faces == (b"face",)
    assert job_references(_row(reference_image="%%%"), tmp_path, "identity").errors == (
        "reference_image is not base64",
    )
    # the list wins over the old column when both are there
    both = _row(reference_image=base64.b64encode(b"old").decode(), reference_images=[b"new"])
    assert job_references(both, tmp_path, "identity").faces == (b"new",)


def test_run_rows_carry_the_reference_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", per_cell=1)
    rows = load_run_images(run).rows
    assert {"reference_image", "reference_images", "reference_roles"} <= set(rows.columns)
    assert rows["reference_images"].isna().all()  # the fixture's manifest has no such column
    manifest = pd.read_parquet(run / "manifest.parquet")
    manifest["reference_images"] = [[b"x"]] * len(manifest)
    manifest.to_parquet(run / "manifest.parquet", index=False)
    row = next(load_run_images(run).rows.itertuples(index=False))
    assert job_references(row, run, "identity").faces == (b"x",)
