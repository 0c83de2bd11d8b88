"""The simulated KubeRay controller follows the RayService controller's rules (v1.7.0)."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from cluster.kuberay import render
from config import load_config
from tests.cluster.simulated_k8s import SimulatedKubeApi
from tests.cluster.simulated_kuberay import HASH_KEY, SimulatedKubeRay

NS, NAME = "easel", "easel-default-runpod-sim"


@pytest.fixture
def rayservice() -> dict:
    return render(load_config())["runpod-sim/40-rayservice.yaml"]


def _status(api):
    return api.get("rayservices", NS, NAME)["status"]


def _active(api) -> str:
    return _status(api)["activeServiceStatus"]["rayClusterName"]


def test_a_new_rayservice_gets_a_cluster_with_a_generated_name(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        name = _active(api)
        assert re.fullmatch(rf"{NAME}-[a-z0-9]{{5}}", name)
        cluster = api.get("rayclusters", NS, name)
        assert cluster["metadata"]["labels"]["ray.io/originated-from-cr-name"] == NAME
        assert cluster["metadata"]["annotations"][HASH_KEY]
        assert cluster["spec"] == rayservice["spec"]["rayClusterConfig"]
        status = _status(api)
        assert status["serviceStatus"] == "Running"
        assert status["activeServiceStatus"]["applications"]["runpod-sim"]["status"] == "RUNNING"
        assert ctl.created == [name] and len(ctl.submissions[name]) == 1


def test_pending_until_ready_then_promoted(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api, auto_ready=False)
        api.apply(rayservice)
        status = _status(api)
        pending = status["pendingServiceStatus"]["rayClusterName"]
        assert pending and not status.get("activeServiceStatus", {}).get("rayClusterName")
        assert status["serviceStatus"] == "NotRunning"
        ctl.make_ready(pending)
        assert _active(api) == pending and _status(api)["pendingServiceStatus"] == {}


def test_replica_fields_on_the_rayservice_change_nothing(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        name = _active(api)
        before = api.get("rayclusters", NS, name)
        edited = copy.deepcopy(rayservice)
        for g in edited["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
            g.update(replicas=3, minReplicas=2, maxReplicas=9)
        api.apply(edited)
        assert _active(api) == name and ctl.created == [name]
        assert api.get("rayclusters", NS, name)["spec"] == before["spec"]
        assert len(ctl.submissions[name]) == 1


def test_a_cluster_spec_change_rolls_a_new_cluster(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        old = _active(api)
        edited = copy.deepcopy(rayservice)
        head = edited["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        head["containers"][0]["image"] = "registry.example.com/easel:next"
        api.apply(edited)
        new = _active(api)
        assert new != old and ctl.created == [old, new]
        assert api.get("rayclusters", NS, old)  # kept for rayClusterDeletionDelaySeconds
        ctl.tick(rayservice["spec"]["rayClusterDeletionDelaySeconds"])
        assert ctl.deleted == [old] and [
            c["metadata"]["name"] for c in api.list("rayclusters", NS)
        ] == [new]


def test_upgrade_strategy_none_leaves_the_cluster(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        edited = copy.deepcopy(rayservice)
        edited["spec"]["upgradeStrategy"] = {"type": "None"}
        edited["spec"]["rayClusterConfig"]["rayVersion"] = "9.9.9"
        api.apply(edited)
        assert len(ctl.created) == 1


def test_worker_groups_appended_update_the_cluster_in_place(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        name = _active(api)
        edited = copy.deepcopy(rayservice)
        groups = edited["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        groups.append(dict(copy.deepcopy(groups[0]), groupName="extra"))
        api.apply(edited)
        assert ctl.created == [name]
        live = api.get("rayclusters", NS, name)["spec"]["workerGroupSpecs"]
        assert [g["groupName"] for g in live] == ["cpu", "extra"]


def test_serve_config_changes_apply_in_place(rayservice):
    with SimulatedKubeApi() as api:
        ctl = SimulatedKubeRay(api)
        api.apply(rayservice)
        name = _active(api)
        edited = copy.deepcopy(rayservice)
        serve = yaml.safe_load(edited["spec"]["serveConfigV2"])
        # applications[0] is the provider's ingress; each model's app follows with its deployment
        serve["applications"][1]["deployments"][0]["autoscaling_config"]["max_replicas"] = 3
        edited["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
        api.apply(edited)
        assert ctl.created == [name] and len(ctl.submissions[name]) == 2
        assert "max_replicas: 3" in ctl.submissions[name][-1]


def test_serve_refuses_a_bad_config(rayservice):
    with SimulatedKubeApi() as api:
        # A model app whose overridden deployment does not exist in what the app builds.
        model_app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][1]
        SimulatedKubeRay(api, app_deployments={model_app["name"]: ["ProviderIngress"]})
        api.apply(rayservice)
        status = _status(api)
        # The pending cluster never serves, so it is never promoted.
        assert not status.get("activeServiceStatus", {}).get("rayClusterName")
        assert status["serviceStatus"] == "NotRunning"
        pending = status["pendingServiceStatus"]
        (failed,) = [a for a in pending["applications"].values() if a["status"] != "RUNNING"]
        assert failed["status"] == "DEPLOY_FAILED"
        assert "does not exist. Available: ['ProviderIngress']" in failed["message"]
