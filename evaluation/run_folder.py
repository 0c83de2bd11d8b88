"""Reading a load-test run folder: the images that can be scored, and why others cannot.

Image-conditioned jobs carry their reference photos in the manifest:

- `reference_images`: a list per row, each item the image's bytes or a path (absolute, or
  relative to the run folder); null or empty for a job without references.
- `reference_roles` (optional): a list of the same length, each `face` (a photo of the person
  whose identity the output must keep; `person` is the same), `garment` (try-on) or `other`
  (compared with CLIP only). Left out, roles follow the niche's `conditioning.kind`: identity,
  every reference is a face; try-on, the first is the person and the rest are garments; a
  niche without conditioning, every reference is `other`.
- `reference_image` (one base64 string or bytes), the older one-image form, is read as a
  one-item `reference_images` when that column is absent or null on the row.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from config import EaselConfig, load_config

__all__ = [
    "REFERENCE_ROLES",
    "JobReferences",
    "RunImages",
    "job_references",
    "load_run_config",
    "load_run_images",
]

_MANIFEST_COLUMNS = ("job_id", "model", "niche", "prompt")
_REFERENCE_COLUMNS = ("reference_image", "reference_images", "reference_roles")
REFERENCE_ROLES = ("face", "person", "garment", "other")
_REQUEST_COLUMNS = ("job_id", "ok", "image_path")


@dataclass
class RunImages:
    """Scorable images of a run and the counts of rows left out.

    Attributes:
        rows: job_id, model, niche, prompt, reference_image, reference_images,
            reference_roles (None where the manifest has no such column), image_path (relative,
            as recorded), path (absolute).
        skipped: reason -> number of request rows left out ('failed', 'no_image',
            'missing_file', 'outside_run').
        missing: job ids whose recorded image file is absent or outside the run folder.
    """

    rows: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def load_run_config(run_dir: str | Path) -> EaselConfig:
    """The resolved config a run folder was made with (`config.yaml`)."""
    return load_config(Path(run_dir) / "config.yaml")


def load_run_images(run_dir: str | Path) -> RunImages:
    """Join manifest.parquet and requests.parquet; keep ok rows whose image file exists.

    FileNotFoundError when a table is missing; ValueError naming absent columns.
    """
    run = Path(run_dir).resolve()
    manifest = _read(run / "manifest.parquet", _MANIFEST_COLUMNS)
    requests = _read(run / "requests.parquet", _REQUEST_COLUMNS)
    keep = [c for c in (*_MANIFEST_COLUMNS, *_REFERENCE_COLUMNS) if c in manifest]
    df = requests[list(_REQUEST_COLUMNS)].merge(manifest[keep], on="job_id", how="left")
    for col in _REFERENCE_COLUMNS:
        if col not in df:
            df[col] = None
    unknown = df["prompt"].isna()
    if unknown.any():
        raise ValueError(
            f"{run / 'requests.parquet'}: {int(unknown.sum())} job ids are not in manifest.parquet "
            f"(e.g. {df.loc[unknown, 'job_id'].iloc[0]!r})"
        )
    skipped = {
        "failed": int((~df["ok"].astype(bool)).sum()),
        "no_image": int((df["ok"].astype(bool) & df["image_path"].isna()).sum()),
    }
    df = df[df["ok"].astype(bool) & df["image_path"].notna()].copy()
    paths, missing, outside = [], [], 0
    for job, rel in zip(df["job_id"], df["image_path"], strict=True):
        p = (run / str(rel)).resolve()
        if not p.is_relative_to(run):
            outside += 1
            missing.append(job)
            paths.append(None)
        elif not p.is_file():
            missing.append(job)
            paths.append(None)
        else:
            paths.append(str(p))
    df["path"] = paths
    skipped["outside_run"] = outside
    skipped["missing_file"] = len(missing) - outside
    df = df[df["path"].notna()].reset_index(drop=True)
    df["job_id"] = df["job_id"].astype(str)
    return RunImages(rows=df.drop(columns=["ok"]), skipped=skipped, missing=missing)


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is this a run folder?)")
    df = pq.read_table(path).to_pandas()
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise ValueError(f"{path}: missing columns {absent}")
    return df


@dataclass(frozen=True)
class JobReferences:
    """A job's reference photos (encoded bytes) by role, and what could not be read."""

    faces: tuple[bytes, ...] = ()
    garments: tuple[bytes, ...] = ()
    other: tuple[bytes, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def first(self) -> bytes | None:
        """The reference CLIP compares the output with: the first face, else the first other."""
        for group in (self.faces, self.other):
            if group:
                return group[0]
        return None


def job_references(row: Any, run_dir: str | Path, kind: str | None) -> JobReferences:
    """Read one row's references (`rows` of `load_run_images`, as a namedtuple or mapping).

    Args:
        row: has reference_image, reference_images, reference_roles.
        run_dir: the run folder relative paths are read from.
        kind: the niche's conditioning kind ('identity', 'try-on') or None; sets default roles.

    Never raises: unreadable items are left out and described in `errors`.
    """
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k, None)
    items = _as_list(get("reference_images"))
    errors: list[str] = []
    legacy = not items
    if legacy:
        one = get("reference_image")
        if isinstance(one, bytes | bytearray) or (isinstance(one, str) and one):
            items = [one]
    roles = _as_list(get("reference_roles"))
    if roles and len(roles) != len(items):
        errors.append(
            f"reference_roles has {len(roles)} entries for {len(items)} reference images: "
            "roles taken from the niche instead"
        )
        roles = []
    if not roles:
        roles = _default_roles(kind, len(items))
    out: dict[str, list[bytes]] = {"face": [], "garment": [], "other": []}
    for i, (item, role) in enumerate(zip(items, roles, strict=True)):
        role = "face" if role == "person" else str(role)
        if role not in out:
            errors.append(f"reference {i}: role {role!r} is not one of {list(REFERENCE_ROLES)}")
            continue
        data = _read_reference(item, Path(run_dir), errors, i, legacy=legacy)
        if data is not None:
            out[role].append(data)
    return JobReferences(
        tuple(out["face"]), tuple(out["garment"]), tuple(out["other"]), tuple(errors)
    )


def _as_list(v: Any) -> list[Any]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    if isinstance(v, np.ndarray | list | tuple):
        return list(v)
    return [v]


def _default_roles(kind: str | None, n: int) -> Sequence[str]:
    if kind == "identity":
        return ["face"] * n
    if kind == "try-on":
        return ["face"] + ["garment"] * (n - 1) if n else []
    return ["other"] * n


def _read_reference(
    item: Any, run: Path, errors: list[str], i: int, *, legacy: bool
) -> bytes | None:
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if not isinstance(item, str) or not item:
        errors.append(f"reference {i}: neither image bytes nor a path ({type(item).__name__})")
        return None
    if legacy:  # the one-image `reference_image` column holds base64, not a path
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            errors.append("reference_image is not base64")
            return None
    path = Path(item).expanduser()
    path = path if path.is_absolute() else run / path
    try:
        return path.read_bytes()
    except OSError as exc:
        errors.append(f"reference {i}: cannot read {item!r}: {exc.strerror or exc}")
        return None
