"""Ray cluster-launcher configs (`ray up`) for the providers at AWS, GCP and Azure.

One YAML per provider (a launcher cluster lives in one region): a CPU head that schedules no
work and one GPU worker type whose Ray nodes carry the provider's `provider:<name>` resource, as
the local cluster's and KubeRay's nodes do. The instance type comes from the provider's
`node.kubernetes.io/instance-type` node selector when the config gives one, else the smallest
instance of the provider's GPU that holds `gpus_per_replica`; either way it is checked against a
table of instance types known to carry that GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster._yaml import write_yaml_files
from cluster.k8s_common import PROVIDER_RESOURCE_UNITS, ManifestError, image_of, pullable
from cluster.providers import replica_bounds
from config import EaselConfig, ProviderConfig

__all__ = ["INSTANCE_TYPES", "LAUNCHER_CLOUDS", "render_launchers", "write_launchers"]

LAUNCHER_CLOUDS = ("aws", "gcp", "azure")


@dataclass(frozen=True)
class InstanceType:
    """A cloud machine type with the GPUs it carries (SXM boards with NVLink, or PCIe cards)."""

    name: str
    gpu: str
    gpus: int
    cpus: int
    form: str = "SXM"


# Public machine shapes (vCPUs, GPUs) of the A100 80GB instance families of each cloud. Azure's
# NC A100 v4 carries PCIe cards (no NVLink between them); ND A100 v4, p4de and A2 Ultra are SXM.
INSTANCE_TYPES: dict[str, tuple[InstanceType, ...]] = {
    "aws": (InstanceType("p4de.24xlarge", "A100-80GB", 8, 96),),
    "gcp": (
        InstanceType("a2-ultragpu-1g", "A100-80GB", 1, 12),
        InstanceType("a2-ultragpu-2g", "A100-80GB", 2, 24),
        InstanceType("a2-ultragpu-4g", "A100-80GB", 4, 48),
        InstanceType("a2-ultragpu-8g", "A100-80GB", 8, 96),
    ),
    "azure": (
        InstanceType("Standard_NC24ads_A100_v4", "A100-80GB", 1, 24, "PCIe"),
        InstanceType("Standard_NC48ads_A100_v4", "A100-80GB", 2, 48, "PCIe"),
        InstanceType("Standard_NC96ads_A100_v4", "A100-80GB", 4, 96, "PCIe"),
        InstanceType("Standard_ND96amsr_A100_v4", "A100-80GB", 8, 96),
    ),
}
_HEAD_INSTANCE = {"aws": "m5.2xlarge", "gcp": "n2-standard-8", "azure": "Standard_D8s_v5"}
_INSTANCE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")


def render_launchers(cfg: EaselConfig, image: str | None = None) -> dict[str, dict[str, Any]]:
    """One launcher config per provider at a launcher cloud, by file name (`<provider>.yaml`).

    Providers at other clouds (GPU clouds without a Ray node provider) are left out; they join
    through KubeRay or `ray start` on their machines.
    """
    image = image_of(cfg, image)
    return {
        f"{p.name}.yaml": _launcher(cfg, p, image)
        for p in cfg.providers
        if p.cloud in LAUNCHER_CLOUDS
    }


def write_launchers(cfg: EaselConfig, out_dir: str | Path, image: str | None = None) -> list[Path]:
    """Render the launcher configs into `out_dir`; returns the files written."""
    return write_yaml_files(render_launchers(cfg, image), out_dir, _HEADER)


_HEADER = "# Rendered by `easel cluster launcher` from the easel config; re-render, do not edit.\n"


def instance_for(provider: ProviderConfig, form: str | None = None) -> InstanceType:
    """The worker instance type of `provider`; ManifestError when it does not fit the config.

    Args:
        form: the GPU's form factor the config asks for ('SXM', 'PCIe'; None: either).
    """
    table = [t for t in INSTANCE_TYPES[provider.cloud] if form in (None, t.form)]
    named = next(
        (provider.node_selector[k] for k in _INSTANCE_LABELS if k in provider.node_selector), None
    )
    if named is not None:
        match = [t for t in table if t.name == named]
        if not match:
            known = [t.name for t in table]
            with_form = f" with {form} GPUs" if form else ""
            raise ManifestError(
                f"provider {provider.name!r}: instance type {named!r} is not a known "
                f"{provider.cloud} instance{with_form} (known: {known})"
            )
        inst = match[0]
    else:
        fits = [t for t in table if t.gpu == provider.gpu and t.gpus >= provider.gpus_per_replica]
        if not fits:
            raise ManifestError(
                f"provider {provider.name!r}: no {provider.cloud} instance carries "
                f"{provider.gpus_per_replica} x {provider.gpu}{f' ({form})' if form else ''}"
            )
        inst = min(fits, key=lambda t: t.gpus)
    if inst.gpu != provider.gpu:
        raise ManifestError(
            f"provider {provider.name!r}: instance {inst.name} carries {inst.gpu}, but the config "
            f"says {provider.gpu}"
        )
    if inst.gpus < provider.gpus_per_replica:
        raise ManifestError(
            f"provider {provider.name!r}: instance {inst.name} has {inst.gpus} GPUs, fewer than "
            f"gpus_per_replica={provider.gpus_per_replica}"
        )
    return inst


def _launcher(cfg: EaselConfig, provider: ProviderConfig, image: str) -> dict[str, Any]:
    inst = instance_for(provider, cfg.gpu(provider.gpu).form_factor)
    low, high = replica_bounds(provider)
    # Worker replicas are counted in GPUs-per-replica; launcher workers are whole instances.
    min_nodes = math.ceil(low * provider.gpus_per_replica / inst.gpus)
    max_nodes = min(
        provider.capacity // inst.gpus, math.ceil(high * provider.gpus_per_replica / inst.gpus)
    )
    if max_nodes < max(min_nodes, 1):
        raise ManifestError(
            f"provider {provider.name!r}: capacity {provider.capacity} GPUs holds no "
            f"{inst.name} ({inst.gpus} GPUs each)"
        )
    cloud = provider.cloud
    return {
        "cluster_name": f"{cfg.name}-{provider.name}",
        "max_workers": max_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": _provider_section(cfg, provider),
        "auth": {"ssh_user": "ubuntu"},
        # The same image KubeRay runs; the launcher adds `--gpus all` on GPU hosts. A registry
        # image is pulled on every host; a bare local tag (a simulated rehearsal) is not.
        "docker": {
            "image": image,
            "container_name": "easel",
            "pull_before_run": pullable(image),
            "run_options": ["--ulimit nofile=65536:65536"],
        },
        "head_node_type": "head",
        "available_node_types": {
            "head": {
                # The head schedules no work, as on KubeRay (`num-cpus: "0"`).
                "resources": {"CPU": 0},
                "node_config": _node_config(cloud, _HEAD_INSTANCE[cloud], gpu=False),
            },
            f"gpu-{provider.name}": {
                "min_workers": min_nodes,
                "max_workers": max_nodes,
                "resources": {
                    "CPU": inst.cpus,
                    "GPU": inst.gpus,
                    provider.resource: PROVIDER_RESOURCE_UNITS,
                },
                "node_config": _node_config(cloud, inst.name, gpu=True),
            },
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076 "
            "--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=0.0.0.0",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076",
        ],
    }


def _provider_section(cfg: EaselConfig, provider: ProviderConfig) -> dict[str, Any]:
    if provider.cloud == "aws":
        return {"type": "aws", "region": provider.region, "cache_stopped_nodes": False}
    if provider.cloud == "gcp":
        if provider.project_id is None:
            raise ManifestError(
                f"provider {provider.name!r} is at GCP: set its project_id (the GCP project "
                "`ray up` creates the VMs in)"
            )
        return {
            "type": "gcp",
            "region": provider.region,
            "availability_zone": f"{provider.region}-a",
            "project_id": provider.project_id,
        }
    return {
        "type": "azure",
        "location": provider.region,
        "resource_group": f"{cfg.name}-{provider.name}",
    }


def _node_config(cloud: str, instance: str, gpu: bool) -> dict[str, Any]:
    if cloud == "aws":
        return {
            "InstanceType": instance,
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 500 if gpu else 100}}
            ],
        }
    if cloud == "gcp":
        family = "common-cu124" if gpu else "common-cpu"
        config: dict[str, Any] = {
            "machineType": instance,
            "disks": [
                {
                    "boot": True,
                    "autoDelete": True,
                    "type": "PERSISTENT",
                    "initializeParams": {
                        "diskSizeGb": 500 if gpu else 100,
                        "sourceImage": (
                            f"projects/deeplearning-platform-release/global/images/family/{family}"
                        ),
                    },
                }
            ],
        }
        if gpu:
            # A2 machines carry their GPUs; GPU VMs cannot live-migrate.
            config["scheduling"] = [{"onHostMaintenance": "TERMINATE"}]
            config["metadata"] = {"items": [{"key": "install-nvidia-driver", "value": "True"}]}
        return config
    return {
        "azure_arm_parameters": {
            "vmSize": instance,
            "imagePublisher": "microsoft-dsvm",
            "imageOffer": "ubuntu-hpc" if gpu else "ubuntu-2204",
            "imageSku": "2204" if gpu else "2204-gen2",
            "imageVersion": "latest",
        }
    }
