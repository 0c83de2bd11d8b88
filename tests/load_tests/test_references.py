"""Reference photos in manifests: paths or bytes, rejected rows, photo sets for conditioned jobs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from load_tests.client import build_payload
from load_tests.generators import generate_manifest
from load_tests.manifest import read_manifest, write_manifest
from load_tests.references import attach_references, read_reference_items

PNG = b"\x89PNG\r\n\x1a\n a small photo"


def _rows(cfg, n=4, **cols):
    rows = generate_manifest(cfg, jobs=n, rate=10, seed=1).to_pylist()
    for r in rows:
        r.update(model="flux2-dev", niche="corporate-headshots", **cols)
    return rows


def test_paths_are_read_relative_to_the_manifest_and_bytes_kept(cfg, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(PNG)
    rows = _rows(cfg, 2)
    rows[0]["reference_images"] = ["photos/a.png", str(tmp_path / "photos" / "a.png")]
    rows[1]["reference_images"] = ["photos/missing.png"]
    for r in rows:
        r["reference_roles"] = None
    table = pa.Table.from_pylist(rows)  # reference_images: list<string>, paths
    path = tmp_path / "m.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    good, rejected = read_manifest(path, cfg)
    assert good.column("reference_images").to_pylist() == [[PNG, PNG]]
    assert len(rejected) == 1 and "unreadable path" in rejected[0]["error"]
    assert read_reference_items("photos/a.png", tmp_path) == [PNG]
    assert read_reference_items(None, tmp_path) is None


def test_rows_the_model_would_refuse_are_rejected_with_the_reason(cfg, tmp_path):
    rows = _rows(cfg, 4, reference_images=[PNG], reference_roles=None)
    rows[0]["model"] = "sdxl-turbo"  # takes no image
    rows[1]["reference_images"] = [PNG] * 5  # flux2-dev takes 4
    rows[2]["reference_roles"] = ["face", "garment"]  # 2 roles for 1 image
    path = write_manifest(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    good, rejected = read_manifest(path, cfg)
    assert good.num_rows == 1
    errors = [r["error"] for r in sorted(rejected, key=lambda r: r["row"])]
    assert "takes no reference images (models that do: ['flux2-dev'" in errors[0]
    assert "5 reference images, flux2-dev takes at most 4" in errors[1]
    assert "reference_roles has 2 entries for 1 references" in errors[2]
    payload = build_payload(good.to_pylist()[0], "easel")
    assert len(payload["reference_images"]) == 1 and "reference_image" not in payload


def test_attach_references_gives_conditioned_jobs_photos_and_a_model_that_takes_them(cfg):
    table = generate_manifest(cfg, jobs=60, rate=10, seed=2)
    pools = {
        "corporate-headshots": [([b"face-1"], ["face"]), ([b"face-2"], ["face"])],
        "try-on": [([b"person", b"garment"], ["person", "garment"])],
    }
    out = attach_references(table, cfg, pools, np.random.default_rng(0)).to_pylist()
    for before, r in zip(table.to_pylist(), out, strict=True):
        if r["niche"] in pools:
            assert r["reference_images"] in [list(p[0]) for p in pools[r["niche"]]]
            assert cfg.model(r["model"]).references is not None
            m = cfg.model(r["model"])
            assert (r["width"], r["steps"]) == (m.resolution.default, m.steps.default) or (
                r["model"] == before["model"]
            )
        else:
            assert r == before
    assert {r["niche"] for r in out if r["reference_images"]} == set(pools)


def test_a_log_naming_its_photos_replays_with_them(cfg, tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "a.png").write_bytes(PNG)
    log = pa.table(
        {
            "timestamp": [0.0, 1.0],
            "model": ["flux2-dev", "flux2-schnell"],
            "niche": ["corporate-headshots", "try-on"],
            "prompt": ["a headshot", "a try-on"],
            "reference_images": [["a.png"], ["a.png", "a.png"]],
            "reference_roles": [["face"], ["person", "garment"]],
        }
    )
    pq.write_table(log, tmp_path / "log.parquet")
    table = generate_manifest(cfg, pattern="replay", replay_path=str(tmp_path / "log.parquet"))
    path = write_manifest(table, tmp_path / "m.parquet")
    good, rejected = read_manifest(path, cfg)
    assert rejected == []
    assert good.column("reference_images").to_pylist() == [[PNG], [PNG, PNG]]
    assert good.column("reference_roles").to_pylist() == [["face"], ["person", "garment"]]
