"""Manifest schema, writer and validating reader."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from load_tests.generators import generate_manifest
from load_tests.manifest import (
    MANIFEST_SCHEMA,
    ManifestError,
    read_manifest,
    scan_manifest,
    validate_batch,
    write_manifest,
)


def _rows(cfg, n=3):
    return generate_manifest(cfg, jobs=n, rate=10, seed=1).to_pylist()


def test_generated_manifest_round_trips(cfg, tmp_path):
    table = generate_manifest(cfg, jobs=50, rate=10, seed=3)
    path = write_manifest(table, tmp_path / "m.parquet")
    assert pq.read_schema(path).equals(MANIFEST_SCHEMA)
    good, rejected = read_manifest(path, cfg)
    assert rejected == []
    assert good.num_rows == 50
    assert good.column("row").to_pylist() == list(range(50))
    assert good.drop_columns(["row"]).equals(table)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("job_id,arrival_s\nx,1\n"), "not a Parquet file"),
        (
            lambda p: pq.write_table(pa.table({"job_id": ["a"], "arrival_s": [0.0]}), p),
            "missing column(s) ['model', 'niche', 'prompt']",
        ),
        (
            lambda p: pq.write_table(
                pa.table(
                    {
                        "job_id": ["a"],
                        "arrival_s": ["soon"],
                        "model": ["m"],
                        "niche": ["n"],
                        "prompt": ["p"],
                    }
                ),
                p,
            ),
            "column 'arrival_s' has type string",
        ),
    ],
)
def test_a_file_that_is_not_a_manifest_fails_clearly(cfg, tmp_path, make, message):
    path = tmp_path / "bad.parquet"
    make(path)
    with pytest.raises(ManifestError) as exc:
        read_manifest(path, cfg)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_missing_file(cfg, tmp_path):
    with pytest.raises(ManifestError, match="no such manifest file"):
        read_manifest(tmp_path / "nope.parquet", cfg)


def test_each_bad_row_is_rejected_with_its_row_and_reason(cfg, tmp_path):
    rows = _rows(cfg, 12)
    model = cfg.model(rows[5]["model"])
    rows[1]["prompt"] = None
    rows[2]["model"] = "dall-e-9"
    rows[3]["niche"] = "weddings"
    rows[4]["arrival_s"] = -1.0
    rows[5]["width"] = model.resolution.max + model.resolution.multiple
    rows[6]["arrival_s"] = math.nan
    rows[7]["arrival_s"] = math.inf
    rows[8]["job_id"] = rows[0]["job_id"]  # duplicate of row 0: row 0 stays good
    rows[9]["steps"] = cfg.model(rows[9]["model"]).steps.max + 1
    rows[10]["job_id"] = "../etc/passwd"
    path = write_manifest(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp_path / "m.pq")
    good, rejected = read_manifest(path, cfg)
    by_row = {r["row"]: r["error"] for r in rejected}
    assert sorted(by_row) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert good.column("row").to_pylist() == [0, 11]
    assert "missing prompt" in by_row[1]
    assert "unknown model 'dall-e-9'" in by_row[2] and "flux2-dev" in by_row[2]
    assert "unknown niche 'weddings'" in by_row[3]
    assert "arrival_s -1.0 is negative" in by_row[4]
    assert f"width {rows[5]['width']} out of range" in by_row[5]
    assert "must be finite" in by_row[6] and "must be finite" in by_row[7]
    assert f"duplicate job_id {rows[0]['job_id']!r}" in by_row[8]
    assert "steps" in by_row[9] and "out of range" in by_row[9]
    assert "job_id" in by_row[10]


def test_a_row_with_several_faults_reports_them_all(cfg):
    rows = _rows(cfg, 1)
    rows[0].update(prompt="", model="nope", arrival_s=-3.0)
    good, rejected = validate_batch(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), cfg, 7)
    assert good.num_rows == 0
    [rej] = rejected
    assert rej["row"] == 7
    for part in ("missing prompt", "unknown model 'nope'", "negative"):
        assert part in rej["error"]


def test_optional_columns_may_be_absent_and_types_are_widened(cfg, tmp_path):
    path = tmp_path / "min.parquet"
    pq.write_table(
        pa.table(
            {
                "job_id": pa.array([1, 2], pa.int32()),  # integer ids are accepted as text
                "arrival_s": pa.array([0, 1], pa.int32()),
                "model": ["sdxl-turbo", "sdxl-turbo"],
                "niche": ["corporate-headshots", "corporate-headshots"],
                "prompt": ["a", "b"],
                "width": pa.array([64, 64], pa.int16()),
            }
        ),
        path,
    )
    good, rejected = read_manifest(path, cfg)
    assert rejected == []
    assert good.column("job_id").to_pylist() == ["1", "2"]
    assert good.column("arrival_s").to_pylist() == [0.0, 1.0]
    assert good.column("steps").null_count == 2


def test_scan_finds_duplicates_order_and_models(cfg, tmp_path):
    rows = _rows(cfg, 6)
    rows[4]["job_id"] = rows[1]["job_id"]
    rows[5]["job_id"] = rows[1]["job_id"]
    rows[2]["arrival_s"], rows[3]["arrival_s"] = rows[3]["arrival_s"], rows[2]["arrival_s"]
    path = write_manifest(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp_path / "m.pq")
    scan = scan_manifest(path)
    assert scan.rows == 6
    assert scan.duplicate_rows == {4, 5}
    assert not scan.sorted_by_arrival
    assert set(scan.models) == {r["model"] for r in rows}


# --- the vectorised checks against a row-by-row reference ---------------------------------------


def _reference_reasons(r, cfg, duplicate):
    """Every reason one row cannot be sent, checked one row at a time in plain Python (the
    validator before it was vectorised): an independent implementation to compare with."""
    import re

    codes = []
    job_id = r["job_id"]
    if job_id is None or job_id == "":
        codes.append("missing_job_id")
    elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", job_id):
        codes.append("bad_job_id")
    elif duplicate:
        codes.append("duplicate_job_id")
    a = r["arrival_s"]
    if a is None:
        codes.append("missing_arrival")
    elif not math.isfinite(a):
        codes.append("nonfinite_arrival")
    elif a < 0:
        codes.append("negative_arrival")
    if r["prompt"] is None or not r["prompt"].strip():
        codes.append("missing_prompt")
    models = {m.name: m for m in cfg.models}
    model = models.get(r["model"])
    if r["model"] is None:
        codes.append("missing_model")
    elif model is None:
        codes.append("unknown_model")
    if r["niche"] is None:
        codes.append("missing_niche")
    elif r["niche"] not in {n.name for n in cfg.niches}:
        codes.append("unknown_niche")
    if model is not None:
        res = model.resolution
        for key in ("width", "height"):
            v = r[key]
            if v is not None and (v < res.min or v > res.max or v % res.multiple):
                codes.append(f"{key}_out_of_range")
        s = r["steps"]
        if s is not None and not model.steps.min <= s <= model.steps.max:
            codes.append("steps_out_of_range")
    if r["seed"] is not None and r["seed"] < 0:
        codes.append("negative_seed")
    one, many = r["reference_image"], r.get("reference_images") or []
    refs = [one] if one is not None else many
    limits = model.references if model is not None else None
    cap = limits.max_bytes if limits is not None else cfg.serve.max_body_bytes
    if (one is not None or many) and any(
        not x or len(x) > cap for x in (one, *many) if x is not None
    ):
        codes.append("bad_reference_image")
    if one is not None and many:
        codes.append("both_reference_fields")
    if model is not None and refs and limits is None:
        codes.append("references_not_taken")
    if limits is not None and len(refs) > limits.max_count:
        codes.append("too_many_references")
    roles = r.get("reference_roles") or []
    if roles and len(roles) != len(refs):
        codes.append("reference_roles_mismatch")
    return codes


def test_vectorised_checks_match_a_row_by_row_reference_on_random_bad_rows(cfg):
    import numpy as np

    rng = np.random.default_rng(11)
    rows = _rows(cfg, 400)
    spoil = {
        "job_id": [None, "", "../x", "a b", rows[0]["job_id"]],
        "arrival_s": [None, math.nan, -math.inf, -0.5],
        "prompt": [None, "", "   "],
        "model": [None, "dall-e-9", "SDXL-Turbo"],
        "niche": [None, "weddings", "corporate_headshots"],
        "width": [1, 10_000, 65, None],
        "height": [3, 99_999],
        "steps": [0, 10_000, -1],
        "seed": [-1, -(2**40)],
        "reference_image": [b"", b"\x89PNG"],
        "reference_images": [[b"\x89PNG"], [b"\x89PNG", b""], [b"a"] * 9, []],
        "reference_roles": [["face"], ["person", "garment"]],
    }
    for r in rows[1:]:
        for key, values in spoil.items():
            if rng.random() < 0.08:
                r[key] = values[rng.integers(len(values))]
    rows[5]["reference_image"] = b"x" * (cfg.serve.max_body_bytes + 1)  # one, it is large
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    ids = [r["job_id"] for r in rows]
    dup_rows = {i for i, j in enumerate(ids) if j and j in ids[:i]}
    good, rejected = validate_batch(table, cfg, 0, dup_rows)
    got = {r["row"]: r["reject_codes"] for r in rejected}
    want = {}
    for i, r in enumerate(rows):
        codes = _reference_reasons(r, cfg, i in dup_rows)
        if codes:
            want[i] = codes
    assert 50 < len(want) < 390  # the draw spoiled a fair share, not all
    assert got == want
    assert good.column("row").to_pylist() == [i for i in range(400) if i not in want]
    for rec in rejected:  # one message per reason
        assert len(rec["error"].split("; ")) == len(rec["reject_codes"])


def test_unknown_names_say_what_was_meant(cfg):
    rows = _rows(cfg, 1)
    rows[0].update(niche="corporate_headshots", model="SDXL-turbo")
    _, [rej] = validate_batch(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), cfg)
    assert rej["reject_codes"] == ["unknown_model", "unknown_niche"]
    assert "did you mean 'corporate-headshots'?" in rej["error"]
    assert "did you mean 'sdxl-turbo'?" in rej["error"]


def test_check_manifest_counts_rejections_by_reason(cfg, tmp_path):
    from load_tests.manifest import check_manifest

    rows = _rows(cfg, 10)
    rows[2]["niche"] = "weddings"
    rows[3]["niche"] = "weddings"
    rows[4]["model"] = "nope"
    path = write_manifest(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp_path / "m.pq")
    check = check_manifest(path, cfg)
    assert (check.rows, check.rejected) == (10, 3)
    assert check.by_code == {"unknown_model": 1, "unknown_niche": 2}
