"""`score_run` on image-conditioned jobs: headshots with a reference face and try-on with a person
and a garment, read from the manifest's `reference_images`, through the real actor pool."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from config import EaselConfig
from evaluation import quality_goodput, score_run
from evaluation.score_table import split_flags
from evaluation.subject_sets import conditioning_sets
from tests.evaluation._fixtures import eval_config, model_image, png_bytes

pytest.importorskip("skimage")

GOOD, BAD = "flux2-dev", "sdxl-turbo"  # mirrors the reference face / draws shapes, no face
HEAD, TRYON, PLAIN = "corporate-headshots", "try-on", "ecommerce-products"


def _config() -> EaselConfig:
    cfg = eval_config(actors=2)
    niches = []
    for n in cfg.niches:
        if n.conditioning is not None:
            floor = {"identity": 0.9, **({"garment": 0.0} if n.name == TRYON else {})}
            small = n.conditioning.model_copy(update={"local_set_size": 4})
            n = n.model_copy(update={"conditioning": small, "quality_floor": floor})
        niches.append(n)
    return cfg.model_copy(update={"niches": niches})


def _make_run(path: Path, cfg: EaselConfig) -> Path:
    (path / "images").mkdir(parents=True)
    (path / "refs").mkdir()
    sets = {
        (s.niche, s.role): s for n in cfg.niches if n.conditioning for s in conditioning_sets(n)
    }
    subjects = sets[(HEAD, "subjects")].files
    garments = sets[(TRYON, "garments")].files
    rng = np.random.default_rng(0)
    faceless = path / "refs" / "faceless.png"
    faceless.write_bytes(png_bytes(model_image(2, rng)))
    manifest, requests = [], []
    jobs: list[tuple[str, str, list[str]]] = []
    for model in (GOOD, BAD):
        for k in range(4):
            local = path / "refs" / Path(subjects[k]).name
            shutil.copyfile(subjects[k], local)
            jobs.append((model, HEAD, [f"refs/{local.name}"]))  # relative to the run folder
        jobs.append((model, HEAD, [str(faceless)]))  # a reference without a face
        for k in range(2):
            jobs.append((model, TRYON, [subjects[k], garments[k]]))  # absolute paths
        jobs.append((model, PLAIN, []))
    jobs.append((GOOD, HEAD, ["refs/gone.png"]))  # a reference file that is not there
    for i, (model, niche, refs) in enumerate(jobs):
        job = f"job-{i:03d}"
        prompt = cfg.niche(niche).prompts[i % 2]
        first = Path(refs[0]) if refs else None
        first = first if first is None or first.is_absolute() else path / first
        person = Image.open(first) if first is not None and first.is_file() else None
        if model == GOOD and person is not None:
            out = ImageOps.mirror(person.convert("RGB"))
        else:
            out = model_image(1, rng)
        (path / "images" / f"{job}.png").write_bytes(png_bytes(out))
        manifest.append(
            {"job_id": job, "model": model, "niche": niche, "prompt": prompt,
             "reference_images": refs or None}
        )  # fmt: skip
        requests.append({"job_id": job, "ok": True, "image_path": f"images/{job}.png"})
    pd.DataFrame(manifest).to_parquet(path / "manifest.parquet", index=False)
    pd.DataFrame(requests).to_parquet(path / "requests.parquet", index=False)
    (path / "config.yaml").write_text(cfg.to_yaml())
    return path


@pytest.fixture(scope="module")
def scored(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cfg = _config()
    run = _make_run(tmp_path_factory.mktemp("conditioned"), cfg)
    score_run(run, cfg, progress=False)
    yield run


def test_identity_per_model_and_niche_counts_missing_faces_as_failures(scored: Path) -> None:
    s = pd.read_parquet(scored / "scores.parquet").set_index(["model", "niche"])
    good, bad = s.loc[(GOOD, HEAD)], s.loc[(BAD, HEAD)]
    # 5 jobs each; one reference holds no face, so N = 4
    assert (good["identity_jobs"], good["identity_n"], good["identity_faces"]) == (5, 4, 4)
    assert good["identity_face_rate"] == 1.0 and good["identity_cos"] > 0.95
    assert good["identity_cos_lo"] <= good["identity_cos"] <= good["identity_cos_hi"]
    assert (bad["identity_n"], bad["identity_faces"], bad["identity_face_rate"]) == (4, 0, 0.0)
    assert pd.isna(bad["identity_cos"])
    assert bad["identity_face_rate_hi"] < 0.6  # Wilson's upper bound for 0 of 4
    assert "identity: no face found in 4 of 4 outputs (scored as failures)" in split_flags(
        bad["flags"]
    )
    assert any(
        "1 jobs' reference photos hold no detectable face" in f for f in split_flags(good["flags"])
    )
    assert "dlib ResNet face embedding" in good["face_embedder"]
    plain = s.loc[(GOOD, PLAIN)]
    assert plain["identity_jobs"] == 0 and plain["garment_n"] == 0
    # try-on: identity of the person and CLIP similarity to the garment
    tryon = s.loc[(GOOD, TRYON)]
    assert tryon["identity_n"] == 2 and tryon["identity_faces"] == 2 and tryon["garment_n"] == 2
    assert -1 <= tryon["garment_cos"] <= 1
    # a model's "all" row pools its conditioned niches
    assert s.loc[(GOOD, "all"), "identity_n"] == 6 and s.loc[(GOOD, "all"), "garment_n"] == 2


def test_identity_and_garment_floors_count_in_quality_aware_goodput(scored: Path) -> None:
    img = pd.read_parquet(scored / "image_scores.parquet")
    head = img[(img["niche"] == HEAD) & img["identity_refs"].notna()]
    assert len(head) == 10 and head["identity_refs"].eq(1).all()
    assert head["identity_ref_faces"].tolist().count(0) == 2  # the faceless reference, twice
    plain = img[img["niche"] == PLAIN]
    assert plain["face_found"].isna().all() and plain["identity_cos"].isna().all()
    # every request on time: only the floors decide
    requests = img[["job_id", "model", "niche"]].assign(ok=True, latency_ms=1.0, error_class=None)
    cfg = _config()
    rows = {(r["model"], r["niche"]): r for r in quality_goodput(requests, img, cfg)["rows"]}
    good, bad = rows[(GOOD, HEAD)], rows[(BAD, HEAD)]
    # GOOD keeps every face; the faceless reference and the unreadable one are not checked
    assert (good["n"], good["good"], good["below_floor"]) == (6, 6, 0)
    # BAD draws no face: each of its 4 jobs with a reference face fails the identity floor
    assert (bad["n"], bad["good"], bad["below_floor"]) == (5, 1, 4)
    assert bad["below_floor_by_metric"] == {"identity": 4}
    assert rows[(GOOD, TRYON)]["good"] == 2  # identity kept, garment >= 0
    assert rows[(BAD, TRYON)]["below_floor_by_metric"] == {"identity": 2}  # garment met
    assert rows[(BAD, "all")]["below_floor_by_metric"]["identity"] == 6


def test_meta_records_the_embedder_the_sets_and_their_hashes(scored: Path) -> None:
    meta = json.loads((scored / "score_meta.json").read_text())
    assert meta["face_embedder"]["kind"] == "dlib"
    sets = {(s["niche"], s["role"]): s for s in meta["conditioning_sets"]}
    assert set(sets) == {(HEAD, "subjects"), (TRYON, "subjects"), (TRYON, "garments")}
    assert sets[(HEAD, "subjects")]["origin"] == "derived"
    assert sets[(TRYON, "garments")]["synthetic"] and len(sets[(TRYON, "garments")]["sha256"]) == 64
    used = meta["references_used"]
    assert used[HEAD]["faces"]["n_distinct"] == 5  # four subjects and the faceless photo
    assert used[TRYON] == {
        "faces": used[TRYON]["faces"], "garments": used[TRYON]["garments"]
    } and used[TRYON]["garments"]["n_distinct"] == 2  # fmt: skip
    assert all(len(r["sha256"]) == 64 for r in meta["references"].values())
    # the garment photo decoded; no job lost its image to a reference problem
    assert meta["images_scored"] == 17


def test_a_missing_reference_file_is_the_jobs_error_not_the_runs(scored: Path) -> None:
    img = pd.read_parquet(scored / "image_scores.parquet").set_index("job_id")
    last = img.index.max()
    assert bool(img.at[last, "ok"]) and "cannot read 'refs/gone.png'" in img.at[last, "error"]
    assert pd.isna(img.at[last, "identity_refs"])  # no reference left: not scored for it
    assert pd.notna(img.at[last, "clip_text"])  # the image itself is scored


def test_easel_score_prints_the_identity_figures(
    scored: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from easel.cli import main

    assert main(["score", "--run", str(scored), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "image-conditioned jobs (identity preservation, try-on garments):" in out
    assert "face embedder: dlib ResNet face embedding" in out
    assert "note: identity: no face found in 4 of 4 outputs (scored as failures)" in out
