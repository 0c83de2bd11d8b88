"""Per-provider scaling on KubeRay: each provider is one worker group of the RayService (or
RayCluster), and scaling it patches that group's `replicas` / `minReplicas` / `maxReplicas`
through the `kubernetes` client.

Patches are JSON patches addressed by list index and guarded by a `test` of the group's name, so
a concurrent edit that reorders the groups makes the patch fail instead of scaling the wrong
provider; the scaler then re-reads and tries once more. On a RayService KubeRay applies worker
replica changes to the running cluster in place, without a new cluster or a Serve redeploy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GroupScale", "ScaleError", "Scaler", "custom_objects_api"]

GROUP, VERSION = "ray.io", "v1"
# Where the RayCluster spec sits in each kind.
_CLUSTER_SPEC = {
    "rayservice": ("rayservices", "/spec/rayClusterConfig"),
    "raycluster": ("rayclusters", "/spec"),
}
_JSON_PATCH = "application/json-patch+json"


class ScaleError(RuntimeError):
    """The API refused or the request made no sense (unknown group, bounds crossed)."""


@dataclass(frozen=True)
class GroupScale:
    """A worker group's size as the API reports it."""

    group: str
    replicas: int
    min_replicas: int
    max_replicas: int


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A `CustomObjectsApi` from a kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as exc:
        raise ScaleError(f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}") from None
    return client.CustomObjectsApi(api_client)


class Scaler:
    """Reads and patches the worker groups of one RayService or RayCluster."""

    def __init__(self, api: Any, namespace: str, name: str, kind: str = "rayservice") -> None:
        if kind not in _CLUSTER_SPEC:
            raise ValueError(f"kind must be one of {sorted(_CLUSTER_SPEC)}, got {kind!r}")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.kind = kind
        self._plural, self._spec_path = _CLUSTER_SPEC[kind]

    def groups(self) -> dict[str, GroupScale]:
        """Every worker group by name."""
        return {g.group: g for g in (_scale_of(w) for w in self._worker_groups(self._read()))}

    def scale(
        self,
        group: str,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
    ) -> GroupScale:
        """Set any of the group's replicas and bounds; returns the group as patched.

        Raises ScaleError for an unknown group, values that would leave min <= replicas <= max,
        or an API failure (with its status and message).
        """
        if replicas is None and min_replicas is None and max_replicas is None:
            raise ScaleError("nothing to change: give replicas, min_replicas or max_replicas")
        for label, value in (
            ("replicas", replicas),
            ("min_replicas", min_replicas),
            ("max_replicas", max_replicas),
        ):
            if value is not None and value < 0:
                raise ScaleError(f"{label} must be >= 0, got {value}")
        for attempt in range(2):
            groups = self._worker_groups(self._read())
            index = next((i for i, w in enumerate(groups) if w.get("groupName") == group), None)
            if index is None:
                known = [w.get("groupName") for w in groups]
                raise ScaleError(
                    f"{self.kind} {self.namespace}/{self.name} has no worker group {group!r} "
                    f"(groups: {known})"
                )
            now = _scale_of(groups[index])
            new = GroupScale(
                group,
                now.replicas if replicas is None else replicas,
                now.min_replicas if min_replicas is None else min_replicas,
                now.max_replicas if max_replicas is None else max_replicas,
            )
            if not new.min_replicas <= new.replicas <= new.max_replicas:
                raise ScaleError(
                    f"group {group!r}: replicas {new.replicas} must lie within "
                    f"minReplicas {new.min_replicas} and maxReplicas {new.max_replicas}"
                )
            base = f"{self._spec_path}/workerGroupSpecs/{index}"
            patch: list[dict[str, Any]] = [
                {"op": "test", "path": f"{base}/groupName", "value": group}
            ]
            for field, value in (
                ("replicas", replicas),
                ("minReplicas", min_replicas),
                ("maxReplicas", max_replicas),
            ):
                if value is not None:
                    # 'add' sets a field whether or not the manifest spelled it out.
                    patch.append({"op": "add", "path": f"{base}/{field}", "value": value})
            try:
                updated = self._call(
                    self.api.patch_namespaced_custom_object,
                    body=patch,
                    _content_type=_JSON_PATCH,
                )
            except ScaleError as exc:
                if attempt == 0 and "test failed" in str(exc):
                    continue  # the groups moved under us: read again
                raise
            return _scale_of(self._worker_groups(updated)[index])
        raise ScaleError(f"group {group!r} kept moving while patching; try again")

    def _read(self) -> dict[str, Any]:
        return self._call(self.api.get_namespaced_custom_object)

    def _call(self, method: Any, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(GROUP, VERSION, self.namespace, self._plural, self.name, **kwargs)
        except ApiException as exc:
            raise ScaleError(
                f"{self.kind} {self.namespace}/{self.name}: API answered {exc.status}: "
                f"{_message(exc)}"
            ) from None
        except HTTPError as exc:
            raise ScaleError(f"cannot reach the Kubernetes API: {exc}") from None

    def _worker_groups(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        node: Any = obj
        for key in self._spec_path.strip("/").split("/"):
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return list(node.get("workerGroupSpecs", []))


def _scale_of(group: dict[str, Any]) -> GroupScale:
    # KubeRay's defaults for fields a manifest leaves out.
    return GroupScale(
        str(group.get("groupName")),
        int(group.get("replicas", 0)),
        int(group.get("minReplicas", 0)),
        int(group.get("maxReplicas", 2_147_483_647)),
    )


def _message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
