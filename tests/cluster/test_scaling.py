"""`easel scale` changes what KubeRay honours, tested against the simulated API and controller:
Serve bounds in serveConfigV2 (in place), worker bounds on the live RayCluster; a RayService
replica patch alone changes nothing; a config change rolls a cluster only when pods change."""

from __future__ import annotations

import json

import pytest
import yaml

from cluster.kuberay import render
from cluster.scaling import ProviderCluster, ScaleError, custom_objects_api, scale_provider
from config import load_config, parse_config, shipped_config_path
from tests.cluster.simulated_k8s import JSON_PATCH, SimulatedKubeApi
from tests.cluster.simulated_kuberay import SimulatedKubeRay

PROD = shipped_config_path("production.example.yaml")
NS = "easel"


@pytest.fixture
def prod(tmp_path):
    """The production example's aws provider on a simulated cluster (context 'aws')."""
    cfg = load_config(PROD)
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(render(cfg)["aws/40-rayservice.yaml"])
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS, context="aws"))
        yield cfg, api, ctl, kubeconfig


RS = "easel-production-example-aws"


def _live(api) -> dict:
    rs = api.get("rayservices", NS, RS)
    return api.get("rayclusters", NS, rs["status"]["activeServiceStatus"]["rayClusterName"])


def _serve_max(text: str) -> dict[str, int]:
    apps = yaml.safe_load(text)["applications"]
    return {
        d["name"]: d["autoscaling_config"]["max_replicas"]
        for a in apps
        for d in a.get("deployments", [])
    }


def _groups(obj: dict) -> dict:
    spec = obj["spec"].get("rayClusterConfig", obj["spec"])
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def test_serve_bounds_apply_in_place_to_the_running_cluster(prod, capsys):
    from easel.cli import main

    _cfg, api, ctl, kubeconfig = prod
    cluster = _live(api)["metadata"]["name"]
    argv = ["scale", "--config", str(PROD), "--kubeconfig", kubeconfig, "--provider", "aws"]
    assert main([*argv, "--model", "flux2-dev", "--min", "0", "--max", "2"]) == 0
    assert "flux2-dev--aws 1..4 -> 0..2" in capsys.readouterr().out
    # Same cluster, no new one: KubeRay resubmitted the serve config to it.
    assert ctl.created == [cluster] and len(ctl.submissions[cluster]) == 2
    assert _serve_max(ctl.submissions[cluster][-1])["flux2-dev--aws"] == 2
    patches = [c for c in api.calls if c.method == "PATCH"]
    assert len(patches) == 1 and patches[0].content_type == JSON_PATCH
    assert patches[0].body[0]["op"] == "test" and patches[0].body[0]["path"] == (
        "/spec/serveConfigV2"
    )


def test_worker_bounds_go_to_the_live_raycluster_found_in_status(prod):
    cfg, api, ctl, kubeconfig = prod
    pc = ProviderCluster(custom_objects_api(kubeconfig), NS, RS)
    live_before = _live(api)
    patches = scale_provider(cfg, cfg.provider("aws"), pc, workers={"gpu": (2, 7)})
    assert [(p.kind, p.name) for p in patches] == [
        ("RayCluster", live_before["metadata"]["name"]),
        ("RayService", RS),
    ]
    live = _groups(_live(api))["gpu"]
    assert (live["minReplicas"], live["maxReplicas"]) == (2, 7)
    # The RayService keeps them for the next cluster; KubeRay does not roll for them.
    assert _groups(api.get("rayservices", NS, RS))["gpu"]["maxReplicas"] == 7
    assert ctl.created == [live_before["metadata"]["name"]]


def test_a_rayservice_replica_patch_alone_changes_nothing(prod):
    """What the old `easel scale` did: KubeRay ignores it, so nothing would ever scale."""
    _cfg, api, ctl, kubeconfig = prod
    before = _live(api)
    client = custom_objects_api(kubeconfig)
    path = "/spec/rayClusterConfig/workerGroupSpecs/1"
    client.patch_namespaced_custom_object(
        "ray.io",
        "v1",
        NS,
        "rayservices",
        RS,
        [
            {"op": "test", "path": f"{path}/groupName", "value": "gpu"},
            {"op": "replace", "path": f"{path}/replicas", "value": 6},
            {"op": "replace", "path": f"{path}/maxReplicas", "value": 6},
        ],
        _content_type=JSON_PATCH,
    )
    assert _groups(api.get("rayservices", NS, RS))["gpu"]["replicas"] == 6  # stored ...
    after = _live(api)
    assert after["spec"] == before["spec"]  # ... but the running cluster is untouched
    assert ctl.created == [before["metadata"]["name"]]
    assert len(ctl.submissions[before["metadata"]["name"]]) == 1


def test_dry_run_prints_the_patches_and_sends_none(prod, capsys):
    from easel.cli import main

    _cfg, api, _ctl, kubeconfig = prod
    argv = [
        "scale",
        "--config",
        str(PROD),
        "--kubeconfig",
        kubeconfig,
        "--provider",
        "aws",
        "--max",
        "1",
        "--workers-max",
        "4",
        "--dry-run",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in printed] == ["RayService", "RayCluster", "RayService"]
    assert printed[0]["patch"][1]["path"] == "/spec/serveConfigV2"
    assert set(_serve_max(printed[0]["patch"][1]["value"]).values()) == {1}
    assert not [c for c in api.calls if c.method == "PATCH"]


def test_bounds_that_do_not_fit_are_refused_before_any_patch(prod, capsys):
    from easel.cli import main

    _cfg, api, _ctl, kubeconfig = prod
    argv = ["scale", "--config", str(PROD), "--kubeconfig", kubeconfig, "--provider", "aws"]
    # 8 flux2-dev replicas x 2 GPUs with the others at 2 x 1: 11 pods; the group holds 8.
    assert main([*argv, "--model", "flux2-dev", "--max", "8"]) == 2
    assert "worker group 'gpu'" in (err := capsys.readouterr().err) and "short by 3 pods" in err
    # Shrinking the group below what the Serve maxima need (7 pods) is refused too.
    assert main([*argv, "--workers-max", "6"]) == 2
    assert "short by 1 pod" in capsys.readouterr().err
    assert main([*argv, "--workers-max", "9"]) == 2  # above capacity 16 / 2 GPUs
    assert "outside provider 'aws'" in capsys.readouterr().err
    assert main([*argv, "--model", "nope", "--max", "1"]) == 2
    assert main([*argv, "--min", "3", "--max", "2"]) == 2
    assert not [c for c in api.calls if c.method == "PATCH"]
    assert main([*argv, "--max", "1", "--name", "missing"]) == 1
    assert "404" in capsys.readouterr().err


def test_a_concurrent_edit_is_reread(prod):
    """Someone changes serveConfigV2 between our read and our patch: the guard's `test` fails
    (422), and the scaler re-reads and patches the new text."""
    cfg, api, _ctl, kubeconfig = prod
    pc = ProviderCluster(custom_objects_api(kubeconfig), NS, RS)
    real_read = pc.read
    reads = []

    def read_then_edit():
        state = real_read()
        if not reads:
            rs = api.get("rayservices", NS, RS)
            rs["spec"]["serveConfigV2"] += "# edited by someone else\n"
            api.apply(rs)
        reads.append(1)
        return state

    pc.read = read_then_edit
    scale_provider(cfg, cfg.provider("aws"), pc, serve={"sdxl-turbo": (1, 1)})
    statuses = [c.status for c in api.calls if c.method == "PATCH"]
    assert statuses == [422, 200] and len(reads) == 2
    assert (
        _serve_max(api.get("rayservices", NS, RS)["spec"]["serveConfigV2"])["sdxl-turbo--aws"] == 1
    )


def test_no_cluster_yet_is_a_clear_error(tmp_path):
    cfg = load_config(PROD)
    with SimulatedKubeApi([render(cfg)["aws/40-rayservice.yaml"]]) as api:  # no controller
        pc = ProviderCluster(custom_objects_api(str(api.write_kubeconfig(tmp_path / "k"))), NS, RS)
        # Serve bounds need no cluster; worker bounds go to the RayService copy only.
        patches = scale_provider(
            cfg, cfg.provider("aws"), pc, workers={"gpu": (0, 7)}, dry_run=True
        )
        assert [p.kind for p in patches] == ["RayService"]
        with pytest.raises(ScaleError, match="no worker group 'tpu'"):
            scale_provider(cfg, cfg.provider("aws"), pc, workers={"tpu": (0, 1)})


def test_a_config_change_rolls_only_when_pods_change(prod):
    """Re-rendered and applied: a price change keeps the cluster; a new image rolls one."""
    cfg, api, ctl, _kubeconfig = prod
    first = _live(api)["metadata"]["name"]
    data = cfg.model_dump(mode="json")
    data["providers"][1]["price_per_gpu_hour"] = 3.99
    data["traffic"]["jobs"] = 10
    api.apply(render(parse_config(data))["aws/40-rayservice.yaml"])
    assert ctl.created == [first] and len(ctl.submissions[first]) == 1
    data["kubernetes"]["image"] = "registry.example.com/easel/easel:0.1.1-ray2.60.0"
    api.apply(render(parse_config(data))["aws/40-rayservice.yaml"])
    second = _live(api)["metadata"]["name"]
    assert second != first and ctl.created == [first, second]
