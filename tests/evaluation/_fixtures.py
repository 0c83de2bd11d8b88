"""Small run folders for evaluation tests: structured PNGs, one failed job, one corrupt image."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from config import EaselConfig, load_config

MODELS = ("flux2-dev", "sdxl-turbo", "proprietary-a")
NICHES = ("corporate-headshots", "ecommerce-products")
LONG_PROMPT = "a studio portrait with " + ", ".join(f"detail number {i}" for i in range(40))


def eval_config(**evaluation: object) -> EaselConfig:
    """The default config with evaluation overrides (small bootstrap, small pools)."""
    cfg = load_config()
    ev = cfg.evaluation.model_copy(update={"bootstrap": 20, "kid_subsets": 10, **evaluation})
    return cfg.model_copy(update={"evaluation": ev})


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def model_image(model_index: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A drawn scene whose palette and blur depend on the model, so models' FIDs differ."""
    base = np.array([60 + 50 * model_index, 120, 200 - 50 * model_index], dtype=float)
    arr = np.ones((size, size, 3)) * base + rng.normal(0, 10 + 15 * model_index, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x, y, r = (*rng.uniform(0, size, 2).tolist(), rng.uniform(4, 16))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def make_run(
    path: Path, cfg: EaselConfig | None = None, *, per_cell: int = 6, seed: int = 0
) -> Path:
    """Write a run folder: MODELS x NICHES x per_cell ok jobs, plus one failure and one corrupt.

    Each niche uses 3 of its config prompts; job 0 of every model carries a reference image, and
    the first job of the first model has a prompt longer than CLIP's 77 tokens.
    """
    cfg = cfg or eval_config()
    rng = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True, exist_ok=True)
    manifest, requests = [], []
    ref_png = base64.b64encode(png_bytes(model_image(0, rng))).decode()
    k = 0
    for mi, model in enumerate(MODELS):
        for niche in NICHES:
            prompts = cfg.niche(niche).prompts[:3]
            for j in range(per_cell):
                job = f"job-{k:05d}"
                prompt = LONG_PROMPT if k == 0 else prompts[j % len(prompts)]
                manifest.append(
                    {
                        "job_id": job,
                        "arrival_s": k * 0.1,
                        "model": model,
                        "niche": niche,
                        "prompt": prompt,
                        "reference_image": ref_png if j == 0 else None,
                        "width": 64,
                        "height": 64,
                        "steps": 4,
                        "seed": k,
                        "tenant": None,
                    }
                )
                rel = f"images/{job}.png"
                (path / rel).write_bytes(png_bytes(model_image(mi, rng)))
                requests.append(
                    {
                        "job_id": job,
                        "model": model,
                        "niche": niche,
                        "ok": True,
                        "status": 200,
                        "error": None,
                        "image_path": rel,
                    }
                )
                k += 1
    # a failed request (no image) and a corrupt image file: recorded, never fatal
    extra = (("job-fail", False, None), ("job-corrupt", True, "images/job-corrupt.png"))
    for job, ok, rel in extra:
        manifest.append(
            {
                "job_id": job,
                "arrival_s": k * 0.1,
                "model": MODELS[0],
                "niche": NICHES[0],
                "prompt": cfg.niche(NICHES[0]).prompts[0],
                "reference_image": None,
                "width": 64,
                "height": 64,
                "steps": 4,
                "seed": k,
                "tenant": None,
            }
        )
        requests.append(
            {
                "job_id": job,
                "model": MODELS[0],
                "niche": NICHES[0],
                "ok": ok,
                "status": 200 if ok else 503,
                "error": None if ok else "overloaded",
                "image_path": rel,
            }
        )
        k += 1
    (path / "images" / "job-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    pd.DataFrame(manifest).to_parquet(path / "manifest.parquet", index=False)
    pd.DataFrame(requests).to_parquet(path / "requests.parquet", index=False)
    (path / "config.yaml").write_text(cfg.to_yaml())
    return path
