"""YAML as people read it in a manifest: no anchors, multi-line strings as literal blocks."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["dump_yaml", "load_yaml"]

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
