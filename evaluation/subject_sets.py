"""The photo sets image-conditioned jobs draw their references from: people, and garments.

A niche with `conditioning` has a subject set (photos of people) and, for try-on, a garment set.
Either comes from a folder the user names (`conditioning.subjects_dir` / `garments_dir`, with a
consent/licence note the config requires), or is built locally into
`$EASEL_CACHE/conditioning/<niche>/`:

- **subjects, derived**: a face drawn from shapes is not a face to dlib's detector, so the local
  set is derived from the real photos that ship inside scikit-image: a head-and-shoulders crop
  of `data.astronaut()` (NASA's portrait of Eileen Collins, public domain) and faces of
  `data.lfw_subset()` (25x25 px crops from Labeled Faces in the Wild, upscaled to 128 px, blurry),
  keeping only images in which dlib's detector finds a face. Real faces, not customer photos,
  and labelled so.
- **garments, drawn**: shirts, dresses and jackets drawn as flat silhouettes with solid, striped
  or dotted fills on a light backdrop: synthetic, labelled synthetic.

Every set records the SHA-256 of its files' names and bytes, which the run writes into
`score_meta.json` and the report's reproducibility block, so two runs can tell whether they were
conditioned on the same photos.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from config import ConditioningConfig, NicheConfig
from config.cache import cache_dir
from evaluation._hashing import file_sha256
from evaluation.identity import detection_view
from evaluation.references import IMAGE_SUFFIXES

__all__ = [
    "LOCAL_SIZE",
    "PhotoSet",
    "build_derived_subjects",
    "build_drawn_garments",
    "conditioning_sets",
    "folder_sha256",
    "garment_set",
    "subject_set",
]

LOCAL_SIZE = 128
_VERSION = 1
_MARKER = "SET.json"
_ASTRONAUT_CROP = (110, 10, 330, 230)  # (left, top, right, bottom): her head and shoulders
_DETECT_SIDE = 160  # evaluation.face_min_side's default: the set must pass the scorer's detector


@dataclass(frozen=True)
class PhotoSet:
    """One reference photo set of a niche.

    Attributes:
        niche: the niche.
        role: 'subjects' (people) or 'garments'.
        folder: where the files are.
        files: absolute paths, sorted by name.
        origin: 'folder' (the user's photos), 'derived' (built from scikit-image's sample
            photos) or 'drawn' (synthetic).
        consent: the config's consent/licence note (folders only).
        sha256: over every file's name and bytes, in order.
    """

    niche: str
    role: Literal["subjects", "garments"]
    folder: str
    files: tuple[str, ...]
    origin: Literal["folder", "derived", "drawn"]
    consent: str | None
    sha256: str

    @property
    def synthetic(self) -> bool:
        """True unless the photos are the user's own folder."""
        return self.origin != "folder"

    @property
    def label(self) -> str:
        n = len(self.files)
        if self.origin == "folder":
            return f"folder {self.folder} ({n} photos; consent/licence: {self.consent})"
        if self.origin == "derived":
            return (
                f"derived locally ({n} images at {LOCAL_SIZE} px) from the sample photos inside "
                f"scikit-image {_version('scikit-image')}: data.astronaut() (NASA, public domain) "
                "and data.lfw_subset() (Labeled Faces in the Wild, 25 px faces upscaled): real "
                "faces, not customer photos"
            )
        return f"synthetic: {n} garment silhouettes drawn locally, not product photos"

    def to_dict(self) -> dict[str, object]:
        """What score_meta.json and the report record of the set."""
        return {
            "niche": self.niche,
            "role": self.role,
            "origin": self.origin,
            "synthetic": self.synthetic,
            "label": self.label,
            "n": len(self.files),
            "sha256": self.sha256,
            "folder": self.folder,
            "consent": self.consent,
        }


def subject_set(niche: NicheConfig) -> PhotoSet:
    """The niche's photos of people: its `subjects_dir`, or the derived set (built once).

    ValueError when the niche has no conditioning; FileNotFoundError / ValueError for a folder
    that is missing or holds no image.
    """
    cond = _conditioning(niche)
    if cond.subjects_dir:
        return _folder_set(niche.name, "subjects", cond.subjects_dir, cond.consent)
    folder = cache_dir() / "conditioning" / niche.name / "subjects"
    build_derived_subjects(folder, cond.local_set_size)
    return _local_set(niche.name, "subjects", folder, "derived")


def garment_set(niche: NicheConfig) -> PhotoSet | None:
    """A try-on niche's garments: its `garments_dir`, or the drawn set; None for other kinds."""
    cond = _conditioning(niche)
    if cond.kind != "try-on":
        return None
    if cond.garments_dir:
        return _folder_set(niche.name, "garments", cond.garments_dir, cond.consent)
    folder = cache_dir() / "conditioning" / niche.name / "garments"
    build_drawn_garments(folder, cond.local_set_size, seed_text=niche.name)
    return _local_set(niche.name, "garments", folder, "drawn")


def conditioning_sets(niche: NicheConfig) -> list[PhotoSet]:
    """Every photo set of a conditioned niche (subjects, then garments for try-on)."""
    garments = garment_set(niche)
    return [subject_set(niche), *([garments] if garments else [])]


def folder_sha256(files: list[Path] | tuple[str, ...]) -> str:
    """SHA-256 over each file's name and the hash of its bytes, in the order given."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def build_derived_subjects(folder: Path, n: int) -> None:
    """Write `n` face images derived from scikit-image's sample photos, unless already there.

    Image 0 is the astronaut's head and shoulders; the rest are LFW-subset faces in dlib's
    detector finds a face once scaled as the scorer scales it, in the subset's order.
    """
    want = {"version": _VERSION, "kind": "derived", "n": n, "size": LOCAL_SIZE}
    if _is_built(folder, want):
        return
    try:
        from skimage import data
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the locally built subject set is derived from scikit-image's sample photos: "
            "`pip install scikit-image`, or point conditioning.subjects_dir at a folder of photos"
        ) from None
    import dlib

    detector = dlib.get_frontal_face_detector()
    crop = Image.fromarray(data.astronaut()).crop(_ASTRONAUT_CROP)
    candidates = [crop.resize((LOCAL_SIZE, LOCAL_SIZE), Image.Resampling.BICUBIC)]
    lfw = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for face in lfw:
        grey = Image.fromarray(np.clip(np.rint(face * 255), 0, 255).astype(np.uint8))
        candidates.append(
            grey.resize((LOCAL_SIZE, LOCAL_SIZE), Image.Resampling.BICUBIC).convert("RGB")
        )
    kept = []
    for img in candidates:
        arr, upsample = detection_view(img, _DETECT_SIDE)
        if len(detector(arr, upsample)):
            kept.append(img)
        if len(kept) == n:
            break
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} derived faces are detectable; ask for at most that")
    _write(folder, "subject", kept, want)


def build_drawn_garments(folder: Path, n: int, *, seed_text: str) -> None:
    """Draw `n` garment images deterministically from `seed_text`, unless already there."""
    want = {"version": _VERSION, "kind": "drawn", "n": n, "size": LOCAL_SIZE, "seed": seed_text}
    if _is_built(folder, want):
        return
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    _write(folder, "garment", [_draw_garment(rng, i, LOCAL_SIZE) for i in range(n)], want)


# --- helpers ----------------------------------------------------------------------------------


def _conditioning(niche: NicheConfig) -> ConditioningConfig:
    if niche.conditioning is None:
        raise ValueError(f"niche {niche.name!r} has no conditioning block")
    return niche.conditioning


_Role = Literal["subjects", "garments"]


def _folder_set(niche: str, role: _Role, folder: str, consent: str | None) -> PhotoSet:
    path = Path(folder).expanduser()
    key = "subjects_dir" if role == "subjects" else "garments_dir"
    if not path.is_dir():
        raise FileNotFoundError(f"niches[{niche}].conditioning.{key}: no such folder {str(path)!r}")
    files = _images(path)
    if not files:
        raise ValueError(
            f"niches[{niche}].conditioning.{key}: {str(path)!r} holds no image "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )
    return _photo_set(niche, role, path, files, "folder", consent)


def _local_set(
    niche: str, role: _Role, folder: Path, origin: Literal["derived", "drawn"]
) -> PhotoSet:
    return _photo_set(niche, role, folder, _images(folder), origin, None)


def _photo_set(
    niche: str,
    role: _Role,
    folder: Path,
    files: list[Path],
    origin: Literal["folder", "derived", "drawn"],
    consent: str | None,
) -> PhotoSet:
    return PhotoSet(
        niche=niche,
        role=role,
        folder=str(folder.resolve()),
        files=tuple(str(f) for f in files),
        origin=origin,
        consent=consent,
        sha256=folder_sha256(files),
    )


def _images(folder: Path) -> list[Path]:
    return sorted(
        p.resolve() for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _is_built(folder: Path, want: dict) -> bool:
    marker = folder / _MARKER
    try:
        return marker.is_file() and json.loads(marker.read_text()) == want
    except ValueError:
        return False  # an unreadable marker means an interrupted build: build again


def _write(folder: Path, stem: str, images: list[Image.Image], want: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{stem}-*.png"):
        old.unlink()
    for i, img in enumerate(images):
        img.save(folder / f"{stem}-{i:03d}.png")
    (folder / _MARKER).write_text(json.dumps(want))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _draw_garment(rng: np.random.Generator, i: int, s: int) -> Image.Image:
    img = Image.new("RGB", (s, s), _colour(rng, 225, 256))
    d = ImageDraw.Draw(img)
    kind = ("shirt", "dress", "jacket")[i % 3]
    body = _colour(rng, 20, 230)
    if kind == "dress":
        shape = [(s * 0.38, s * 0.15), (s * 0.62, s * 0.15), (s * 0.8, s * 0.9), (s * 0.2, s * 0.9)]
    else:  # a T: shoulders and sleeves over a body
        shape = [
            (s * 0.3, s * 0.15), (s * 0.7, s * 0.15), (s * 0.92, s * 0.35), (s * 0.8, s * 0.45),
            (s * 0.7, s * 0.38), (s * 0.7, s * 0.88), (s * 0.3, s * 0.88), (s * 0.3, s * 0.38),
            (s * 0.2, s * 0.45), (s * 0.08, s * 0.35),
        ]  # fmt: skip
    d.polygon(shape, fill=body)
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).polygon(shape, fill=255)
    pattern = ("solid", "stripes", "dots")[int(rng.integers(0, 3))]
    if pattern != "solid":
        over = Image.new("RGB", (s, s), body)
        o = ImageDraw.Draw(over)
        second = _colour(rng)
        step = int(rng.integers(6, 14))
        for k in range(0, s, step):
            if pattern == "stripes":
                o.rectangle([0, k, s, k + step // 2], fill=second)
            else:
                for x in range(0, s, step):
                    o.ellipse([x, k, x + step // 2, k + step // 2], fill=second)
        img.paste(over, (0, 0), mask)
    if kind == "jacket":
        d.line([(s * 0.5, s * 0.17), (s * 0.5, s * 0.88)], fill=(30, 30, 30), width=2)
        d.polygon(
            [(s * 0.42, s * 0.15), (s * 0.5, s * 0.3), (s * 0.58, s * 0.15)], fill=(240, 240, 240)
        )
    return img
