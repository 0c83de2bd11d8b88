"""YAML as people read it in a manifest: no anchors, multi-line strings as literal blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["dump_yaml", "load_yaml", "write_yaml_files"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(yaml.SafeDumper):
    # Rendered objects share sub-dicts (env, volumes); kubectl users expect them written out.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(obj: Any) -> str:
    """`obj` as block YAML in insertion order."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def load_yaml(text: str) -> Any:
    """Every document of `text` parsed (the C loader when available: CRDs are megabytes)."""
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]


def write_yaml_files(objs: dict[str, Any], out_dir: str | Path, header: str) -> list[Path]:
    """Write each object as `header` + YAML under its relative path in `out_dir` (folders
    created as needed).

    Returns the files written, in `objs` order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, obj in objs.items():
        path = out / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + dump_yaml(obj))
        written.append(path)
    return written
