"""A load test's run folder: the manifest it replays, and `load.json`, its options and attempts.

`load.json` is what lets a killed run be finished: `easel load --resume DIR` takes the url, api
and options from it (flags still win), checks the manifest is the one the folder was started
with, and appends an attempt. Secrets are never written: only the *name* of the environment
variable that holds an API key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load_tests.process import rss_bytes
from load_tests.records import PARTS_DIR

__all__ = ["LOAD_LOG", "Attempt", "LoadLog", "file_sha256", "prepare_run_folder", "utc_now"]

LOAD_LOG = "load.json"
_OUTPUTS = ("requests.parquet", "warmup.parquet", "load_summary.json", LOAD_LOG)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Attempt:
    """One run of the folder: the first (0) or a resume (1, 2, ...).

    Attributes:
        recorded_before: rows that already had a record when it began.
        to_send: rows it was to send or reject (the rest of the manifest).
        clock_origin_s: the run clock's reading at its start (a resume starts the clock at the
            earliest arrival_s it has left, so its rows keep their spacing).
        finished_at: None while running, or for an attempt that was killed.
        driver_peak_rss_bytes, prescan_peak_rss_bytes: peak memory of the driver and of the
            pre-pass task.
        driver_memory: the driver's resident and peak bytes after each step of the attempt,
            from the prescan to the summary, and when the step ended (`{"after", "rss_bytes",
            "peak_bytes", "unix_s"}`, in order), to tell which step raised the peak and where
            the time before the first send goes.
        dispatchers: per dispatcher, what its `finish` reported (records, sent, bound, peaks).
    """

    attempt: int
    started_at: str
    recorded_before: int
    to_send: int
    clock_origin_s: float = 0.0
    finished_at: str | None = None
    driver_peak_rss_bytes: int | None = None
    prescan_peak_rss_bytes: int | None = None
    driver_memory: list[dict[str, Any]] = field(default_factory=list)
    dispatchers: list[dict[str, Any]] = field(default_factory=list)

    def mark_memory(self, after: str) -> None:
        """Note the driver's memory now, after the step `after`."""
        current, peak = rss_bytes()
        self.driver_memory.append(
            {
                "after": after,
                "rss_bytes": current,
                "peak_bytes": peak,
                "unix_s": round(time.time(), 3),
            }
        )


@dataclass
class LoadLog:
    """The options a run folder was started with, and its attempts (written as load.json)."""

    url: str
    api: str
    manifest_sha256: str
    dispatchers: int
    timeout_s: float
    save_images: bool
    max_in_flight: int | None = None
    api_key_env: str | None = None
    priority: str = "auto"
    attempts: list[Attempt] = field(default_factory=list)

    @classmethod
    def read(cls, run_dir: Path) -> LoadLog | None:
        path = run_dir / LOAD_LOG
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        attempts = [Attempt(**a) for a in data.pop("attempts", [])]
        return cls(**data, attempts=attempts)

    def write(self, run_dir: Path) -> Path:
        """Write load.json atomically (a killed run leaves the old or the new one, whole)."""
        path = run_dir / LOAD_LOG
        tmp = run_dir / f".{LOAD_LOG}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        return path


def prepare_run_folder(src: Path | None, run_dir: Path, resume: bool) -> tuple[Path, str]:
    """Put the manifest in the run folder; returns (its path there, its sha256).

    A new run copies `src` in as given and clears what an earlier, finished run there left; it
    refuses a folder holding an unfinished run (resume that one, or remove it). A resume checks
    that `src`, when given, is the manifest the folder was started with.

    Raises:
        ValueError: what is wrong with the folder or the manifest, and what to do.
    """
    dst = run_dir / "manifest.parquet"
    if resume:
        log = LoadLog.read(run_dir)
        if log is None or not dst.is_file():
            raise ValueError(
                f"--resume {run_dir}: no {LOAD_LOG} and manifest.parquet there (not a folder "
                "that `easel load` started)"
            )
        moved = src is not None and src.resolve() != dst.resolve()
        if moved and file_sha256(src) != log.manifest_sha256:
            raise ValueError(
                f"--resume {run_dir}: {src} is not the manifest this run was started with "
                f"({dst}); leave out --manifest to use that one"
            )
        return dst, log.manifest_sha256
    if src is None:
        raise ValueError("a manifest is required (or resume a run folder)")
    if (run_dir / PARTS_DIR).is_dir() and any((run_dir / PARTS_DIR).glob("part-*.parquet")):
        raise ValueError(
            f"{run_dir} holds the records of an unfinished run; finish it with "
            f"`easel load --resume {run_dir}`, or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return dst, file_sha256(dst)
