"""What it takes to repeat a run: the config hash, seeds, the weights each model loaded (at
their pinned revisions), package versions and the hardware."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib import metadata
from typing import Any

from config import EaselConfig

__all__ = ["PACKAGES", "collect_repro", "format_weights", "weights_of"]

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


def weights_of(cfg: EaselConfig) -> dict[str, dict[str, str | None]]:
    """Per open model: the checkpoint it loads and its pinned revision (and the UNet's)."""
    out = {}
    for m in cfg.models:
        if m.backend != "diffusers":
            continue
        entry = {"weights": m.weights, "revision": m.revision}
        if m.unet:
            entry |= {"unet": m.unet, "unet_revision": m.unet_revision}
        out[m.name] = entry
    return out


def format_weights(weights: dict[str, dict[str, str | None]]) -> str:
    """One line: `model weights@revision (+ unet@revision)`, '@unpinned' where none is set."""
    parts = []
    for model, w in weights.items():
        text = f"{model} {w.get('weights')}@{(w.get('revision') or 'unpinned')[:12]}"
        if w.get("unet"):
            text += f" + {w['unet']}@{(w.get('unet_revision') or 'unpinned')[:12]}"
        parts.append(text)
    return "; ".join(parts)


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
        "weights": weights_of(cfg),
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
