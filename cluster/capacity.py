"""What a provider's Serve deployments ask of its worker pods, and whether its groups hold it.

Each provider is its own Ray cluster with up to two worker groups: `gpu` (pods of the provider's
`gpus_per_replica` GPUs, `kubernetes.worker_cpus_per_gpu` CPUs per GPU) for the models that need
GPUs, and `cpu` (pods of `kubernetes.cpu_worker_cpus` CPUs) for the provider's ingress and models
with `num_gpus: 0`. The Ray autoscaler adds pods when Serve asks for replicas, up to each group's
`maxReplicas`; so a group must be allowed enough pods to hold every deployment at its
`max_replicas`. `pods_needed` packs replicas into pods (first fit, largest first), which is also
how an operator reads "does one more replica fit" (`fits`).

Pure: the same config gives the same plan; `easel k8s render`, `easel scale` and `easel
operator` share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cluster.providers import replica_bounds
from config import EaselConfig, ModelConfig, ProviderConfig

__all__ = [
    "CPU_GROUP",
    "GPU_GROUP",
    "INGRESS",
    "CapacityError",
    "GroupPlan",
    "PodShape",
    "ReplicaNeed",
    "fits",
    "group_of",
    "hosted_models",
    "needs",
    "plan_provider",
    "pod_shape",
    "pods_needed",
]

GPU_GROUP, CPU_GROUP = "gpu", "cpu"
# The provider app's HTTP ingress, as a replica need (its deployment name is the app's own).
INGRESS = "ingress"
_EPS = 1e-9


class CapacityError(ValueError):
    """A provider's worker groups cannot hold what its deployments ask for; says by how much."""


@dataclass(frozen=True)
class PodShape:
    """What one worker pod of a group offers Ray."""

    gpus: int
    cpus: float

    def describe(self) -> str:
        gpu = f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}, " if self.gpus else ""
        return f"{gpu}{self.cpus:g} CPUs"


@dataclass(frozen=True)
class ReplicaNeed:
    """`count` replicas of one deployment, each asking `gpus` and `cpus`."""

    name: str
    gpus: float
    cpus: float
    count: int


@dataclass(frozen=True)
class GroupPlan:
    """One worker group of a provider: its pods, its bounds and what the deployments fill."""

    name: str
    pod: PodShape
    min_pods: int
    max_pods: int
    pods_at_min: int
    pods_at_max: int
    limit: str  # where max_pods comes from, for messages


def hosted_models(cfg: EaselConfig, provider: ProviderConfig) -> list[ModelConfig]:
    """The models `provider`'s own cluster serves: its diffusers models (closed models are the
    gateway's upstreams, not Ray deployments)."""
    return [m for m in cfg.models if m.backend == "diffusers" and provider.name in m.providers]


def group_of(model: ModelConfig) -> str:
    """The worker group a model's replicas land in."""
    return GPU_GROUP if model.num_gpus > 0 else CPU_GROUP


def pod_shape(cfg: EaselConfig, provider: ProviderConfig, group: str) -> PodShape:
    """The pod a group of `provider` runs (from `kubernetes.*` and `gpus_per_replica`)."""
    k8s = cfg.kubernetes
    if group == GPU_GROUP:
        gpus = provider.gpus_per_replica
        return PodShape(gpus, k8s.worker_cpus_per_gpu * gpus)
    return PodShape(0, k8s.cpu_worker_cpus)


def needs(
    cfg: EaselConfig,
    provider: ProviderConfig,
    replicas: Mapping[str, int] | None = None,
    *,
    at: str = "max",
) -> dict[str, list[ReplicaNeed]]:
    """Replica needs by group: every hosted model at `replicas[model]` (default: its configured
    autoscaling bound `at` 'min' or 'max') plus the provider's ingress in the CPU group."""
    out: dict[str, list[ReplicaNeed]] = {CPU_GROUP: [], GPU_GROUP: []}
    sv = cfg.serve
    out[CPU_GROUP].append(ReplicaNeed(INGRESS, 0, sv.ingress_num_cpus, sv.ingress_replicas))
    for m in hosted_models(cfg, provider):
        bound = m.autoscaling.max_replicas if at == "max" else m.autoscaling.min_replicas
        count = bound if replicas is None or m.name not in replicas else replicas[m.name]
        out[group_of(m)].append(ReplicaNeed(m.name, m.num_gpus, m.num_cpus, count))
    return out


def pods_needed(replicas: Iterable[ReplicaNeed], pod: PodShape) -> int:
    """Pods of `pod` that hold every replica (first fit, largest first); ValueError for one
    replica larger than a pod."""
    items = sorted(
        ((r.gpus, r.cpus, r.name) for r in replicas for _ in range(r.count)),
        key=lambda x: (-x[0], -x[1]),
    )
    free: list[list[float]] = []
    for gpus, cpus, name in items:
        if gpus > pod.gpus + _EPS or cpus > pod.cpus + _EPS:
            raise ValueError(f"one {name} replica ({gpus:g} GPUs, {cpus:g} CPUs) exceeds a pod")
        for slot in free:
            if slot[0] + _EPS >= gpus and slot[1] + _EPS >= cpus:
                slot[0] -= gpus
                slot[1] -= cpus
                break
        else:
            free.append([pod.gpus - gpus, pod.cpus - cpus])
    return len(free)


def plan_provider(
    cfg: EaselConfig,
    provider: ProviderConfig,
    bounds: Mapping[str, tuple[int, int]] | None = None,
    group_max: Mapping[str, int] | None = None,
) -> list[GroupPlan]:
    """The worker groups `provider` needs, checked: CapacityError names the provider, the group
    and the shortfall when the deployments' max replicas do not fit the pods the group may hold.

    Args:
        bounds: per model (min_replicas, max_replicas) of its Serve deployment; default: the
            config's autoscaling bounds (a live cluster's come from its serveConfigV2).
        group_max: per group, the most pods it may hold (a live RayCluster's maxReplicas);
            default: what the config allows (GPU group: min(max_replicas, capacity /
            gpus_per_replica); CPU group: as many as the deployments fill).
    """
    hosted = hosted_models(cfg, provider)
    lows = {m: b[0] for m, b in (bounds or {}).items()}
    highs = {m: b[1] for m, b in (bounds or {}).items()}
    at_min, at_max = needs(cfg, provider, lows, at="min"), needs(cfg, provider, highs, at="max")
    plans = []
    for group in (CPU_GROUP, GPU_GROUP):
        if group == GPU_GROUP and not at_max[GPU_GROUP]:
            continue  # nothing here needs a GPU: no GPU pods at all
        pod = pod_shape(cfg, provider, group)
        _check_replicas_fit(cfg, provider, group, pod, hosted)
        fill_min = pods_needed(at_min[group], pod)
        fill_max = pods_needed(at_max[group], pod)
        if group == GPU_GROUP:
            low, high = replica_bounds(provider)
            limit = (
                f"capacity {provider.capacity} GPUs / {pod.gpus} per pod, max_replicas "
                f"{provider.max_replicas}"
            )
        else:
            # The ingress always runs: at least one CPU pod.
            low, high = 1, max(fill_max, 1)
            limit = "the CPU deployments' max replicas"
        if group_max is not None and group in group_max:
            high = group_max[group]
            limit = f"the live worker group's maxReplicas {high}"
        if fill_max > high:
            raise CapacityError(
                _shortfall(provider, group, pod, at_max[group], fill_max, high, limit)
            )
        plans.append(GroupPlan(group, pod, min(low, high), high, fill_min, fill_max, limit))
    return plans


def fits(
    cfg: EaselConfig,
    provider: ProviderConfig,
    replicas: Mapping[str, int],
    group_max: Mapping[str, int],
) -> bool:
    """True when the hosted models at `replicas` (others at their configured max) fit within
    `group_max` pods per group."""
    demand = needs(cfg, provider, replicas, at="max")
    for group, items in demand.items():
        if not any(r.count for r in items):
            continue
        pod = pod_shape(cfg, provider, group)
        try:
            if pods_needed(items, pod) > group_max.get(group, 0):
                return False
        except ValueError:
            return False
    return True


def _check_replicas_fit(
    cfg: EaselConfig, provider: ProviderConfig, group: str, pod: PodShape, hosted: list
) -> None:
    for m in hosted:
        if group_of(m) != group:
            continue
        if m.num_gpus > pod.gpus:
            raise CapacityError(
                f"model {m.name!r} needs num_gpus={m.num_gpus:g} per replica but provider "
                f"{provider.name!r} worker pods hold gpus_per_replica={provider.gpus_per_replica}"
                "; raise the provider's gpus_per_replica"
            )
        if m.num_cpus > pod.cpus:
            where = (
                "kubernetes.worker_cpus_per_gpu x gpus_per_replica"
                if group == GPU_GROUP
                else "kubernetes.cpu_worker_cpus"
            )
            raise CapacityError(
                f"model {m.name!r} needs num_cpus={m.num_cpus:g} per replica but provider "
                f"{provider.name!r}'s {group} worker pods hold {pod.cpus:g} CPUs ({where})"
            )
    ingress = cfg.serve.ingress_num_cpus
    if group == CPU_GROUP and ingress > pod.cpus:
        raise CapacityError(
            f"serve.ingress_num_cpus={ingress:g} exceeds a CPU worker pod "
            f"(kubernetes.cpu_worker_cpus={pod.cpus:g})"
        )


def _shortfall(
    provider: ProviderConfig,
    group: str,
    pod: PodShape,
    items: list[ReplicaNeed],
    pods: int,
    allowed: int,
    limit: str,
) -> str:
    gpus = sum(r.gpus * r.count for r in items)
    cpus = sum(r.cpus * r.count for r in items)
    listing = ", ".join(
        f"{r.name} {r.count} x ({f'{r.gpus:g} GPU, ' if r.gpus else ''}{r.cpus:g} CPU)"
        for r in items
        if r.count
    )
    short = pods - allowed
    extra = f" ({math.ceil(short * pod.gpus)} GPUs)" if pod.gpus else ""
    need = f"{gpus:g} GPUs / {cpus:g} CPUs" if pod.gpus else f"{cpus:g} CPUs"
    return (
        f"provider {provider.name!r}, worker group {group!r}: the deployments at their max "
        f"replicas ({listing}) need {need} = {pods} pods of {pod.describe()}, but the group may "
        f"hold {allowed} ({limit}): short by {short} pod{'s' if short != 1 else ''}{extra}. "
        "Lower models[].autoscaling.max_replicas or raise the provider's capacity/max_replicas."
    )
