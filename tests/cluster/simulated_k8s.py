"""A simulated Kubernetes API server over real HTTP on 127.0.0.1, for the tests (and rehearsals).

No Kubernetes API server can run here, so this stands in for one; the real `kubernetes` client
talks to it through an ordinary kubeconfig. It behaves as the real one does where easel's code
depends on it:

- namespaced objects of any kind the tests load, addressed as the API server does
  (`/api/v1/namespaces/<ns>/<plural>/<name>`, `/apis/<group>/<version>/namespaces/...`), with
  GET, list, POST (create), PUT (replace, 409 on a stale resourceVersion), PATCH (JSON patch
  RFC 6902 and merge patch RFC 7386) and DELETE;
- KubeRay's kinds have a `status` subresource: writes to the object leave `status` alone, writes
  to `<name>/status` change only it, and `metadata.generation` counts spec changes only;
- a JSON patch that cannot be applied (a `test` that fails, a path that is missing) answers 422
  with the API server's generic message, "the server rejected our request due to an error in
  our request", the reason in `details.causes` (k8s.io/apiserver, handlers/patch.go);
- an optional strict schema check of every written KubeRay object against its CRD (422
  `Invalid`, as `kubectl apply --validate=strict` sees it);
- a bearer token; and every call is recorded in `calls` for the tests to assert on.

Controllers (`tests.cluster.simulated_kuberay`) register with `watch(fn)` and are told of every
write, as informers tell real controllers; their own writes go through `store_*` without HTTP.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cluster._yaml import dump_yaml
from cluster.k8s_schema import SchemaSet

__all__ = ["JSON_PATCH", "MERGE_PATCH", "ApiCall", "SimulatedKubeApi", "plural_of"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
GENERIC_422 = "the server rejected our request due to an error in our request"
# (apiVersion, kind) -> plural; kinds with a status subresource are KubeRay's.
_PLURALS = {
    ("ray.io/v1", "RayService"): "rayservices",
    ("ray.io/v1", "RayCluster"): "rayclusters",
    ("ray.io/v1", "RayJob"): "rayjobs",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
}
_WITH_STATUS = {"rayservices", "rayclusters", "rayjobs"}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)"
    r"/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?P<status>/status)?)?$"
)
Key = tuple[str, str, str, str]  # (apiVersion, plural, namespace, name)


def plural_of(obj: dict[str, Any]) -> str:
    """The resource plural of an object's kind."""
    return _PLURALS[(obj.get("apiVersion", ""), obj.get("kind", ""))]


@dataclass(frozen=True)
class ApiCall:
    """One request the simulated server answered."""

    method: str
    path: str
    content_type: str | None
    body: Any
    status: int


class _Reject(Exception):
    def __init__(self, status: int, message: str, reason: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.status, self.reason, self.cause = status, reason, cause


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
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._version = 1
        self._watchers: list[Callable[[str, dict[str, Any]], None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for obj in objects or []:
            self.apply(obj)

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

    def write_kubeconfig(
        self,
        path: str | Path,
        namespace: str = "default",
        context: str = "simulated",
        others: dict[str, SimulatedKubeApi] | None = None,
    ) -> Path:
        """A kubeconfig whose current context (`context`) points at this server; `others` adds
        one context per further server (several Kubernetes clusters, one per provider)."""
        servers = {context: self, **(others or {})}
        path = Path(path)
        path.write_text(
            dump_yaml(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": n, "cluster": {"server": s.url}} for n, s in servers.items()
                    ],
                    "users": [{"name": n, "user": {"token": s.token}} for n, s in servers.items()],
                    "contexts": [
                        {"name": n, "context": {"cluster": n, "user": n, "namespace": namespace}}
                        for n in servers
                    ],
                    "current-context": context,
                }
            )
        )
        return path

    # --- the store (what `kubectl apply` and controllers do) ---------------------------------

    def watch(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Call `fn(event, obj)` after every write through the API ('ADDED', 'MODIFIED',
        'DELETED'), as an informer would."""
        self._watchers.append(fn)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update an object as `kubectl apply` would (status kept); tells watchers."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = self._key(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None:
                obj["status"] = copy.deepcopy(old.get("status", {}))
                for field in ("uid", "creationTimestamp", "ownerReferences"):
                    if field in old["metadata"]:
                        meta.setdefault(field, old["metadata"][field])
            self._write(key, obj, old)
        self._notify("MODIFIED" if old else "ADDED", obj)
        return copy.deepcopy(obj)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A copy of a stored object; KeyError when there is none."""
        with self._lock:
            for (_, p, ns, n), obj in self._objects.items():
                if (p, ns, n) == (plural, namespace, name):
                    return copy.deepcopy(obj)
        raise KeyError((plural, namespace, name))

    def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of every stored object of a kind (in one namespace, or all)."""
        with self._lock:
            return [
                copy.deepcopy(o)
                for (_, p, ns, _), o in self._objects.items()
                if p == plural and namespace in (None, ns)
            ]

    def store_put(self, obj: dict[str, Any], *, status_only: bool = False) -> dict[str, Any]:
        """A controller's write (no HTTP, no watchers): the whole object, or only its status."""
        key = self._key(obj)
        with self._lock:
            old = self._objects.get(key)
            if status_only:
                if old is None:
                    raise KeyError(key)
                new = copy.deepcopy(old)
                new["status"] = copy.deepcopy(obj.get("status", {}))
            else:
                new = copy.deepcopy(obj)
            self._write(key, new, old)
            return copy.deepcopy(new)

    def store_delete(self, plural: str, namespace: str, name: str) -> None:
        """A controller's delete (no HTTP, no watchers)."""
        with self._lock:
            for key in [k for k in self._objects if k[1:] == (plural, namespace, name)]:
                del self._objects[key]

    def _key(self, obj: dict[str, Any]) -> Key:
        kind = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if kind not in _PLURALS:
            raise ValueError(f"the simulated API serves {sorted(_PLURALS)}, not {kind}")
        meta = obj["metadata"]
        return (kind[0], _PLURALS[kind], meta.get("namespace", "default"), meta["name"])

    def _write(self, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("uid", f"uid-{self._version}")
        generation = 1 if old is None else old["metadata"].get("generation", 1)
        if old is not None and obj.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = generation
        self._objects[key] = obj

    def _notify(self, event: str, obj: dict[str, Any]) -> None:
        for fn in list(self._watchers):
            fn(event, copy.deepcopy(obj))

    # --- requests ----------------------------------------------------------------------------

    def _handle(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        content_type = headers.get("Content-Type")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._fail(
                    method,
                    path,
                    content_type,
                    raw.decode(errors="replace"),
                    _Reject(400, "the request body is not JSON", "BadRequest"),
                )
        if headers.get("Authorization") != f"Bearer {self.token}":
            return self._fail(
                method, path, content_type, body, _Reject(401, "Unauthorized", "Unauthorized")
            )
        m = _PATH.match(path.split("?", 1)[0])
        if m is None:
            reject = _Reject(
                404, f"the server could not find the requested resource ({path})", "NotFound"
            )
            return self._fail(method, path, content_type, body, reject)
        api_version = "v1" if m["core"] else f"{m['group']}/{m['version']}"
        plural, ns, name, status = m["plural"], m["ns"], m["name"], bool(m["status"])
        try:
            result, event = self._serve(
                method, api_version, plural, ns, name, status, content_type, body
            )
        except _Reject as exc:
            return self._fail(method, path, content_type, body, exc)
        self.calls.append(ApiCall(method, path, content_type, body, 200))
        if event:
            self._notify(event, result)
        return 200, result

    def _serve(
        self,
        method: str,
        api_version: str,
        plural: str,
        ns: str,
        name: str | None,
        status: bool,
        content_type: str | None,
        body: Any,
    ) -> tuple[Any, str | None]:
        kinds = [k for (v, k), p in _PLURALS.items() if p == plural and v == api_version]
        if not kinds:
            raise _Reject(
                404, f"the server could not find the requested resource ({plural})", "NotFound"
            )
        kind = kinds[0]
        resource = f"{plural}.{api_version.split('/')[0]}" if "/" in api_version else plural
        with self._lock:
            if name is None:
                if method == "GET":
                    items = self.list(plural, ns)
                    return {
                        "apiVersion": api_version,
                        "kind": f"{kind}List",
                        "items": items,
                        "metadata": {"resourceVersion": str(self._version)},
                    }, None
                if method == "POST":
                    return self._create(api_version, kind, plural, ns, body, resource), "ADDED"
                raise _Reject(405, f"{method} is not allowed on a list", "MethodNotAllowed")
            key = (api_version, plural, ns, name)
            old = self._objects.get(key)
            if old is None:
                raise _Reject(404, f'{resource} "{name}" not found', "NotFound")
            if method == "GET":
                return copy.deepcopy(old), None
            if method == "DELETE":
                del self._objects[key]
                return {"kind": "Status", "apiVersion": "v1", "status": "Success"}, "DELETED"
            if method == "PUT":
                new = copy.deepcopy(body)
                sent = (body or {}).get("metadata", {}).get("resourceVersion")
                if sent and sent != old["metadata"]["resourceVersion"]:
                    raise _Reject(
                        409,
                        f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                        "been modified; please apply your changes to the latest version and try "
                        "again",
                        "Conflict",
                    )
            elif method == "PATCH":
                new = _apply_patch(old, content_type, body)
            else:
                raise _Reject(405, f"{method} is not allowed", "MethodNotAllowed")
            new = self._subresource(plural, old, new, status)
            self._check(new, kind, name)
            self._write(key, new, old)
            return copy.deepcopy(new), "MODIFIED"

    def _create(
        self, api_version: str, kind: str, plural: str, ns: str, body: Any, resource: str
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body or {})
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        name = meta.get("name")
        if not name:
            raise _Reject(422, f"{kind} is invalid: metadata.name: Required value", "Invalid")
        key = (api_version, plural, ns, name)
        if key in self._objects:
            raise _Reject(409, f'{resource} "{name}" already exists', "AlreadyExists")
        if plural in _WITH_STATUS:
            obj.pop("status", None)
        self._check(obj, kind, name)
        self._write(key, obj, None)
        return copy.deepcopy(obj)

    def _subresource(
        self, plural: str, old: dict[str, Any], new: dict[str, Any], status: bool
    ) -> dict[str, Any]:
        if plural not in _WITH_STATUS:
            return new
        if status:
            # /status changes the status and nothing else.
            out = copy.deepcopy(old)
            out["status"] = new.get("status", {})
            return out
        new["status"] = copy.deepcopy(old.get("status", {}))
        new["metadata"] = {
            **new.get("metadata", {}),
            "name": old["metadata"]["name"],
            "namespace": old["metadata"]["namespace"],
        }
        return new

    def _check(self, obj: dict[str, Any], kind: str, name: str) -> None:
        if self.schemas is None or (obj.get("apiVersion"), kind) not in self.schemas.crds:
            return
        body = {k: v for k, v in obj.items() if k != "status"}
        meta = {
            k: v
            for k, v in body.get("metadata", {}).items()
            if k not in ("resourceVersion", "generation", "uid")
        }
        problems = self.schemas.validate({**body, "metadata": meta})
        if problems:
            raise _Reject(
                422, f'{kind} "{name}" is invalid: [{", ".join(problems[:5])}]', "Invalid"
            )

    def _fail(
        self, method: str, path: str, content_type: str | None, body: Any, exc: _Reject
    ) -> tuple[int, Any]:
        self.calls.append(ApiCall(method, path, content_type, body, exc.status))
        # A Kubernetes `Status`, which the client turns into ApiException.
        result: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": str(exc),
            "reason": exc.reason,
            "code": exc.status,
        }
        if exc.cause:
            result["details"] = {
                "causes": [{"reason": "UnexpectedServerResponse", "message": exc.cause}]
            }
        return exc.status, result


def _apply_patch(obj: dict[str, Any], content_type: str | None, patch: Any) -> dict[str, Any]:
    base = (content_type or "").split(";", 1)[0].strip()
    if base == JSON_PATCH:
        if not isinstance(patch, list):
            raise _Reject(
                400,
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                "BadRequest",
            )
        doc = copy.deepcopy(obj)
        try:
            for op in patch:
                doc = _json_patch_op(doc, op)
        except _PatchFailed as exc:
            # handlers/patch.go: NewGenericServerResponse(422, ...) with jsonpatch's error.
            raise _Reject(422, GENERIC_422, "Invalid", str(exc)) from None
        return doc
    if base == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise _Reject(400, "a merge patch is a JSON object", "BadRequest")
        return _merge(copy.deepcopy(obj), patch)
    raise _Reject(
        415,
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{JSON_PATCH}, {MERGE_PATCH}",
        "UnsupportedMediaType",
    )


class _PatchFailed(Exception):
    """What evanphx/json-patch reports; the API server wraps it in its generic 422."""


def _json_patch_op(doc: Any, op: dict[str, Any]) -> Any:
    """One RFC 6902 operation (add, remove, replace, test)."""
    kind = op.get("op")
    path = str(op.get("path", ""))
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    if not parts:
        raise _PatchFailed(f"{kind} operation on the whole document is not supported")
    parent = doc
    for p in parts[:-1]:
        parent = _child(parent, p, kind, path)
    last = parts[-1]
    if kind == "test":
        if _child(parent, last, kind, path) != op.get("value"):
            raise _PatchFailed(f"testing value {path} failed: test failed")
    elif kind == "replace":
        _child(parent, last, kind, path)
        if isinstance(parent, list):
            parent[_index(parent, last, kind, path)] = op.get("value")
        else:
            parent[last] = op.get("value")
    elif kind == "add":
        if isinstance(parent, list):
            index = len(parent) if last == "-" else _index(parent, last, kind, path, insert=True)
            parent.insert(index, op.get("value"))
        elif isinstance(parent, dict):
            parent[last] = op.get("value")
        else:
            raise _PatchFailed(f"add operation does not apply: doc is missing path: {path!r}")
    elif kind == "remove":
        _child(parent, last, kind, path)
        if isinstance(parent, list):
            parent.pop(_index(parent, last, kind, path))
        else:
            del parent[last]
    else:
        raise _PatchFailed(f"unexpected operation {kind!r}")
    return doc


def _child(node: Any, key: str, kind: Any, path: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, kind, path)]
    if isinstance(node, dict) and key in node:
        return node[key]
    raise _PatchFailed(f"{kind} operation does not apply: doc is missing path: {path!r}")


def _index(node: list[Any], key: str, kind: Any, path: str, insert: bool = False) -> int:
    if not key.isdigit() or int(key) > len(node) - (0 if insert else 1):
        raise _PatchFailed(f"{kind} operation does not apply: doc is missing path: {path!r}")
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
    """`python -m tests.cluster.simulated_k8s DIR --kubeconfig F`: rehearse `easel scale` and
    `easel operator` against one provider's rendered folder, with the simulated KubeRay
    controller running it."""
    import argparse
    import time

    from cluster._yaml import load_yaml
    from tests.cluster.simulated_kuberay import SimulatedKubeRay

    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.simulated_k8s",
        description="Serve rendered manifests from a simulated Kubernetes API (with a simulated "
        "KubeRay controller) on 127.0.0.1 and write a kubeconfig for it; every call is printed. "
        "Ctrl-C stops it.",
    )
    parser.add_argument("manifests", help="a provider's folder of `easel k8s render --out`")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--context", default="simulated", help="the kubeconfig context's name")
    args = parser.parse_args(argv)
    objects = [
        doc
        for path in sorted(Path(args.manifests).glob("*.yaml"))
        for doc in load_yaml(path.read_text())
        if (doc.get("apiVersion"), doc.get("kind")) in _PLURALS
    ]
    if not objects:
        parser.error(f"{args.manifests}: no manifests of a kind the simulated API serves")
    with SimulatedKubeApi() as api:
        SimulatedKubeRay(api)
        for obj in objects:
            api.apply(obj)
        api.write_kubeconfig(args.kubeconfig, context=args.context)
        print(f"simulated Kubernetes API at {api.url}; kubeconfig {args.kubeconfig}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for call in api.calls[seen:]:
                    print(
                        f"{call.method} {call.path} -> {call.status} {json.dumps(call.body)}",
                        flush=True,
                    )
                seen = len(api.calls)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())
