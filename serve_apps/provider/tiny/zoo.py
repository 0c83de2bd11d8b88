"""The tiny model zoo: random-weight builds of the real diffusers pipeline classes.

No weights can be downloaded here, so the default config serves tiny builds of the same classes
the post benchmarks (`Flux2Pipeline`, `Flux2KleinPipeline`, `StableDiffusionXLPipeline`). Each
recipe builds every component from a small config with seeded random weights, real offline
tokenizers included, saves it with `save_pretrained` under `<EASEL_CACHE>/tiny/<recipe>`, and is
loaded back only through `from_pretrained(path)`, the call a real checkpoint id takes. The images
are noise; the code path, shapes, batching and scheduling are real. How each recipe is made
lives in `recipes`; this module is the cache.

Builds are atomic (a temp folder renamed into place, under a file lock), so a half-built model is
never loaded and concurrent replicas build a recipe once. This module imports torch, diffusers and
transformers only inside the build, so listing the zoo stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.cache import cache_dir
from serve_apps.provider.tiny.recipes import RECIPE_FORMAT, RECIPES, TinyRecipe

__all__ = [
    "DEFAULT_SEED",
    "RECIPES",
    "TinyModelInfo",
    "TinyRecipe",
    "build",
    "cache_dir",
    "ensure",
    "info",
    "list_models",
    "model_path",
    "no_progress_bars",
]

DEFAULT_SEED = 0
_MARKER = "easel_tiny.json"


@dataclass(frozen=True)
class TinyModelInfo:
    """What `easel models list` shows for one recipe."""

    recipe: str
    pipeline: str
    path: Path
    built: bool
    size_bytes: int
    parameters: int | None
    seed: int | None
    build_s: float | None


def model_path(recipe: str) -> Path:
    """Where a recipe is (or will be) saved: `<cache>/tiny/<recipe>`."""
    _recipe(recipe)
    return cache_dir() / "tiny" / recipe


def ensure(recipe: str, seed: int | None = None) -> Path:
    """Path of a built recipe, building it first only if it is missing.

    Args:
        recipe: one of RECIPES.
        seed: None accepts any existing build; a number also rebuilds a build made with
            another seed. A missing build uses `seed` or DEFAULT_SEED.
    """
    path = model_path(recipe)
    if _is_current(path, seed):
        return path
    with _lock(recipe):
        # Another process may have finished the build while we waited for the lock.
        if _is_current(path, seed):
            return path
        _build_locked(recipe, DEFAULT_SEED if seed is None else seed)
    return path


def build(recipe: str, seed: int = DEFAULT_SEED, force: bool = True) -> Path:
    """Build a recipe into the cache (replacing an existing build when `force`)."""
    if not force:
        return ensure(recipe, seed)
    with _lock(recipe):
        _build_locked(recipe, seed)
    return model_path(recipe)


def info(recipe: str) -> TinyModelInfo:
    """Build state, size on disk and parameter count of one recipe (reads no weights)."""
    spec = _recipe(recipe)
    path = model_path(recipe)
    marker = _read_marker(path)
    if marker is not None and marker.get("format") != RECIPE_FORMAT:
        marker = None  # made by older recipes: `ensure` rebuilds it
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if marker else 0
    return TinyModelInfo(
        recipe=recipe,
        pipeline=spec.pipeline,
        path=path,
        built=marker is not None,
        size_bytes=size,
        parameters=marker.get("parameters") if marker else None,
        seed=marker.get("seed") if marker else None,
        build_s=marker.get("build_s") if marker else None,
    )


def list_models() -> list[TinyModelInfo]:
    """`info` for every recipe, in RECIPES order."""
    return [info(name) for name in RECIPES]


# --- building ---------------------------------------------------------------------------------


def _recipe(name: str) -> TinyRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown tiny recipe {name!r}; known: {sorted(RECIPES)}") from None


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_current(path: Path, seed: int | None) -> bool:
    marker = _read_marker(path)
    if marker is None or marker.get("format") != RECIPE_FORMAT:
        return False
    return seed is None or marker.get("seed") == seed


@contextlib.contextmanager
def _lock(recipe: str) -> Iterator[None]:
    """An exclusive lock per recipe, across threads and processes (Serve replicas)."""
    root = cache_dir() / "tiny"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{recipe}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_locked(recipe: str, seed: int) -> None:
    """Build into a temp folder beside the target, then swap it in with renames."""
    spec = _recipe(recipe)
    target = model_path(recipe)
    # Leftovers of a builder that was killed mid-build; we hold the lock, so none is running.
    for stale in target.parent.glob(f".{recipe}.build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{recipe}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    versions = _versions()  # imports torch & co. first, so build_s is the build alone
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{recipe}.build-", dir=target.parent))
    try:
        with no_progress_bars():
            pipe = spec.make(seed)
            pipe.save_pretrained(tmp, safe_serialization=True)
        marker = {
            "format": RECIPE_FORMAT,
            "recipe": recipe,
            "pipeline": spec.pipeline,
            "seed": seed,
            "parameters": _count_parameters(pipe),
            "build_s": round(time.perf_counter() - start, 3),
            "versions": versions,
        }
        # The marker goes in last: a folder without it is never treated as built.
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = None
        if target.exists():
            old = target.parent / f".{recipe}.old-{os.getpid()}-{time.monotonic_ns()}"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' and diffusers' progress bars inside the block (then restore them).

    Builds and loads run inside Serve replicas, whose logs want no tqdm bars.
    """
    from diffusers.utils import logging as d_logging
    from transformers.utils import logging as t_logging

    was = [(mod, mod.is_progress_bar_enabled()) for mod in (d_logging, t_logging)]
    for mod, _ in was:
        mod.disable_progress_bar()
    try:
        yield
    finally:
        for mod, enabled in was:
            if enabled:
                mod.enable_progress_bar()


def _count_parameters(pipe: Any) -> int:
    import torch

    return sum(
        p.numel()
        for comp in pipe.components.values()
        if isinstance(comp, torch.nn.Module)
        for p in comp.parameters()
    )


def _versions() -> dict[str, str]:
    import diffusers
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
