"""Per-provider scaling on KubeRay, through what KubeRay honours.

Each provider is one RayService (`cluster.kuberay`). Two things scale it, and neither is the
RayService's `workerGroupSpecs[].replicas`, which KubeRay deliberately ignores (so that the
autoscaler does not trigger rollouts; kuberay PRs #1037 / #1734):

- **Serve autoscaling bounds** of a model's deployment, in the RayService's `serveConfigV2`.
  KubeRay resubmits a changed serveConfigV2 to the running cluster in place (no new cluster);
  Serve then adds or removes replicas within the new bounds, and the Ray autoscaler adds or
  removes worker pods to place them.
- **Worker group bounds** (`minReplicas`/`maxReplicas`) on the *live RayCluster*, whose generated
  name KubeRay reports in `status.activeServiceStatus.rayClusterName`; the autoscaler reads them
  from there. The same bounds are written into the RayService too, so the next cluster an
  upgrade brings up starts with them (the RayService's copies change nothing running).

Every patch is a JSON patch guarded by a `test` (the serveConfigV2 text it replaces, the group's
name at its index), so a concurrent edit makes the API server answer 422 instead of the patch
landing on something else; the scaler then re-reads and recomputes once. `dry_run` returns the
patches without sending them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from cluster.capacity import CapacityError, hosted_models, plan_provider
from cluster.kuberay import serve_deployment_name
from cluster.providers import replica_bounds
from config import EaselConfig, ProviderConfig

__all__ = [
    "ClusterState",
    "GroupScale",
    "Patch",
    "ProviderCluster",
    "ScaleApiError",
    "ScaleError",
    "ServeBounds",
    "custom_objects_api",
    "scale_provider",
]

GROUP, VERSION = "ray.io", "v1"
_JSON_PATCH = "application/json-patch+json"
_PLURAL = {"RayService": "rayservices", "RayCluster": "rayclusters"}


class ScaleError(RuntimeError):
    """The request makes no sense (unknown group, bounds that do not fit), or the API failed."""


class ScaleApiError(ScaleError):
    """The Kubernetes API could not be reached, refused, or kept changing under the patch."""


@dataclass(frozen=True)
class GroupScale:
    """A worker group's size as the live cluster reports it."""

    group: str
    replicas: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class ServeBounds:
    """A Serve deployment's replica bounds in serveConfigV2 (fixed: min == max)."""

    deployment: str
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Patch:
    """One JSON patch to one object, with what it is for."""

    kind: str
    namespace: str
    name: str
    ops: list[dict[str, Any]]
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "why": self.why,
            "patch": self.ops,
        }


@dataclass(frozen=True)
class ClusterState:
    """One provider's RayService and the RayCluster that runs it, as read."""

    rayservice: dict[str, Any]
    cluster: dict[str, Any] | None
    serve_text: str
    serve: dict[str, Any] = field(repr=False)

    @property
    def namespace(self) -> str:
        return str(self.rayservice["metadata"]["namespace"])

    @property
    def cluster_name(self) -> str | None:
        return None if self.cluster is None else str(self.cluster["metadata"]["name"])

    def serve_bounds(self) -> dict[str, ServeBounds]:
        """Every deployment override of serveConfigV2 with its bounds."""
        out = {}
        for app in self.serve.get("applications", []):
            for d in app.get("deployments", []):
                auto = d.get("autoscaling_config")
                if auto:
                    low, high = int(auto.get("min_replicas", 1)), int(auto["max_replicas"])
                elif "num_replicas" in d:
                    low = high = int(d["num_replicas"])
                else:
                    continue
                out[d["name"]] = ServeBounds(d["name"], low, high)
        return out

    def worker_groups(self) -> dict[str, GroupScale]:
        """The live cluster's worker groups (before it exists: the RayService's)."""
        spec = (
            self.cluster["spec"]
            if self.cluster is not None
            else self.rayservice["spec"]["rayClusterConfig"]
        )
        return {g.group: g for g in map(_scale_of, spec.get("workerGroupSpecs", []))}


def custom_objects_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A `CustomObjectsApi` from a kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."""
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as exc:
        where = f"{kubeconfig or '(default kubeconfig)'}, context {context or '(current)'}"
        raise ScaleApiError(f"cannot load kubeconfig {where}: {exc}") from None
    return client.CustomObjectsApi(api_client)


class ProviderCluster:
    """Reads and patches one provider's RayService and its live RayCluster."""

    def __init__(self, api: Any, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name

    def read(self) -> ClusterState:
        """The RayService and its live RayCluster (the active one; the pending one while the
        first is still coming up)."""
        rs = self._call("get", "RayService", self.name)
        status = rs.get("status") or {}
        cname = (status.get("activeServiceStatus") or {}).get("rayClusterName") or (
            status.get("pendingServiceStatus") or {}
        ).get("rayClusterName")
        cluster = self._call("get", "RayCluster", cname) if cname else None
        text = rs.get("spec", {}).get("serveConfigV2", "")
        try:
            serve = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ScaleError(f"{self._what()}: serveConfigV2 is not YAML: {exc}") from None
        return ClusterState(rs, cluster, text, serve)

    def apply(self, compute: Callable[[ClusterState], list[Patch]], dry_run: bool) -> list[Patch]:
        """Read, compute the patches, send them (unless `dry_run`); on a 422 (a guard's `test`
        failed: something changed under us) re-read and recompute once."""
        for attempt in range(2):
            patches = compute(self.read())
            if dry_run:
                return patches
            try:
                for p in patches:
                    self._call("patch", p.kind, p.name, body=p.ops)
            except _Conflict:
                if attempt == 0:
                    continue
                raise ScaleApiError(
                    f"{self._what()} kept changing while patching; try again"
                ) from None
            return patches
        raise AssertionError("unreachable")

    def _what(self) -> str:
        return f"RayService {self.namespace}/{self.name}"

    def _call(self, verb: str, kind: str, name: str, body: Any = None) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            if verb == "get":
                return self.api.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, _PLURAL[kind], name
                )
            return self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                _PLURAL[kind],
                name,
                body,
                _content_type=_JSON_PATCH,
            )
        except ApiException as exc:
            if verb == "patch" and exc.status == 422:
                raise _Conflict(_message(exc)) from None
            raise ScaleApiError(
                f"{kind} {self.namespace}/{name}: the API answered {exc.status}: {_message(exc)}"
            ) from None
        except HTTPError as exc:
            raise ScaleApiError(f"cannot reach the Kubernetes API: {exc}") from None


class _Conflict(Exception):
    pass


def scale_provider(
    cfg: EaselConfig,
    provider: ProviderConfig,
    cluster: ProviderCluster,
    *,
    serve: Mapping[str, tuple[int | None, int | None]] | None = None,
    workers: Mapping[str, tuple[int | None, int | None]] | None = None,
    dry_run: bool = False,
) -> list[Patch]:
    """Change a provider's Serve autoscaling bounds and/or worker group bounds; returns the
    patches (sent unless `dry_run`).

    Args:
        serve: per model, (min_replicas, max_replicas) of its deployment (None keeps one).
        workers: per worker group ('gpu', 'cpu'), (minReplicas, maxReplicas) (None keeps one).

    Raises:
        ScaleError: an unknown model or group, crossed or out-of-bounds values, bounds whose
            replicas would not fit the worker pods (naming the shortfall), or an API failure.
    """
    serve, workers = dict(serve or {}), dict(workers or {})
    if not serve and not workers:
        raise ScaleError("nothing to change: give Serve bounds and/or worker group bounds")
    hosted = {m.name: m for m in hosted_models(cfg, provider)}
    for model in serve:
        if model not in hosted:
            raise ScaleError(
                f"provider {provider.name!r} serves no model {model!r} (it serves {sorted(hosted)})"
            )

    def compute(state: ClusterState) -> list[Patch]:
        bounds = state.serve_bounds()
        live = state.worker_groups()
        # Serve bounds, per model: what they become.
        new_bounds: dict[str, tuple[int, int]] = {}
        for m in hosted:
            dep = serve_deployment_name(m, provider.name)
            now = bounds.get(dep)
            if now is None:
                raise ScaleError(
                    f"{cluster._what()}: serveConfigV2 has no deployment {dep!r} (has "
                    f"{sorted(bounds)}); re-render and apply the provider's manifests"
                )
            low, high = serve.get(m, (None, None))
            new_bounds[m] = (
                now.min_replicas if low is None else low,
                now.max_replicas if high is None else high,
            )
            _check_serve(m, *new_bounds[m])
        # Worker groups: what their maxReplicas become.
        for g in workers:
            if g not in live:
                raise ScaleError(
                    f"{cluster._what()}'s cluster has no worker group {g!r} (groups: "
                    f"{sorted(live)})"
                )
        new_groups = {}
        for g, scale in live.items():
            low, high = workers.get(g, (None, None))
            new_groups[g] = (
                scale.min_replicas if low is None else low,
                scale.max_replicas if high is None else high,
            )
            if g in workers:
                _check_group(provider, g, *new_groups[g])
        try:
            plan_provider(
                cfg, provider, bounds=new_bounds, group_max={g: b[1] for g, b in new_groups.items()}
            )
        except CapacityError as exc:
            raise ScaleError(str(exc)) from None
        patches = []
        if serve:
            patches.append(_serve_patch(state, provider, new_bounds))
        for g in workers:
            patches += _group_patches(state, g, *new_groups[g])
        return patches

    return cluster.apply(compute, dry_run)


def _check_serve(model: str, low: int, high: int) -> None:
    if low < 0 or high < 1:
        raise ScaleError(
            f"{model}: Serve needs min_replicas >= 0 and max_replicas >= 1, got {low}..{high}"
        )
    if low > high:
        raise ScaleError(f"{model}: min_replicas {low} exceeds max_replicas {high}")


def _check_group(provider: ProviderConfig, group: str, low: int, high: int) -> None:
    if low < 0 or high < 0:
        raise ScaleError(f"worker group {group!r}: bounds must be >= 0, got {low}..{high}")
    if low > high:
        raise ScaleError(f"worker group {group!r}: minReplicas {low} exceeds maxReplicas {high}")
    if group == "gpu":
        top = replica_bounds(provider)[1]
        if high > top:
            raise ScaleError(
                f"worker group 'gpu': maxReplicas {high} is outside provider {provider.name!r}'s "
                f"bounds (at most {top}: min(max_replicas, capacity / gpus_per_replica))"
            )


def _serve_patch(
    state: ClusterState, provider: ProviderConfig, bounds: dict[str, tuple[int, int]]
) -> Patch:
    serve = yaml.safe_load(state.serve_text)
    changed = []
    by_name = {serve_deployment_name(m, provider.name): b for m, b in bounds.items()}
    for app in serve.get("applications", []):
        for d in app.get("deployments", []):
            if d["name"] not in by_name:
                continue
            low, high = by_name[d["name"]]
            auto = dict(d.get("autoscaling_config") or {})
            old = (
                auto.get("min_replicas", d.get("num_replicas")),
                auto.get("max_replicas", d.get("num_replicas")),
            )
            d.pop("num_replicas", None)
            auto["min_replicas"], auto["max_replicas"] = low, high
            if "initial_replicas" in auto:
                auto["initial_replicas"] = min(max(auto["initial_replicas"], low), high)
            d["autoscaling_config"] = auto
            if old != (low, high):
                changed.append(f"{d['name']} {old[0]}..{old[1]} -> {low}..{high}")
    text = yaml.safe_dump(serve, sort_keys=False)
    rs = state.rayservice["metadata"]
    return Patch(
        "RayService",
        rs["namespace"],
        rs["name"],
        [
            {"op": "test", "path": "/spec/serveConfigV2", "value": state.serve_text},
            {"op": "replace", "path": "/spec/serveConfigV2", "value": text},
        ],
        "Serve autoscaling bounds (applied in place): " + ("; ".join(changed) or "unchanged"),
    )


def _group_patches(state: ClusterState, group: str, low: int, high: int) -> list[Patch]:
    patches = []
    targets = []
    if state.cluster is not None:
        targets.append(("RayCluster", state.cluster, "/spec", "the live cluster"))
    targets.append(
        (
            "RayService",
            state.rayservice,
            "/spec/rayClusterConfig",
            "for the next cluster an upgrade brings up",
        )
    )
    for kind, obj, base, why in targets:
        spec = obj["spec"] if kind == "RayCluster" else obj["spec"]["rayClusterConfig"]
        groups = spec.get("workerGroupSpecs", [])
        index = next((i for i, g in enumerate(groups) if g.get("groupName") == group), None)
        if index is None:
            continue
        path = f"{base}/workerGroupSpecs/{index}"
        now = _scale_of(groups[index])
        ops: list[dict[str, Any]] = [{"op": "test", "path": f"{path}/groupName", "value": group}]
        # 'add' sets a member whether or not the manifest spelled it out.
        ops.append({"op": "add", "path": f"{path}/minReplicas", "value": low})
        ops.append({"op": "add", "path": f"{path}/maxReplicas", "value": high})
        if kind == "RayService" and "replicas" in groups[index]:
            # Keep replicas within the new bounds, or KubeRay's validation rejects the spec.
            fit = min(max(now.replicas, low), high)
            ops.append({"op": "add", "path": f"{path}/replicas", "value": fit})
        meta = obj["metadata"]
        patches.append(
            Patch(
                kind,
                meta["namespace"],
                meta["name"],
                ops,
                f"worker group {group!r} {now.min_replicas}..{now.max_replicas} -> "
                f"{low}..{high} ({why})",
            )
        )
    return patches


def _scale_of(group: dict[str, Any]) -> GroupScale:
    # KubeRay's defaults for fields a manifest leaves out.
    return GroupScale(
        str(group.get("groupName")),
        int(group.get("replicas", group.get("minReplicas", 0))),
        int(group.get("minReplicas", 0)),
        int(group.get("maxReplicas", 2_147_483_647)),
    )


def _message(exc: Any) -> str:
    import json

    try:
        body = json.loads(exc.body)
    except (TypeError, ValueError):
        return str(exc.reason)
    message = str(body.get("message") or exc.reason)
    causes = [c.get("message") for c in (body.get("details") or {}).get("causes", [])]
    return message + "".join(f" ({c})" for c in causes if c)
