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
