"""Reading a config: YAML to EaselConfig, with errors that name the file, the key and the rule."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config._base import ConfigError
from config.root import EaselConfig

__all__ = [
    "DEFAULT_CONFIG",
    "PRODUCTION_EXAMPLE",
    "load_config",
    "parse_config",
    "shipped_config_path",
]

DEFAULT_CONFIG = "default.yaml"
PRODUCTION_EXAMPLE = "production.example.yaml"


def parse_config(data: Any, source: str = "<config>") -> EaselConfig:
    """Validate a parsed YAML document; a ConfigError names `source`, key paths, allowed values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return EaselConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} error(s)"]
        for err in exc.errors():
            path = _key_path(data, err["loc"])
            lines.append(f"  {path}: {_describe(err)}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path | None = None) -> EaselConfig:
    """Load a config file; None loads the embedded default config (tiny models, local CPU)."""
    if path is None:
        text = resources.files("config.shipped").joinpath(DEFAULT_CONFIG).read_text()
        source = f"<embedded {DEFAULT_CONFIG}>"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        text = p.read_text()
        source = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(data, source)


def shipped_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (default.yaml, production.example.yaml)."""
    return Path(str(resources.files("config.shipped").joinpath(name)))


def _key_path(data: Any, loc: tuple[Any, ...]) -> str:
    """Dotted key path; list items are shown by their `name` when they have one."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and key < len(node):
                item = node[key]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = item["name"]
                node = item
            else:
                node = None
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "<top level>"


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _describe(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key (not in the schema; check the spelling)"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    bounds = {k: v for k, v in ctx.items() if k in _SYMBOLS}
    if bounds:
        allowed = ", ".join(f"{_SYMBOLS[k]} {v}" for k, v in bounds.items())
        return f"{msg} (got {err.get('input')!r}; allowed: {allowed})"
    if kind == "literal_error":
        return f"got {err.get('input')!r}; allowed: {ctx.get('expected')}"
    return msg
