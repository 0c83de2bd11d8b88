"""Where evaluation keeps what it builds: tiny networks, synthetic references, cached stats."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_root", "file_sha256"]


def cache_root() -> Path:
    """`$EASEL_CACHE`, or `~/.cache/easel` when it is unset (shared with the model cache)."""
    base = os.environ.get("EASEL_CACHE") or str(Path.home() / ".cache" / "easel")
    return Path(base)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
