"""The simulated Kubernetes API server answers as a real one does: real HTTP, the real client,
JSON/merge patch, the status subresource, generation, conflicts, 422s and auth."""

from __future__ import annotations

import httpx
import pytest

from cluster.k8s_schema import default_crd_dir, load_schemas
from cluster.kuberay import render
from config import load_config
from tests.cluster.simulated_k8s import GENERIC_422, JSON_PATCH, MERGE_PATCH, SimulatedKubeApi

NAME = "easel-default-runpod-sim"
PATH = f"/apis/ray.io/v1/namespaces/easel/rayservices/{NAME}"


@pytest.fixture
def api():
    with SimulatedKubeApi([render(load_config())["runpod-sim/40-rayservice.yaml"]]) as server:
        yield server


def _client(api: SimulatedKubeApi, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token or api.token}"})


def test_get_list_create_delete(api):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    with _client(api) as c:
        obj = c.get(PATH).json()
        assert obj["kind"] == "RayService" and obj["metadata"]["resourceVersion"]
        listing = c.get(PATH.rsplit("/", 1)[0]).json()
        assert listing["kind"] == "RayServiceList" and len(listing["items"]) == 1
        assert c.get(PATH + "-nope").json()["reason"] == "NotFound"
        assert c.post("/api/v1/namespaces/easel/configmaps", json=cm).status_code == 200
        assert c.post("/api/v1/namespaces/easel/configmaps", json=cm).status_code == 409
        assert c.get("/api/v1/namespaces/easel/configmaps/c").json()["data"] == {"a": "1"}
        assert c.delete("/api/v1/namespaces/easel/configmaps/c").status_code == 200
        assert c.get("/api/v1/namespaces/easel/configmaps/c").status_code == 404
    assert [call.status for call in api.calls] == [200, 200, 404, 200, 409, 200, 200, 404]


def test_token_is_required(api):
    with _client(api, token="wrong") as c:
        assert c.get(PATH).status_code == 401


def test_a_failed_json_patch_answers_422_with_the_generic_message(api):
    base = "/spec/rayClusterConfig/workerGroupSpecs/0"
    good = [
        {"op": "test", "path": f"{base}/groupName", "value": "cpu"},
        {"op": "replace", "path": f"{base}/maxReplicas", "value": 4},
    ]
    wrong = [
        {"op": "test", "path": f"{base}/groupName", "value": "gpu"},
        {"op": "replace", "path": f"{base}/maxReplicas", "value": 7},
    ]
    missing = [{"op": "replace", "path": "/spec/nope/x", "value": 1}]
    with _client(api) as c:
        before = api.get("rayservices", "easel", NAME)["metadata"]["generation"]
        r = c.patch(PATH, json=good, headers={"Content-Type": JSON_PATCH})
        assert r.status_code == 200 and r.json()["metadata"]["generation"] == before + 1
        for patch, cause in ((wrong, "testing value"), (missing, "missing path")):
            r = c.patch(PATH, json=patch, headers={"Content-Type": JSON_PATCH})
            body = r.json()
            # k8s.io/apiserver answers a patch it cannot apply with its generic 422 ...
            assert (r.status_code, body["reason"], body["message"]) == (422, "Invalid", GENERIC_422)
            # ... and jsonpatch's own error only in the details.
            assert cause in body["details"]["causes"][0]["message"]
    groups = api.get("rayservices", "easel", NAME)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert groups[0]["maxReplicas"] == 4  # the failed patches changed nothing


def test_status_is_a_subresource(api):
    with _client(api) as c:
        gen = api.get("rayservices", "easel", NAME)["metadata"]["generation"]
        # A write to the object leaves its status alone, and a label changes no generation.
        r = c.patch(
            PATH,
            json={"status": {"serviceStatus": "Running"}, "metadata": {"labels": {"team": "ops"}}},
            headers={"Content-Type": MERGE_PATCH},
        )
        assert r.json()["metadata"]["labels"]["team"] == "ops"
        assert r.json().get("status", {}) == {} and r.json()["metadata"]["generation"] == gen
        r = c.patch(
            PATH + "/status",
            json={"status": {"serviceStatus": "Running"}, "spec": {"serveConfigV2": "x"}},
            headers={"Content-Type": MERGE_PATCH},
        )
        assert r.json()["status"] == {"serviceStatus": "Running"}
        assert r.json()["spec"]["serveConfigV2"] != "x"


def test_put_with_a_stale_resource_version_conflicts(api):
    with _client(api) as c:
        obj = c.get(PATH).json()
        stale = dict(obj, metadata=dict(obj["metadata"], resourceVersion="1"))
        assert c.put(PATH, json=stale).status_code == 409
        assert c.put(PATH, json=obj).status_code == 200


def test_unsupported_patch_type(api):
    with _client(api) as c:
        r = c.patch(PATH, json={}, headers={"Content-Type": "application/apply-patch+yaml"})
        assert r.status_code == 415


def test_strict_schema_check():
    obj = render(load_config())["runpod-sim/40-rayservice.yaml"]
    with SimulatedKubeApi([obj], schemas=load_schemas(default_crd_dir())) as api, _client(api) as c:
        bad = [
            {"op": "add", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/replicaz", "value": 3}
        ]
        r = c.patch(PATH, json=bad, headers={"Content-Type": JSON_PATCH})
        assert r.status_code == 422 and "replicaz" in r.json()["message"]


def test_kubeconfig_drives_the_real_client(api, tmp_path):
    from cluster.scaling import custom_objects_api

    with SimulatedKubeApi() as other:
        kubeconfig = api.write_kubeconfig(
            tmp_path / "kc", namespace="easel", others={"second": other}
        )
        client = custom_objects_api(str(kubeconfig))
        obj = client.get_namespaced_custom_object("ray.io", "v1", "easel", "rayservices", NAME)
        assert obj["metadata"]["name"] == NAME
        second = custom_objects_api(str(kubeconfig), context="second")
        listing = second.list_namespaced_custom_object("ray.io", "v1", "easel", "rayservices")
        assert listing["items"] == [] and other.calls[-1].method == "GET"
