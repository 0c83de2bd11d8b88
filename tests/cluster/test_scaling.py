"""Per-provider scaling: `Scaler` and `easel scale` patch worker groups via the kubernetes client,
tested against the simulated Kubernetes API."""

from __future__ import annotations

import pytest

from cluster.kuberay import render
from cluster.scaling import ScaleError, Scaler, custom_objects_api
from cluster.simulated_k8s import JSON_PATCH, SimulatedKubeApi
from config import load_config

NAME, NS = "easel-default", "easel"


@pytest.fixture
def api():
    objs = render(load_config())
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": NAME, "namespace": NS},
               "spec": objs["rayservice.yaml"]["spec"]["rayClusterConfig"]}  # fmt: skip
    with SimulatedKubeApi([objs["rayservice.yaml"], cluster]) as server:
        yield server


@pytest.fixture
def kubeconfig(api, tmp_path):
    return str(api.write_kubeconfig(tmp_path / "kubeconfig"))


def _groups(api, plural="rayservices"):
    obj = api.get(plural, NS, NAME)
    spec = obj["spec"]["rayClusterConfig"] if plural == "rayservices" else obj["spec"]
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def test_scale_patches_only_that_group(api, kubeconfig):
    scaler = Scaler(custom_objects_api(kubeconfig), NS, NAME)
    before = _groups(api)
    group = scaler.scale("runpod-sim", replicas=3)
    assert (group.group, group.replicas) == ("runpod-sim", 3)
    after = _groups(api)
    assert after["runpod-sim"]["replicas"] == 3
    assert {k: v for k, v in after.items() if k != "runpod-sim"} == {
        k: v for k, v in before.items() if k != "runpod-sim"}  # fmt: skip
    patch = [c for c in api.calls if c.method == "PATCH"]
    assert len(patch) == 1 and patch[0].content_type == JSON_PATCH
    base = "/spec/rayClusterConfig/workerGroupSpecs/1"
    assert patch[0].body == [
        {"op": "test", "path": f"{base}/groupName", "value": "runpod-sim"},
        {"op": "add", "path": f"{base}/replicas", "value": 3},
    ]


def test_scale_bounds_and_raycluster(api, kubeconfig):
    scaler = Scaler(custom_objects_api(kubeconfig), NS, NAME, kind="raycluster")
    group = scaler.scale("azure-sim", replicas=2, min_replicas=2, max_replicas=4)
    assert (group.replicas, group.min_replicas, group.max_replicas) == (2, 2, 4)
    assert _groups(api, "rayclusters")["azure-sim"]["minReplicas"] == 2
    with pytest.raises(ScaleError, match="must lie within minReplicas 2 and maxReplicas 4"):
        scaler.scale("azure-sim", replicas=5)
    with pytest.raises(ScaleError, match="no worker group 'gcp'"):
        scaler.scale("gcp", replicas=1)
    assert [c.method for c in api.calls].count("PATCH") == 1


def test_moved_groups_are_reread(api, kubeconfig):
    """A concurrent edit that reorders groups fails the `test` op; the scaler re-reads once."""
    scaler = Scaler(custom_objects_api(kubeconfig), NS, NAME)
    real_read = scaler._read
    reads = []

    def stale_then_fresh():
        obj = real_read()
        if not reads:  # first read: pretend the order is the reverse of what the server has
            obj["spec"]["rayClusterConfig"]["workerGroupSpecs"].reverse()
        reads.append(1)
        return obj

    scaler._read = stale_then_fresh
    group = scaler.scale("lambda-sim", replicas=2)
    assert group.replicas == 2 and _groups(api)["lambda-sim"]["replicas"] == 2
    statuses = [c.status for c in api.calls if c.method == "PATCH"]
    assert statuses == [422, 200]


def test_api_errors_are_scale_errors(api, kubeconfig):
    with pytest.raises(ScaleError, match="answered 404"):
        Scaler(custom_objects_api(kubeconfig), NS, "nope").groups()


def test_scale_cli(api, kubeconfig, capsys):
    from easel.cli import main

    argv = ["scale", "--kubeconfig", kubeconfig, "--provider", "lambda-sim"]
    assert main([*argv, "--replicas", "4"]) == 0
    assert "lambda-sim: replicas=4" in capsys.readouterr().out
    assert _groups(api)["lambda-sim"]["replicas"] == 4
    calls = len(api.calls)
    # Outside the config's bounds (capacity 8 GPUs, 1 per replica): refused before any call.
    assert main([*argv, "--replicas", "9"]) == 2
    assert "outside provider 'lambda-sim'" in capsys.readouterr().err
    assert main(["scale", "--kubeconfig", kubeconfig, "--provider", "gcp", "--replicas", "1"]) == 2
    assert len(api.calls) == calls
    assert main([*argv, "--replicas", "1", "--name", "missing"]) == 1
    assert "404" in capsys.readouterr().err
