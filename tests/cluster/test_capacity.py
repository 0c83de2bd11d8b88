"""Capacity: what each provider's deployments ask of its worker pods, checked before render."""

from __future__ import annotations

import re

import pytest

from cluster.capacity import (
    CPU_GROUP,
    GPU_GROUP,
    CapacityError,
    PodShape,
    ReplicaNeed,
    fits,
    hosted_models,
    plan_provider,
    pods_needed,
)
from config import load_config, parse_config, shipped_config_path

PROD = shipped_config_path("production.example.yaml")


def test_pods_needed_packs_largest_first():
    pod = PodShape(gpus=2, cpus=16)
    # Two 2-GPU replicas take a pod each; three 1-GPU replicas share two pods.
    reps = [ReplicaNeed("dev", 2, 8, 2), ReplicaNeed("turbo", 1, 8, 3)]
    assert pods_needed(reps, pod) == 4
    # CPUs bind too: 1-GPU replicas with 12 CPUs cannot pair in a 16-CPU pod.
    assert pods_needed([ReplicaNeed("x", 1, 12, 2)], pod) == 2
    assert pods_needed([], pod) == 0
    with pytest.raises(ValueError, match="exceeds a pod"):
        pods_needed([ReplicaNeed("big", 4, 1, 1)], pod)


def test_production_fits_each_provider():
    cfg = load_config(PROD)
    for p in cfg.providers:
        plans = {g.name: g for g in plan_provider(cfg, p)}
        gpu = plans[GPU_GROUP]
        # max replicas: flux2-dev 4 x 2 GPUs + 3 models x 2 x 1 GPU = 14 GPUs = 7 pods of 2.
        assert gpu.pod == PodShape(2, 16)
        assert (gpu.pods_at_min, gpu.pods_at_max, gpu.max_pods) == (3, 7, 8)
        assert gpu.pods_at_max * gpu.pod.gpus >= sum(
            m.autoscaling.max_replicas * m.num_gpus for m in hosted_models(cfg, p)
        )
        assert plans[CPU_GROUP].min_pods == 1  # the provider's ingress always runs


def test_default_config_needs_no_gpu_pods():
    cfg = load_config()
    for p in cfg.providers:
        assert [g.name for g in plan_provider(cfg, p)] == [CPU_GROUP]


def test_a_config_that_cannot_fit_is_refused_with_the_shortfall():
    data = load_config(PROD).model_dump(mode="json")
    for m in data["models"]:
        if m["name"] == "flux2-dev":
            m["autoscaling"]["max_replicas"] = 8  # 16 GPUs for it alone, 22 in all
    cfg = parse_config(data)
    with pytest.raises(CapacityError) as err:
        plan_provider(cfg, cfg.provider("aws"))
    message = str(err.value)
    assert "provider 'aws', worker group 'gpu'" in message
    assert "need 22 GPUs / 112 CPUs = 11 pods of 2 GPUs, 16 CPUs" in message
    assert re.search(
        r"may hold 8 \(capacity 16 GPUs / 2 per pod.*short by 3 pods \(6 GPUs\)", message
    )


def test_a_replica_larger_than_a_pod_is_refused():
    data = load_config(PROD).model_dump(mode="json")
    data["models"][0]["num_cpus"] = 24  # a GPU pod holds 2 x 8 CPUs
    cfg = parse_config(data)
    with pytest.raises(CapacityError, match=r"num_cpus=24 .* hold 16 CPUs"):
        plan_provider(cfg, cfg.provider("lambda"))


def test_live_bounds_and_group_max_and_fits():
    cfg = load_config(PROD)
    aws = cfg.provider("aws")
    with pytest.raises(CapacityError, match="the live worker group's maxReplicas 5"):
        plan_provider(cfg, aws, group_max={GPU_GROUP: 5})
    plans = plan_provider(cfg, aws, bounds={"flux2-dev": (1, 1)}, group_max={GPU_GROUP: 5})
    assert {g.name: g.pods_at_max for g in plans}[GPU_GROUP] == 4
    groups = {GPU_GROUP: 7, CPU_GROUP: 1}
    assert fits(cfg, aws, {"flux2-dev": 4}, groups)
    assert not fits(cfg, aws, {"flux2-dev": 5}, groups)
