"""The tiny model zoo, beside the loading code that takes it (`serve_apps.provider.pipelines`).

`zoo` builds, caches and lists the tiny random-weight builds; `recipes` says how each is made.
Importing this package is cheap: torch and diffusers load inside a build.
"""

from __future__ import annotations

from serve_apps.provider.tiny.zoo import (
    DEFAULT_SEED,
    RECIPES,
    TinyModelInfo,
    TinyRecipe,
    build,
    cache_dir,
    ensure,
    info,
    list_models,
    model_path,
    no_progress_bars,
)

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
