"""cluster: where replicas run, and how operators move traffic and capacity between providers.

The public surface, imported lazily so that `easel --help` loads neither Ray nor the kubernetes
client: the provider catalogue (`catalogue`, providers), a real multi-node local Ray cluster
(`LocalCluster`, local), Kubernetes manifests (`write_manifests`, kuberay: one RayService per
provider, the gateway, the bench RayJob; sized by `capacity`, weights by `weights`) and Ray
cluster-launcher configs (`write_launchers`, launcher) rendered from the config, per-provider
scaling through the kubernetes client (`ProviderCluster`, `scale_provider`, scaling), the
routing admin client (`RoutingClient`, routing_client) and the control loop (`Operator`,
operator). The simulated Kubernetes API and KubeRay controller the tests drive the real client
against live under tests/cluster/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.lazy import lazy_exports

if TYPE_CHECKING:
    from cluster.kuberay import write_manifests
    from cluster.launcher import write_launchers
    from cluster.local import LocalCluster
    from cluster.operator import Operator
    from cluster.providers import catalogue
    from cluster.routing_client import RoutingClient
    from cluster.scaling import ProviderCluster, scale_provider

__all__ = [
    "LocalCluster",
    "Operator",
    "ProviderCluster",
    "RoutingClient",
    "catalogue",
    "scale_provider",
    "write_launchers",
    "write_manifests",
]

_HOME = {
    "LocalCluster": "cluster.local",
    "Operator": "cluster.operator",
    "RoutingClient": "cluster.routing_client",
    "ProviderCluster": "cluster.scaling",
    "catalogue": "cluster.providers",
    "scale_provider": "cluster.scaling",
    "write_launchers": "cluster.launcher",
    "write_manifests": "cluster.kuberay",
}


__getattr__ = lazy_exports("cluster", _HOME)
