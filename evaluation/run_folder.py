"""Reading a load-test run folder: the images that can be scored, and why others cannot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from config import EaselConfig, load_config

__all__ = ["RunImages", "load_run_config", "load_run_images"]

_MANIFEST_COLUMNS = ("job_id", "model", "niche", "prompt")
_REQUEST_COLUMNS = ("job_id", "ok", "image_path")


@dataclass
class RunImages:
    """Scorable images of a run and the counts of rows left out.

    Attributes:
        rows: job_id, model, niche, prompt, reference_image (str or None), image_path (relative,
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
    keep = [c for c in ("job_id", "model", "niche", "prompt", "reference_image") if c in manifest]
    df = requests[list(_REQUEST_COLUMNS)].merge(manifest[keep], on="job_id", how="left")
    if "reference_image" not in df:
        df["reference_image"] = None
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
