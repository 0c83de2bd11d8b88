"""The report's identity/try-on table, its embedder note and the reference-set hashes, from a run
folder whose scores.parquet and score_meta.json follow evaluation's contract (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import load_config
from easel.report import write_report
from tests.easel._synthetic_run import make_run

EMBEDDER = "dlib ResNet face embedding, 128-d, pretrained (test label)"
SHA = {"fid": "a" * 64, "subjects": "b" * 64, "garments": "c" * 64, "used": "d" * 64}


def _identity(jobs: int, n: int, faces: int, cos: float | None) -> dict:
    return {
        "identity_jobs": jobs,
        "identity_n": n,
        "identity_faces": faces,
        "identity_face_rate": faces / n if n else None,
        "identity_face_rate_lo": 0.4 if n else None,
        "identity_face_rate_hi": 1.0 if n else None,
        "identity_cos": cos,
        "identity_cos_lo": None if cos is None else cos - 0.02,
        "identity_cos_hi": None if cos is None else cos + 0.01,
        "face_embedder": EMBEDDER if jobs else None,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config()
    run = make_run(tmp_path_factory.mktemp("run"), cfg, jobs_per_pair=4)
    rows = pq.read_table(run / "scores.parquet").to_pylist()
    for r in rows:
        conditioned = r["niche"] in ("corporate-headshots", "try-on", "all")
        if r["model"] == "flux2-dev" and conditioned:
            r.update(_identity(5, 4, 4, 0.97))
        elif r["model"] == "sdxl-turbo" and conditioned:
            r.update(_identity(5, 4, 0, None))
        else:
            r.update(_identity(0, 0, 0, None))
        tryon = r["niche"] == "try-on" and r["model"] in ("flux2-dev", "sdxl-turbo")
        r.update(
            garment_n=2 if tryon else 0,
            garment_cos=0.81 if tryon else None,
            garment_cos_lo=0.78 if tryon else None,
            garment_cos_hi=0.84 if tryon else None,
        )
    pq.write_table(pa.Table.from_pylist(rows), run / "scores.parquet")
    meta = {
        "clip": {"label": "tiny", "comparable": False},
        "references": {
            "corporate-headshots": {"label": "synthetic", "synthetic": True, "n": 64,
                                    "sha256": SHA["fid"]},
        },
        "face_embedder": {"kind": "dlib", "label": EMBEDDER, "key": "dlib-resnet-v1:x"},
        "conditioning_sets": [
            {"niche": "corporate-headshots", "role": "subjects", "origin": "derived",
             "synthetic": True, "label": "derived locally from scikit-image", "n": 16,
             "sha256": SHA["subjects"], "folder": "/c", "consent": None},
            {"niche": "try-on", "role": "garments", "origin": "folder", "synthetic": False,
             "label": "folder /g (12 photos; consent/licence: CC-BY 4.0)", "n": 12,
             "sha256": SHA["garments"], "folder": "/g", "consent": "CC-BY 4.0"},
        ],
        "references_used": {"corporate-headshots": {"faces": {"n_distinct": 3,
                                                               "sha256": SHA["used"]}}},
    }  # fmt: skip
    (run / "score_meta.json").write_text(json.dumps(meta))
    write_report(run, cfg, repro={"config_name": "easel-default", "config_hash": "h"})
    return run


def test_identity_table_has_every_figure_with_its_n(run: Path) -> None:
    md = (run / "report.md").read_text()
    section = md[md.index("### Identity preservation and try-on") :]
    section = section[: section.index("\n### ")]
    dev = next(
        line for line in section.splitlines() if "| Corporate headshots | Flux.2 [dev]" in line
    )
    assert "| 4 | 100 % [40 %, 100 %] | 0.970 [0.950, 0.980] | 0 | n/a |" in dev
    turbo = next(
        line for line in section.splitlines() if "| Corporate headshots | SDXL Turbo" in line
    )
    assert "| 4 | 0 % [40 %, 100 %] | n/a |" in turbo
    tryon = next(
        line for line in section.splitlines() if line.startswith("| Virtual try-on | Flux.2 [dev]")
    )
    assert tryon.endswith("| 2 | 0.810 [0.780, 0.840] |")
    assert f"Face embedder: {EMBEDDER}." in section
    assert "an output without a face is a failure, never dropped" in section
    assert "count in the goodput table's quality-aware goodput" in section  # one floor rule
    assert "tiny random-weight one" in section  # garment cosines from the tiny CLIP are flagged
    assert f"sha256 {SHA['subjects'][:16]}" in section and "3 distinct face photos" in section
    # models and niches without conditioned jobs have no row
    assert "E-commerce" not in section and "Proprietary B" not in section


def test_summary_and_reproducibility_record_the_sets_and_their_hashes(run: Path) -> None:
    s = json.loads((run / "summary.json").read_text())
    c = s["conditioning"]
    assert c["face_embedder"] == EMBEDDER
    rows = {(r["model"], r["niche"]) for r in c["rows"]}
    assert ("flux2-dev", "corporate-headshots") in rows and ("flux2-dev", None) in rows
    sets = {(x["niche"], x["role"]): x for x in s["repro"]["reference_sets"]}
    assert sets[("corporate-headshots", "fid-references")]["sha256"] == SHA["fid"]
    assert sets[("try-on", "garments")]["consent"] == "CC-BY 4.0"
    md = (run / "report.md").read_text()
    repro = md[md.index("## Reproducibility") :]
    assert f"sha256 {SHA['subjects']}" in repro and "consent/licence: CC-BY 4.0" in repro
    assert SHA["garments"] in (run / "report.html").read_text()
    top = md[: md.index("## Results")]
    assert "corporate-headshots subjects (derived)" in top  # disclosed up front
    assert "try-on garments" not in top  # the user's own folder is not a local stand-in


def test_a_run_without_conditioned_jobs_says_so(tmp_path: Path) -> None:
    cfg = load_config()
    run = make_run(tmp_path / "run", cfg, jobs_per_pair=2)
    write_report(run, cfg)
    md = (run / "report.md").read_text()
    assert "No job in this run carried reference photos" in md
    s = json.loads((run / "summary.json").read_text())
    assert s["conditioning"]["rows"] == [] and "reference_sets" not in s["repro"]
