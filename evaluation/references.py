"""Reference image sets per niche, a synthetic stand-in, and on-disk cached reference statistics.

A niche's references are the images in its `reference_dir` (sorted by name, at most
`evaluation.reference_images_per_niche`). A niche without one gets a synthetic set, drawn
deterministically from the niche's name into `$EASEL_CACHE/references/<niche>` and labelled
synthetic wherever it is used: simple drawn scenes (a head and shoulders on a studio backdrop for
portrait-like niches, an object on a sweep for product niches, shapes otherwise), so FIDs against it
only say how far images are from those drawings.

Reference feature statistics are computed once and cached under
`$EASEL_CACHE/evaluation/ref-stats/<niche>-<key>.npz`; the key hashes every image's bytes, the
feature network's weights and the resize policy, so a change to any of them recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from config import EvaluationConfig, NicheConfig
from config.cache import cache_dir
from evaluation._hashing import file_sha256
from evaluation.features import FeatureSpec
from evaluation.fid import FeatureStats

__all__ = [
    "IMAGE_SUFFIXES",
    "SYNTHETIC_SIZE",
    "ReferenceSet",
    "generate_synthetic",
    "load_cached_stats",
    "reference_key",
    "reference_set",
    "save_cached_stats",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SYNTHETIC_SIZE = 64
_SYNTHETIC_VERSION = 1
_MARKER = "SYNTHETIC.json"


@dataclass(frozen=True)
class ReferenceSet:
    """The reference images of one niche."""

    niche: str
    folder: str
    files: tuple[str, ...]
    synthetic: bool

    @property
    def label(self) -> str:
        if self.synthetic:
            return f"synthetic ({len(self.files)} images drawn locally; not real photographs)"
        return f"folder {self.folder} ({len(self.files)} images)"


def reference_set(niche: NicheConfig, cfg: EvaluationConfig) -> ReferenceSet:
    """The niche's reference folder, or its synthetic set (generated on first use).

    A relative `reference_dir` is taken relative to the current directory. FileNotFoundError when
    the folder is missing, ValueError when it holds fewer than 2 images.
    """
    limit = cfg.reference_images_per_niche
    if niche.reference_dir is None:
        folder = cache_dir() / "references" / niche.name
        generate_synthetic(niche.name, folder, limit)
        synthetic = True
    else:
        folder = Path(niche.reference_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"niches[{niche.name}].reference_dir: no such folder {str(folder)!r}"
            )
        synthetic = False
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if len(files) < 2:
        raise ValueError(
            f"niche {niche.name!r}: reference folder {str(folder)!r} has {len(files)} images "
            f"({', '.join(IMAGE_SUFFIXES)}); FID needs at least 2"
        )
    return ReferenceSet(
        niche=niche.name,
        folder=str(folder.resolve()),
        files=tuple(str(p.resolve()) for p in files),
        synthetic=synthetic,
    )


def generate_synthetic(niche: str, folder: Path, n: int, size: int = SYNTHETIC_SIZE) -> None:
    """Draw `n` deterministic images for `niche` into `folder`, unless they are there already."""
    marker = folder / _MARKER
    want = {"version": _SYNTHETIC_VERSION, "niche": niche, "n": n, "size": size}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == want:
                return
        except ValueError:
            pass  # an unreadable marker means an interrupted build: draw again
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("ref-*.png"):
        old.unlink()
    style = _style(niche)
    seed = int.from_bytes(hashlib.sha256(niche.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    for i in range(n):
        _draw(style, rng, size).save(folder / f"ref-{i:05d}.png")
    marker.write_text(json.dumps(want))


def reference_key(refset: ReferenceSet, feature: FeatureSpec) -> str:
    """Hash of the images' bytes, the feature network and the resize policy."""
    h = hashlib.sha256()
    h.update(feature.key.encode())
    h.update(feature.resize_policy.encode())
    for path in refset.files:
        h.update(Path(path).name.encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()[:24]


def _stats_path(niche: str, key: str) -> Path:
    return cache_dir() / "evaluation" / "ref-stats" / f"{niche}-{key}.npz"


def load_cached_stats(niche: str, key: str) -> FeatureStats | None:
    """Cached reference statistics for this key, or None."""
    path = _stats_path(niche, key)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return FeatureStats(
            dim=int(z["dim"]),
            n=int(z["n"]),
            sum=z["sum"],
            cov_sum=z["cov_sum"],
            ids=[str(x) for x in z["ids"]],
            features=z["features"],
        )


def save_cached_stats(niche: str, key: str, stats: FeatureStats) -> Path:
    """Write statistics atomically (a concurrent reader never sees half a file)."""
    path = _stats_path(niche, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez(
        tmp,
        dim=stats.dim,
        n=stats.n,
        sum=stats.sum,
        cov_sum=stats.cov_sum,
        ids=np.asarray(stats.ids, dtype=str),
        features=stats.features,
    )
    os.replace(tmp, path)
    return path


# --- drawing the synthetic sets ---------------------------------------------------------------


def _style(niche: str) -> str:
    name = niche.lower()
    if any(w in name for w in ("headshot", "portrait", "face", "profile", "try-on", "tryon")):
        return "portrait" if "creative" not in name else "creative"
    if any(w in name for w in ("product", "commerce", "packshot", "catalog")):
        return "product"
    return "abstract"


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _draw(style: str, rng: np.random.Generator, size: int) -> Image.Image:
    if style == "product":
        top, bottom = np.array(_colour(rng, 225, 256)), np.array(_colour(rng, 200, 240))
    elif style == "portrait":
        grey = int(rng.integers(90, 190))
        top = np.array([grey, grey, grey + int(rng.integers(0, 30))])
        bottom = top * 0.7
    else:
        top, bottom = np.array(_colour(rng)), np.array(_colour(rng))
    t = np.linspace(0, 1, size)[:, None, None]
    bg = (top * (1 - t) + bottom * t) * np.ones((1, size, 1))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    s = size
    if style in ("portrait", "creative"):
        cx = s / 2 + rng.normal(0, s * 0.04)
        skin = (int(rng.integers(120, 240)), int(rng.integers(80, 200)), int(rng.integers(60, 170)))
        cloth = _colour(rng, 0, 160) if style == "portrait" else _colour(rng)
        d.ellipse([cx - s * 0.42, s * 0.72, cx + s * 0.42, s * 1.3], fill=cloth)
        d.rectangle([cx - s * 0.07, s * 0.55, cx + s * 0.07, s * 0.78], fill=skin)
        hw, hh = s * rng.uniform(0.15, 0.2), s * rng.uniform(0.2, 0.25)
        d.ellipse([cx - hw, s * 0.42 - hh, cx + hw, s * 0.42 + hh], fill=skin)
        d.chord(
            [cx - hw, s * 0.42 - hh, cx + hw, s * 0.42 + hh * 0.3],
            180,
            360,
            fill=_colour(rng, 0, 120),
        )
        if style == "creative":
            for _ in range(int(rng.integers(2, 6))):
                x, y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s * 0.05, s * 0.2)
                d.ellipse([x - r, y - r, x + r, y + r], outline=_colour(rng), width=2)
    elif style == "product":
        w, h = s * rng.uniform(0.25, 0.5), s * rng.uniform(0.25, 0.6)
        x0, y0 = (s - w) / 2, s * 0.85 - h
        d.ellipse([x0 - 4, s * 0.82, x0 + w + 4, s * 0.9], fill=(150, 150, 150))
        shape = d.rectangle if rng.random() < 0.5 else d.ellipse
        shape([x0, y0, x0 + w, s * 0.86], fill=_colour(rng))
    else:
        for _ in range(int(rng.integers(3, 8))):
            x, y, r = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(s * 0.05, s * 0.3)
            d.rectangle([x - r, y - r, x + r, y + r], fill=_colour(rng))
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, size=(s, s, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
