"""A simulated Kubernetes API server: the few KubeRay endpoints `easel scale` and `easel operator`
use, served over real HTTP on 127.0.0.1.

No Kubernetes API server can run here, so this stands in for one; the real `kubernetes` client
talks to it through an ordinary kubeconfig. It stores RayService / RayCluster / RayJob objects,
answers GET (one object or a list) and PATCH (JSON patch and merge patch, as the client sends
them), checks the bearer token, optionally validates every patched object against the KubeRay
CRD schemas, and records every call so tests can assert what the client did.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cluster._yaml import dump_yaml
from cluster.k8s_schema import SchemaSet

__all__ = ["ApiCall", "SimulatedKubeApi"]

_PLURALS = {"RayService": "rayservices", "RayCluster": "rayclusters", "RayJob": "rayjobs"}
_PATH = re.compile(
    r"^/apis/ray\.io/(?P<version>v1)/namespaces/(?P<ns>[^/]+)/(?P<plural>rayservices|rayclusters"
    r"|rayjobs)(?:/(?P<name>[^/]+))?$"
)
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ApiCall:
    """One request the simulated server answered."""

    method: str
    path: str
    content_type: str | None
    body: Any
    status: int


class _PatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SimulatedKubeApi:
    """The simulated API server; use as a context manager (`with SimulatedKubeApi(objs) as api`)."""

    def __init__(
        self,
        objects: list[dict[str, Any]] | None = None,
        token: str = "simulated-token",
        schemas: SchemaSet | None = None,
    ) -> None:
        self.token = token
        self.schemas = schemas
        self.calls: list[ApiCall] = []
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._version = 1
        for obj in objects or []:
            self.put(obj)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SimulatedKubeApi:
        """Listen on a free port of 127.0.0.1."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="simulated-k8s", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SimulatedKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulated API server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context ('simulated') points at this server."""
        path = Path(path)
        path.write_text(
            dump_yaml(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "simulated", "cluster": {"server": self.url}}],
                    "users": [{"name": "simulated", "user": {"token": self.token}}],
                    "contexts": [
                        {
                            "name": "simulated",
                            "context": {
                                "cluster": "simulated",
                                "user": "simulated",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "simulated",
                }
            )
        )
        return path

    # --- the store ---------------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> None:
        """Create or replace a KubeRay object (as `kubectl apply` of a rendered manifest would)."""
        kind = obj.get("kind")
        if kind not in _PLURALS:
            raise ValueError(f"the simulated API serves {sorted(_PLURALS)}, not {kind!r}")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self._lock:
            self._stamp(obj, generation=1)
            self._objects[(_PLURALS[kind], meta["namespace"], meta["name"])] = obj

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A copy of a stored object; KeyError when there is none."""
        with self._lock:
            return copy.deepcopy(self._objects[(plural, namespace, name)])

    def _stamp(self, obj: dict[str, Any], generation: int) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        obj["metadata"]["generation"] = generation

    # --- requests ----------------------------------------------------------------------------

    def _handle(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        content_type = headers.get("Content-Type")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._record(method, path, content_type, raw.decode(errors="replace"), 400)
        if headers.get("Authorization") != f"Bearer {self.token}":
            return self._record(method, path, content_type, body, 401, "Unauthorized")
        m = _PATH.match(path.split("?", 1)[0])
        if m is None:
            return self._record(method, path, content_type, body, 404, f"no route for {path}")
        key = (m["plural"], m["ns"], m["name"])
        with self._lock:
            if method == "GET" and m["name"] is None:
                items = [
                    copy.deepcopy(o)
                    for (p, ns, _), o in self._objects.items()
                    if p == m["plural"] and ns == m["ns"]
                ]
                kind = next(k for k, p in _PLURALS.items() if p == m["plural"])
                listing = {"apiVersion": "ray.io/v1", "kind": f"{kind}List", "items": items}
                return self._record(method, path, content_type, body, 200, result=listing)
            if key not in self._objects:
                return self._record(
                    method, path, content_type, body, 404, f'{m["plural"]} "{m["name"]}" not found'
                )
            if method == "GET":
                return self._record(
                    method, path, content_type, body, 200, result=copy.deepcopy(self._objects[key])
                )
            if method != "PATCH":
                return self._record(method, path, content_type, body, 405, f"{method} not served")
            try:
                updated = _apply_patch(self._objects[key], content_type, body)
                problems = self.schemas.validate(updated) if self.schemas else []
                if problems:
                    raise _PatchError(422, "; ".join(problems[:5]))
            except _PatchError as exc:
                return self._record(method, path, content_type, body, exc.status, str(exc))
            old = self._objects[key]
            generation = old["metadata"].get("generation", 1)
            if updated.get("spec") != old.get("spec"):
                generation += 1
            self._stamp(updated, generation)
            self._objects[key] = updated
            return self._record(
                method, path, content_type, body, 200, result=copy.deepcopy(updated)
            )

    def _record(
        self,
        method: str,
        path: str,
        content_type: str | None,
        body: Any,
        status: int,
        message: str = "",
        result: Any = None,
    ) -> tuple[int, Any]:
        self.calls.append(ApiCall(method, path, content_type, body, status))
        if status >= 400:
            # The shape of a Kubernetes `Status` failure, which the client turns into ApiException.
            result = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "code": status,
            }
        return status, result


def _apply_patch(obj: dict[str, Any], content_type: str | None, patch: Any) -> dict[str, Any]:
    base = (content_type or "").split(";", 1)[0].strip()
    if base == JSON_PATCH:
        if not isinstance(patch, list):
            raise _PatchError(400, "a JSON patch is a list of operations")
        doc = copy.deepcopy(obj)
        for op in patch:
            doc = _json_patch_op(doc, op)
        return doc
    if base == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise _PatchError(400, "a merge patch is an object")
        return _merge(copy.deepcopy(obj), patch)
    raise _PatchError(
        415, f"unsupported patch type {content_type!r} (use {JSON_PATCH} or {MERGE_PATCH})"
    )


def _json_patch_op(doc: Any, op: dict[str, Any]) -> Any:
    """One RFC 6902 operation (add, remove, replace, test)."""
    kind = op.get("op")
    parts = [
        p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]
    ]
    if not parts:
        raise _PatchError(422, "patching the whole object is not supported")
    parent = doc
    for p in parts[:-1]:
        parent = _child(parent, p, op)
    last = parts[-1]
    if kind == "test":
        if _child(parent, last, op) != op.get("value"):
            raise _PatchError(422, f"test failed at {op['path']}: value differs")
    elif kind == "replace":
        _child(parent, last, op)
        _set(parent, last, op.get("value"), op)
    elif kind == "add":
        if isinstance(parent, list):
            index = len(parent) if last == "-" else _index(parent, last, op, insert=True)
            parent.insert(index, op.get("value"))
        else:
            parent[last] = op.get("value")
    elif kind == "remove":
        _child(parent, last, op)
        if isinstance(parent, list):
            parent.pop(_index(parent, last, op))
        else:
            del parent[last]
    else:
        raise _PatchError(422, f"unsupported JSON patch op {kind!r}")
    return doc


def _child(node: Any, key: str, op: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, op)]
    if isinstance(node, dict) and key in node:
        return node[key]
    raise _PatchError(422, f"path {op.get('path')!r} does not exist")


def _set(node: Any, key: str, value: Any, op: dict[str, Any]) -> None:
    if isinstance(node, list):
        node[_index(node, key, op)] = value
    else:
        node[key] = value


def _index(node: list[Any], key: str, op: dict[str, Any], insert: bool = False) -> int:
    if not key.isdigit() or int(key) > len(node) - (0 if insert else 1):
        raise _PatchError(422, f"path {op.get('path')!r}: no list index {key}")
    return int(key)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: objects merge, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _handler(api: SimulatedKubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, result = api._handle(self.command, self.path, self.headers, raw)
            payload = json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # every call is in `api.calls`; keep test output clean

    return Handler


def _main(argv: list[str] | None = None) -> int:
    """`python -m cluster.simulated_k8s DIR --kubeconfig F`: rehearse `easel scale`/`operator`."""
    import argparse
    import time

    from cluster._yaml import load_yaml

    parser = argparse.ArgumentParser(
        prog="python -m cluster.simulated_k8s",
        description="Serve rendered KubeRay manifests from a simulated Kubernetes API on "
        "127.0.0.1 and write a kubeconfig for it; every call is printed. Ctrl-C stops it.",
    )
    parser.add_argument("manifests", help="folder of rendered manifests (easel k8s render --out)")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    args = parser.parse_args(argv)
    objects = [
        doc
        for path in sorted(Path(args.manifests).glob("*.yaml"))
        for doc in load_yaml(path.read_text())
        if doc.get("kind") in _PLURALS
    ]
    if not objects:
        parser.error(f"{args.manifests}: no RayService, RayCluster or RayJob manifests")
    with SimulatedKubeApi(objects) as api:
        api.write_kubeconfig(args.kubeconfig)
        print(f"simulated Kubernetes API at {api.url}; kubeconfig {args.kubeconfig}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for call in api.calls[seen:]:
                    print(f"{call.method} {call.path} -> {call.status} {json.dumps(call.body)}",
                          flush=True)  # fmt: skip
                seen = len(api.calls)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())
