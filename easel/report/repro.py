"""What it takes to repeat a run: the config hash, seeds, package versions and the hardware."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib import metadata
from typing import Any

from config import EaselConfig

__all__ = ["PACKAGES", "collect_repro"]

PACKAGES = (
    "easel",
    "ray",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "torchmetrics",
    "open_clip_torch",
    "pyarrow",
    "numpy",
    "pydantic",
    "matplotlib",
)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    # Only ask torch when the process already loaded it: importing it just for this costs seconds
    # and `easel report` on a laptop should not need it.
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not break the report
        return []


def collect_repro(cfg: EaselConfig, *, argv: list[str] | None = None) -> dict[str, Any]:
    """The reproducibility block: config hash, seeds, versions and this machine's hardware.

    Args:
        cfg: the resolved config of the run.
        argv: the command line that started the run, if any.
    """
    return {
        "config_name": cfg.name,
        "config_hash": cfg.digest(),
        "seed": cfg.seed,
        "traffic_seed": cfg.traffic.seed,
        "command": " ".join(argv) if argv else None,
        "collected_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "hardware": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_gb": _memory_gb(),
            "gpus": _gpus(),
        },
    }
