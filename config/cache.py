"""easel's cache folder, shared by every stage: tiny models, references, cluster state."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """`$EASEL_CACHE`, or `~/.cache/easel` when it is unset or empty."""
    return Path(os.environ.get("EASEL_CACHE") or "~/.cache/easel").expanduser()
