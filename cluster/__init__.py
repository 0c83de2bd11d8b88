"""cluster: where replicas run, and how operators move traffic and capacity between providers.

The public surface, imported lazily so that `easel --help` loads neither Ray nor the kubernetes
client: the provider catalogue (`catalogue`, providers), a real multi-node local Ray cluster
(`LocalCluster`, local), KubeRay manifests (`write_manifests`, kuberay) and Ray cluster-launcher
configs (`write_launchers`, launcher) rendered from the config, per-provider scaling through the
kubernetes client (`Scaler`, scaling), the routing admin client (`RoutingClient`,
routing_client), the control loop (`Operator`, operator) and the simulated Kubernetes API the
tests drive the real client against (`SimulatedKubeApi`, simulated_k8s).
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
    from cluster.scaling import Scaler
    from cluster.simulated_k8s import SimulatedKubeApi

__all__ = [
    "LocalCluster",
    "Operator",
    "RoutingClient",
    "Scaler",
    "SimulatedKubeApi",
    "catalogue",
    "write_launchers",
    "write_manifests",
]

_HOME = {
    "LocalCluster": "cluster.local",
    "Operator": "cluster.operator",
    "RoutingClient": "cluster.routing_client",
    "Scaler": "cluster.scaling",
    "SimulatedKubeApi": "cluster.simulated_k8s",
    "catalogue": "cluster.providers",
    "write_launchers": "cluster.launcher",
    "write_manifests": "cluster.kuberay",
}


__getattr__ = lazy_exports("cluster", _HOME)
