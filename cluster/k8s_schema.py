"""Offline validation of rendered manifests, the way a strict API server would see them.

KubeRay kinds are checked against the `openAPIV3Schema` of their CRDs (with unknown fields
rejected, as `kubectl apply --validate=strict` does); built-in kinds against the model classes
of the `kubernetes` client, which carry Kubernetes' own OpenAPI schema and forbid extra fields.
Nothing is downloaded.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cluster._yaml import load_yaml

__all__ = ["SchemaSet", "default_crd_dir", "load_schemas", "validate_files"]

# Built-in kinds we render or may render, by (apiVersion, kind): the client's model class name.
_BUILTIN_MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "PersistentVolume"): "V1PersistentVolume",
    ("v1", "Pod"): "V1Pod",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}


def default_crd_dir() -> Path:
    """The KubeRay CRDs vendored in the package (`cluster/crds/`, see its README)."""
    return Path(__file__).resolve().parent / "crds"


@functools.lru_cache(maxsize=4)
def load_schemas(crd_dir: str | Path) -> SchemaSet:
    """`SchemaSet(crd_dir)`, parsed once per process (the CRDs are megabytes of YAML)."""
    return SchemaSet(crd_dir)


class SchemaSet:
    """The CRD schemas found in a folder, by (apiVersion, kind)."""

    def __init__(self, crd_dir: str | Path) -> None:
        crd_dir = Path(crd_dir)
        if not crd_dir.is_dir():
            raise FileNotFoundError(f"{crd_dir}: no such CRD folder")
        self.crds: dict[tuple[str, str], dict[str, Any]] = {}
        self._validators: dict[tuple[str, str], Any] = {}
        for path in sorted(crd_dir.glob("*.yaml")):
            for doc in load_yaml(path.read_text()):
                if doc.get("kind") != "CustomResourceDefinition":
                    continue
                group = doc["spec"]["group"]
                kind = doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    schema = version["schema"]["openAPIV3Schema"]
                    self.crds[(f"{group}/{version['name']}", kind)] = _strict(schema)
        if not self.crds:
            raise FileNotFoundError(f"{crd_dir}: no CustomResourceDefinition in *.yaml")

    def validate(self, obj: dict[str, Any]) -> list[str]:
        """Problems with one object, each naming its field path; empty when it validates."""
        if not isinstance(obj, dict):
            return [f"<top level>: a manifest must be a mapping, got {type(obj).__name__}"]
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in self.crds:
            import jsonschema

            if key not in self._validators:
                self._validators[key] = jsonschema.Draft7Validator(self.crds[key])
            validator = self._validators[key]
            errors = [
                f"{_path(e.absolute_path)}: {e.message}"
                for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            ]
            # The CRD schema leaves metadata open; the API server checks it as ObjectMeta.
            errors += _model_errors(obj.get("metadata", {}), "V1ObjectMeta", "metadata")
            return errors
        if key in _BUILTIN_MODELS:
            return _model_errors(obj, _BUILTIN_MODELS[key], "")
        known = sorted(f"{a} {k}" for a, k in [*self.crds, *_BUILTIN_MODELS])
        return [f"<top level>: no schema for {key[0]} {key[1]} (known: {', '.join(known)})"]


def validate_files(paths: Iterable[str | Path], schemas: SchemaSet) -> dict[str, list[str]]:
    """Problems per file (every YAML document in it); files without problems map to []."""
    report = {}
    for path in paths:
        problems = []
        for i, doc in enumerate(load_yaml(Path(path).read_text())):
            problems += [f"document {i}: {p}" for p in schemas.validate(doc)]
        report[str(path)] = problems
    return report


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy where every object with declared properties rejects undeclared ones."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def _model_errors(obj: Any, model: str, prefix: str) -> list[str]:
    from kubernetes import client
    from pydantic import ValidationError

    try:
        getattr(client, model).model_validate(obj)
    except ValidationError as exc:
        return [
            f"{_path([prefix, *e['loc']] if prefix else e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
    return []


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"
