"""What `easel bench --resume DIR` reads: the stages an earlier attempt finished, and its options.

After each stage the bench rewrites `DIR/bench_state.json` (atomically): the options a resume
must reuse and every stage's record (name, status, wall_s, detail). `kept_stages` says which
stages a resume keeps instead of running again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RESUMABLE", "STATE_FILE", "ResumeError", "kept_stages", "read_state", "write_state"]

# Stages whose output files a resume keeps (each with the file or folder that must be there).
RESUMABLE = {
    "manifest": "manifest.parquet",
    "load": "requests.parquet",
    "sweep": "sweep",
    "usage": "usage.parquet",
    "score": "scores.parquet",
}
STATE_FILE = "bench_state.json"


class ResumeError(RuntimeError):
    """The folder cannot be resumed; the message says why."""


def kept_stages(run_dir: Path, stages: list[dict[str, Any]]) -> set[str]:
    """The stages a resume of `run_dir` keeps, given the earlier attempt's stage records.

    A RESUMABLE stage is kept when it was `ok` and its file is there, and every RESUMABLE stage
    before it was kept or `skipped` (what follows a stage that runs again runs again too).
    """
    kept: set[str] = set()
    for st in stages:  # in the bench's order
        name = st["name"]
        if name not in RESUMABLE or st["status"] == "skipped":
            continue
        if st["status"] != "ok" or not (run_dir / RESUMABLE[name]).exists():
            break
        kept.add(name)
    return kept


def read_state(run_dir: Path) -> dict[str, Any]:
    """The folder's bench_state.json. Raises ResumeError when it is missing or not JSON."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise ResumeError(
            f"--resume {run_dir}: no {STATE_FILE} there (not a folder `easel bench` started)"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ResumeError(f"--resume {run_dir}: {STATE_FILE} is not JSON ({exc})") from None


def write_state(run_dir: Path, options: dict[str, Any], stages: list[dict[str, Any]]) -> None:
    """`run_dir/bench_state.json`: the options and the stages' records, replaced whole."""
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"options": options, "stages": stages}, indent=2) + "\n")
    os.replace(tmp, run_dir / STATE_FILE)
