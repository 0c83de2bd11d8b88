"""The bench RayJob benchmarks the running gateway from its own cluster, writing to a volume."""

from __future__ import annotations

import shlex

from cluster.k8s_bench import bench_manifests
from cluster.k8s_gateway import gateway_url
from config import load_config, shipped_config_path

PROD = shipped_config_path("production.example.yaml")


def test_it_targets_the_gateway_on_its_own_cluster_and_deploys_nothing():
    cfg = load_config(PROD)
    objs = bench_manifests(cfg, cfg.kubernetes.image)
    job = objs["40-rayjob.yaml"]["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["easel", "bench"]
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert flags["--url"] == gateway_url(cfg)  # the running gateway: nothing is deployed
    assert flags["--address"] == "auto"  # the RayJob's own cluster (RAY_ADDRESS), no second Ray
    assert flags["--config"] == "/etc/easel/config.yaml"
    assert flags["--out"].startswith("/runs/")
    assert job["submissionMode"] == "K8sJobMode" and job["shutdownAfterJobFinishes"] is True


def test_results_go_to_a_volume_that_outlives_the_job():
    cfg = load_config(PROD)
    objs = bench_manifests(cfg, cfg.kubernetes.image)
    head = objs["40-rayjob.yaml"]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (runs,) = [v for v in head["volumes"] if v["name"] == "runs"]
    assert (
        runs["persistentVolumeClaim"]["claimName"]
        == objs["20-runs-volume.yaml"]["metadata"]["name"]
    )
    assert not [v for v in head["volumes"] if "emptyDir" in v]
    mounts = {m["mountPath"]: m for m in head["containers"][0]["volumeMounts"]}
    assert "readOnly" not in mounts["/runs"]
    assert mounts["/data"]["readOnly"] and mounts["/models"]["subPath"] == "models"


def test_scorers_get_gpu_workers_only_when_asked():
    prod = load_config(PROD)  # evaluation.num_gpus: 1, 4 actors
    groups = {
        g["groupName"]: g
        for g in bench_manifests(prod, prod.kubernetes.image)["40-rayjob.yaml"]["spec"][
            "rayClusterSpec"
        ]["workerGroupSpecs"]
    }
    assert groups["gpu"]["minReplicas"] == 0 and groups["gpu"]["maxReplicas"] == 4
    assert groups["cpu"]["minReplicas"] == 1
    default = load_config()
    groups = bench_manifests(default, "easel:x")["40-rayjob.yaml"]["spec"]["rayClusterSpec"][
        "workerGroupSpecs"
    ]
    assert [g["groupName"] for g in groups] == ["cpu"]
