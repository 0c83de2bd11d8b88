"""How dlib's pretrained face embedding behaves on the real photos inside scikit-image, and what
identity scoring costs next to the rest of the per-image scoring, in one run.

Calibration (what a cosine means, for choosing a niche's `quality_floor.identity`):
- detection: share of the 100 `data.lfw_subset()` faces (25x25 px) dlib's detector finds after
  the scorer's upscaling (`evaluation.face_min_side`, default 160 px), and of their mirror images;
- same person: cosine between each face and its mirrored copy, and the astronaut photo against a
  mirrored and a re-cropped copy;
- different people: cosine between every pair of distinct LFW faces (the subset carries no
  identity labels, so a few pairs may be one person), and the astronaut against each;
- retrieval: share of mirrored copies whose nearest face among all LFW faces is their original.

Cost, as a ratio against a baseline in the same run: the in-process `Scorer` on the same 64 px
headshot outputs with and without a reference face per job (FID features + CLIP is the baseline;
identity adds detection and embedding of the output, and of each distinct reference once).

    python benchmarks/identity_calibration.py [--jobs 64] [--out F]

writes benchmarks/results/identity_calibration.json by default.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_config
from evaluation.clip_score import resolve_clip_spec
from evaluation.features import resolve_feature_spec
from evaluation.identity import DlibFaceEmbedder, resolve_face_spec
from evaluation.pool import ImageItem, Scorer, ScorerSpec


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _pct(values: np.ndarray) -> dict[str, float]:
    qs = (1, 5, 50, 95, 99)
    p = np.percentile(values, qs)
    return {"n": len(values), **{f"p{q}": round(float(v), 4) for q, v in zip(qs, p, strict=True)}}


def calibrate(embedder: DlibFaceEmbedder) -> dict:
    from skimage import data

    faces = [
        Image.fromarray(np.rint(f * 255).astype(np.uint8)).convert("RGB")
        for f in data.lfw_subset()[:100]
    ]
    t0 = time.perf_counter()
    orig = [embedder.embed(f) for f in faces]
    per_face_ms = 1000 * (time.perf_counter() - t0) / len(faces)
    mirror = [embedder.embed(ImageOps.mirror(f)) for f in faces]
    both = [(o, m) for o, m in zip(orig, mirror, strict=True) if o is not None and m is not None]
    gallery = np.stack([o.vector for o in orig if o is not None])
    same = np.array([float(o.vector @ m.vector) for o, m in both])
    sims = gallery @ gallery.T
    other = sims[~np.eye(len(gallery), dtype=bool)]
    index = {id(o): i for i, o in enumerate([o for o in orig if o is not None])}
    hits = sum(int(np.argmax(gallery @ m.vector) == index[id(o)]) for o, m in both)

    astro = Image.fromarray(data.astronaut())
    t0 = time.perf_counter()
    me = embedder.embed(astro)
    astro_ms = 1000 * (time.perf_counter() - t0)
    assert me is not None
    flipped = embedder.embed(ImageOps.mirror(astro))
    recrop = embedder.embed(
        astro.crop((100, 30, 350, 280)).resize((180, 180), Image.Resampling.BICUBIC)
    )
    small = embedder.embed(astro.crop((110, 10, 330, 230)).resize((64, 64)))
    return {
        "lfw_faces": len(faces),
        "lfw_detected": sum(o is not None for o in orig),
        "lfw_mirror_detected": sum(m is not None for m in mirror),
        "same_person_mirror_cosine": _pct(same),
        "different_lfw_pairs_cosine": _pct(other),
        "mirror_retrieval_rank1": round(hits / len(both), 4),
        "astronaut": {
            "mirror_cosine": round(float(flipped.vector @ me.vector), 4) if flipped else None,
            "recrop_cosine": round(float(recrop.vector @ me.vector), 4) if recrop else None,
            "headshot_64px_cosine": round(float(small.vector @ me.vector), 4) if small else None,
            "max_cosine_to_lfw": round(float((gallery @ me.vector).max()), 4),
        },
        "ms_per_lfw_face": round(per_face_ms, 1),
        "ms_astronaut_512px": round(astro_ms, 1),
    }


def cost(jobs: int) -> dict:
    """Scorer time per job with and without identity, same 64 px outputs, same batch size."""
    from evaluation.subject_sets import build_derived_subjects

    cfg = load_config()
    ev = cfg.evaluation
    spec = ScorerSpec(
        feature=resolve_feature_spec(ev), clip=resolve_clip_spec(ev), face=resolve_face_spec(ev)
    )
    folder = Path(os.environ.get("EASEL_CACHE", Path.home() / ".cache" / "easel"))
    folder = folder / "benchmarks" / "identity-subjects"
    build_derived_subjects(folder, 16)
    subjects = sorted(folder.glob("subject-*.png"))
    prompts = cfg.niche("corporate-headshots").prompts
    plain, faced = [], []
    for i in range(jobs):
        ref = subjects[i % len(subjects)].read_bytes()
        out = Image.open(io.BytesIO(ref)).convert("RGB").resize((64, 64))
        # half the outputs keep the face (mirrored), half are noise: both paths are timed
        if i % 2:
            rng = np.random.default_rng(i)
            out = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        else:
            out = ImageOps.mirror(out)
        item = ImageItem(f"job-{i}", ("gen", "m", "n"), _png(out), prompt=prompts[i % len(prompts)])
        plain.append(item)
        faced.append(ImageItem(**{**item.__dict__, "faces": (ref,)}))
    scorer = Scorer(spec)
    scorer.score_batch(faced[:2])  # load dlib and warm every network before timing
    out: dict[str, float] = {}
    for name, items in (("baseline_fid_clip", plain), ("with_identity", faced)):
        scorer.reset()
        scorer._identity._refs.clear()  # type: ignore[union-attr]  # reference embeddings too
        t0 = time.perf_counter()
        for start in range(0, len(items), ev.batch_size):
            scorer.score_batch(items[start : start + ev.batch_size])
        out[f"{name}_ms_per_job"] = round(1000 * (time.perf_counter() - t0) / len(items), 2)
    found = scorer.state.groups[("gen", "m", "n")].identity
    out["ratio_with_identity_over_baseline"] = round(
        out["with_identity_ms_per_job"] / out["baseline_fid_clip_ms_per_job"], 2
    )
    out["jobs"] = jobs
    out["distinct_references"] = len(subjects)
    out["outputs_with_a_face_found"] = found.faces
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=64, help="headshot jobs for the cost ratio")
    here = Path(__file__).resolve().parent
    p.add_argument("--out", type=Path, default=here / "results" / "identity_calibration.json")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # as in each scorer actor
    spec = resolve_face_spec(load_config().evaluation)
    result = {
        "embedder": spec.label,
        "calibration": calibrate(DlibFaceEmbedder(spec)),
        "cost": cost(args.jobs),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
