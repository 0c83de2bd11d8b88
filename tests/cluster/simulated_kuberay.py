"""A simulated KubeRay operator (v1.7.0 semantics) reconciling RayServices on the simulated API.

What it does is what ray-operator/controllers/ray/rayservice_controller.go does, for the parts
easel depends on (each rule names the function it follows):

- A new RayService gets a RayCluster with a generated name, `<rayservice>-<5 random chars>`
  (`utils.GenerateRayClusterName`), recorded as `status.pendingServiceStatus.rayClusterName`,
  owned by the RayService, annotated with the hash of its spec
  (`GenerateHashWithoutReplicasAndWorkersToDelete`) and its number of worker groups.
- The hash leaves out each worker group's `replicas`, `minReplicas`, `maxReplicas`,
  `scaleStrategy.workersToDelete`, the pods' tolerations and scheduling gates, and the
  cluster's `upgradeStrategy` and `suspend` (`rayClusterSpecForHashing`): changing only those on
  the RayService changes nothing, on purpose (kuberay PRs #1037, #1734).
- Any other change to `rayClusterConfig` prepares a new pending cluster with a new name
  (`shouldPrepareNewCluster`) unless `upgradeStrategy.type` is `None`; worker groups appended at
  the end update the active cluster in place instead (`isClusterSpecHashEqual(partial=true)`).
- Once a cluster is ready its Serve applications are submitted; a `serveConfigV2` that differs
  from the one last submitted to that cluster is submitted again, in place, to the same cluster
  (`checkIfNeedSubmitServeApplications`). A config Ray Serve refuses (its own schema, or a
  deployment override that names no deployment of the app) leaves the app `DEPLOY_FAILED`.
- When the pending cluster serves, it becomes the active one (`reconcilePromotionAndServingStatus`)
  and the old one is deleted `rayClusterDeletionDelaySeconds` later (`cleanUpRayClusterInstance`,
  default 60 s; `tick()` advances the simulated clock).
- The RayService's status reports both clusters, their applications, `serviceStatus` and the
  `Ready` / `UpgradeInProgress` conditions.

Pods never exist here: a cluster is ready at once (`auto_ready`), or when `make_ready(name)` says.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import string
from collections.abc import Iterable
from typing import Any

import yaml

from tests.cluster.simulated_k8s import SimulatedKubeApi

__all__ = ["KUBERAY_VERSION", "SimulatedKubeRay"]

KUBERAY_VERSION = "v1.7.0"
HASH_KEY = "ray.io/hash-without-replicas-and-workers-to-delete"
NUM_GROUPS_KEY = "ray.io/num-worker-groups"
_DEFAULT_DELETION_DELAY_S = 60
_MAX_RAYSERVICE_NAME = 47


class SimulatedKubeRay:
    """Watches the simulated API and reconciles every RayService on each write.

    Args:
        api: the simulated API server.
        auto_ready: clusters are ready as soon as they are created (else: `make_ready`).
        app_deployments: per application name, the deployments its import path builds; a
            serveConfigV2 override naming another deployment fails as Ray Serve fails it.
        seed: for the generated cluster names.
    """

    def __init__(
        self,
        api: SimulatedKubeApi,
        *,
        auto_ready: bool = True,
        app_deployments: dict[str, Iterable[str]] | None = None,
        seed: int = 0,
    ) -> None:
        self.api = api
        self.auto_ready = auto_ready
        self.app_deployments = {k: set(v) for k, v in (app_deployments or {}).items()}
        self.now = 0.0
        self.ready: set[str] = set()
        # cluster name -> every serveConfigV2 submitted to it, in order
        self.submissions: dict[str, list[str]] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self._deadlines: dict[tuple[str, str], float] = {}
        self._rng = random.Random(seed)
        self._busy = False
        api.watch(self._on_event)
        for rs in api.list("rayservices"):
            self.reconcile(rs["metadata"]["namespace"], rs["metadata"]["name"])

    # --- driving the simulation --------------------------------------------------------------

    def make_ready(self, cluster: str) -> None:
        """The cluster's pods are up: reconcile what it belongs to."""
        self.ready.add(cluster)
        self.reconcile_all()

    def tick(self, seconds: float) -> None:
        """Advance the simulated clock (deletion delays) and reconcile."""
        self.now += seconds
        self.reconcile_all()

    def reconcile_all(self) -> None:
        for rs in self.api.list("rayservices"):
            self.reconcile(rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _on_event(self, event: str, obj: dict[str, Any]) -> None:
        if self._busy:
            return
        kind = obj.get("kind")
        ns = obj["metadata"].get("namespace", "default")
        if kind == "RayService" and event != "DELETED":
            self.reconcile(ns, obj["metadata"]["name"])
        elif kind == "RayCluster":
            owner = obj["metadata"].get("labels", {}).get("ray.io/originated-from-cr-name")
            if owner:
                self.reconcile(ns, owner)

    # --- the reconciler ----------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> None:
        """One pass of the RayService controller over `namespace/name`."""
        try:
            rs = self.api.get("rayservices", namespace, name)
        except KeyError:
            return
        self._busy = True
        try:
            self._reconcile(rs)
        finally:
            self._busy = False

    def _reconcile(self, rs: dict[str, Any]) -> None:
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        status = rs.setdefault("status", {})
        problem = _validate(rs)
        if problem:
            _condition(status, "Ready", "False", "ValidationFailed", problem)
            self.api.store_put(rs, status_only=True)
            return
        active_name = status.get("activeServiceStatus", {}).get("rayClusterName", "")
        pending_name = status.get("pendingServiceStatus", {}).get("rayClusterName", "")
        self._clean_up(rs, active_name, pending_name)
        active = self._cluster(ns, active_name)
        pending = self._cluster(ns, pending_name)
        goal = rs["spec"]["rayClusterConfig"]
        strategy = (rs["spec"].get("upgradeStrategy") or {}).get("type", "NewCluster")

        if pending_name and pending is None:
            pending = self._create_cluster(rs, pending_name)
        # Worker groups appended at the end: update the cluster in place (shouldUpdateCluster).
        for cluster in (active, pending):
            if (
                cluster is not None
                and _hash(goal) != _annotation(cluster, HASH_KEY)
                and _hash(goal, groups=_num_groups(cluster)) == _annotation(cluster, HASH_KEY)
            ):
                self._update_cluster(rs, cluster)
        # A different spec: prepare a new cluster (shouldPrepareNewCluster), unless strategy None.
        current = pending or active
        if current is None or (
            _hash(goal) != _annotation(current, HASH_KEY)
            and _hash(goal, groups=_num_groups(current)) != _annotation(current, HASH_KEY)
            and strategy != "None"
        ):
            pending_name = f"{name}-{self._suffix()}"
            status["pendingServiceStatus"] = {"rayClusterName": pending_name}
            pending = self._create_cluster(rs, pending_name)

        # Serve: the pending cluster if any, else the active one.
        target = pending or active
        apps: dict[str, Any] = {}
        if target is not None and self._is_ready(target):
            apps = self._reconcile_serve(rs, target)
        serving = bool(apps) and all(a["status"] == "RUNNING" for a in apps.values())
        if pending is not None and target is pending:
            status["pendingServiceStatus"] = {
                "rayClusterName": pending["metadata"]["name"],
                "applications": apps,
                "rayClusterStatus": pending.get("status", {}),
            }
            if serving:  # the Serve Service now points at it: promote
                status["activeServiceStatus"] = status["pendingServiceStatus"]
                status["pendingServiceStatus"] = {}
                active, pending = pending, None
        elif active is not None:
            status["activeServiceStatus"] = {
                "rayClusterName": active["metadata"]["name"],
                "applications": apps or status.get("activeServiceStatus", {}).get("applications"),
                "rayClusterStatus": active.get("status", {}),
            }
        self._clean_up(rs, *_names(status))
        active_apps = status.get("activeServiceStatus", {}).get("applications") or {}
        running = bool(active_apps) and all(a["status"] == "RUNNING" for a in active_apps.values())
        status["serviceStatus"] = "Running" if running else "NotRunning"
        status["numServeEndpoints"] = 1 if running else 0
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        if running:
            _condition(
                status,
                "Ready",
                "True",
                "NonZeroServeEndpoints",
                "Number of serve endpoints is greater than 0",
            )
        else:
            _condition(status, "Ready", "False", "Initializing", "RayService is initializing")
        both = all(_names(status))
        _condition(
            status,
            "UpgradeInProgress",
            "True" if both else "False",
            "BothActivePendingClustersExist" if both else "NoPendingCluster",
            "",
        )
        self.api.store_put(rs, status_only=True)

    def _reconcile_serve(self, rs: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
        cname = cluster["metadata"]["name"]
        text = rs["spec"].get("serveConfigV2", "")
        history = self.submissions.setdefault(cname, [])
        if not history or history[-1] != text:
            history.append(text)  # (re)submitted to the same cluster: an in-place update
        status = cluster.setdefault("status", {})
        status["serveApplications"] = _serve_status(text, self.app_deployments)
        self.api.store_put(cluster, status_only=True)
        return status["serveApplications"]

    def _create_cluster(self, rs: dict[str, Any], cname: str) -> dict[str, Any]:
        ns = rs["metadata"]["namespace"]
        spec = copy.deepcopy(rs["spec"]["rayClusterConfig"])
        cluster = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {
                "name": cname,
                "namespace": ns,
                "labels": {
                    **rs["metadata"].get("labels", {}),
                    "ray.io/originated-from-cr-name": rs["metadata"]["name"],
                    "ray.io/originated-from-crd": "RayService",
                },
                "annotations": {
                    **rs["metadata"].get("annotations", {}),
                    HASH_KEY: _hash(spec),
                    NUM_GROUPS_KEY: str(len(spec.get("workerGroupSpecs", []))),
                    "ray.io/kuberay-version": KUBERAY_VERSION,
                },
                "ownerReferences": [
                    {
                        "apiVersion": "ray.io/v1",
                        "kind": "RayService",
                        "name": rs["metadata"]["name"],
                        "uid": rs["metadata"].get("uid", ""),
                        "controller": True,
                    }
                ],
            },
            "spec": spec,
            "status": {"state": "ready" if self.auto_ready else ""},
        }
        if self.auto_ready:
            self.ready.add(cname)
        self.created.append(cname)
        return self.api.store_put(cluster)

    def _update_cluster(self, rs: dict[str, Any], cluster: dict[str, Any]) -> None:
        spec = copy.deepcopy(rs["spec"]["rayClusterConfig"])
        cluster["spec"] = spec
        cluster["metadata"]["annotations"][HASH_KEY] = _hash(spec)
        cluster["metadata"]["annotations"][NUM_GROUPS_KEY] = str(len(spec["workerGroupSpecs"]))
        self.api.store_put(cluster)

    def _clean_up(self, rs: dict[str, Any], active: str, pending: str) -> None:
        ns = rs["metadata"]["namespace"]
        delay = rs["spec"].get("rayClusterDeletionDelaySeconds", _DEFAULT_DELETION_DELAY_S)
        for cluster in self.api.list("rayclusters", ns):
            cname = cluster["metadata"]["name"]
            owner = cluster["metadata"].get("labels", {}).get("ray.io/originated-from-cr-name")
            if owner != rs["metadata"]["name"] or cname in (active, pending):
                continue
            key = (ns, cname)
            deadline = self._deadlines.setdefault(key, self.now + delay)
            if self.now >= deadline:
                self.api.store_delete("rayclusters", ns, cname)
                self.deleted.append(cname)
                del self._deadlines[key]

    def _cluster(self, ns: str, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        try:
            return self.api.get("rayclusters", ns, name)
        except KeyError:
            return None

    def _is_ready(self, cluster: dict[str, Any]) -> bool:
        return cluster["metadata"]["name"] in self.ready

    def _suffix(self) -> str:
        return "".join(self._rng.choice(string.ascii_lowercase + string.digits) for _ in range(5))


# --- what KubeRay computes -------------------------------------------------------------------


def _hash(spec: dict[str, Any], groups: int | None = None) -> str:
    """GenerateHashWithoutReplicasAndWorkersToDelete over the first `groups` worker groups."""
    spec = copy.deepcopy(spec)
    spec.pop("upgradeStrategy", None)
    spec.pop("suspend", None)
    head = spec.get("headGroupSpec", {}).get("template", {}).get("spec", {})
    head.pop("tolerations", None)
    head.pop("schedulingGates", None)
    workers = spec.get("workerGroupSpecs", [])
    if groups is not None:
        if len(workers) < groups:
            return ""
        workers = spec["workerGroupSpecs"] = workers[:groups]
    for group in workers:
        for field in ("replicas", "minReplicas", "maxReplicas"):
            group.pop(field, None)
        group.get("scaleStrategy", {}).pop("workersToDelete", None)
        pod = group.get("template", {}).get("spec", {})
        pod.pop("tolerations", None)
        pod.pop("schedulingGates", None)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _annotation(obj: dict[str, Any], key: str) -> str:
    return obj["metadata"].get("annotations", {}).get(key, "")


def _num_groups(cluster: dict[str, Any]) -> int:
    return int(_annotation(cluster, NUM_GROUPS_KEY) or 0)


def _names(status: dict[str, Any]) -> tuple[str, str]:
    return (
        status.get("activeServiceStatus", {}).get("rayClusterName", ""),
        status.get("pendingServiceStatus", {}).get("rayClusterName", ""),
    )


def _validate(rs: dict[str, Any]) -> str:
    """ValidateRayServiceMetadata / ValidateRayServiceSpec / ValidateRayClusterSpec, in part."""
    name = rs["metadata"]["name"]
    if len(name) > _MAX_RAYSERVICE_NAME:
        return f"RayService name should be no more than {_MAX_RAYSERVICE_NAME} characters"
    spec = rs.get("spec", {})
    strategy = (spec.get("upgradeStrategy") or {}).get("type")
    if strategy not in (None, "NewCluster", "None", "NewClusterWithIncrementalUpgrade"):
        return f"Spec.UpgradeStrategy.Type value {strategy} is invalid"
    cluster = spec.get("rayClusterConfig", {})
    if not cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {}).get("containers"):
        return "headGroupSpec should have at least one container"
    autoscaling = cluster.get("enableInTreeAutoscaling", False)
    for g in cluster.get("workerGroupSpecs", []):
        low, high = g.get("minReplicas"), g.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            return (
                f"worker group {g['groupName']} must set both minReplicas and maxReplicas "
                "when autoscaling is disabled"
            )
        if low is not None and high is not None and low > high:
            return (
                f"worker group {g['groupName']} has minReplicas {low} greater than "
                f"maxReplicas {high}"
            )
    return ""


def _serve_status(text: str, app_deployments: dict[str, set[str]]) -> dict[str, Any]:
    """What Ray Serve would report after `serve deploy` of `text`."""
    from ray.serve.schema import ServeDeploySchema

    try:
        config = ServeDeploySchema.model_validate(yaml.safe_load(text))
    except Exception as exc:  # Serve refuses the whole config
        return {"<config>": {"status": "DEPLOY_FAILED", "message": str(exc)[:500]}}
    apps = {}
    for app in config.applications:
        known = app_deployments.get(app.name)
        names = [d.name for d in app.deployments]
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            apps[app.name] = {
                "status": "DEPLOY_FAILED",
                "message": f"Deployment '{unknown[0]}' does not exist. Available: {sorted(known)}",
            }
        else:
            apps[app.name] = {
                "status": "RUNNING",
                "deployments": {n: {"status": "HEALTHY"} for n in (known or names)},
            }
    return apps


def _condition(status: dict[str, Any], kind: str, value: str, reason: str, message: str) -> None:
    conditions = [c for c in status.get("conditions", []) if c["type"] != kind]
    conditions.append({"type": kind, "status": value, "reason": reason, "message": message})
    status["conditions"] = conditions
