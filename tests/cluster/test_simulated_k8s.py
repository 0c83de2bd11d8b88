"""The simulated Kubernetes API server: real HTTP, JSON/merge patch semantics, auth, records."""

from __future__ import annotations

import httpx
import pytest

from cluster.kuberay import render
from cluster.simulated_k8s import JSON_PATCH, MERGE_PATCH, SimulatedKubeApi
from config import load_config

PATH = "/apis/ray.io/v1/namespaces/easel/rayservices/easel-default"


@pytest.fixture
def api():
    with SimulatedKubeApi([render(load_config())["rayservice.yaml"]]) as server:
        yield server


def _client(api: SimulatedKubeApi, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token or api.token}"})


def test_get_and_list(api):
    with _client(api) as c:
        obj = c.get(PATH).json()
        assert obj["kind"] == "RayService" and obj["metadata"]["resourceVersion"]
        listing = c.get(PATH.rsplit("/", 1)[0]).json()
        assert listing["kind"] == "RayServiceList" and len(listing["items"]) == 1
        assert c.get(PATH + "-nope").status_code == 404
        assert c.get("/api/v1/pods").status_code == 404
    assert [call.status for call in api.calls] == [200, 200, 404, 404]


def test_token_is_required(api):
    with _client(api, token="wrong") as c:
        assert c.get(PATH).status_code == 401
    assert api.calls[-1].status == 401


def test_json_patch_with_test_guard(api):
    base = "/spec/rayClusterConfig/workerGroupSpecs/1"
    good = [{"op": "test", "path": f"{base}/groupName", "value": "runpod-sim"},
            {"op": "replace", "path": f"{base}/replicas", "value": 4}]  # fmt: skip
    wrong = [{"op": "test", "path": f"{base}/groupName", "value": "azure-sim"},
             {"op": "replace", "path": f"{base}/replicas", "value": 7}]  # fmt: skip
    with _client(api) as c:
        before = api.get("rayservices", "easel", "easel-default")["metadata"]["generation"]
        r = c.patch(PATH, json=good, headers={"Content-Type": JSON_PATCH})
        assert r.status_code == 200
        assert r.json()["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["replicas"] == 4
        assert r.json()["metadata"]["generation"] == before + 1
        r = c.patch(PATH, json=wrong, headers={"Content-Type": JSON_PATCH})
        assert r.status_code == 422 and "test failed" in r.json()["message"]
        r = c.patch(PATH, json=[{"op": "replace", "path": "/spec/nope/x", "value": 1}],
                    headers={"Content-Type": JSON_PATCH})  # fmt: skip
        assert r.status_code == 422
    groups = api.get("rayservices", "easel", "easel-default")["spec"]["rayClusterConfig"][
        "workerGroupSpecs"
    ]
    assert groups[1]["replicas"] == 4  # the failed patches changed nothing


def test_merge_patch_and_unsupported_type(api):
    with _client(api) as c:
        r = c.patch(PATH, json={"metadata": {"labels": {"team": "ops"}}},
                    headers={"Content-Type": MERGE_PATCH})  # fmt: skip
        assert r.status_code == 200 and r.json()["metadata"]["labels"]["team"] == "ops"
        r = c.patch(PATH, json={"metadata": {"labels": {"team": None}}},
                    headers={"Content-Type": MERGE_PATCH})  # fmt: skip
        assert "team" not in r.json()["metadata"]["labels"]
        r = c.patch(PATH, json={}, headers={"Content-Type": "application/apply-patch+yaml"})
        assert r.status_code == 415


def test_schema_checked_patches():
    from cluster.k8s_schema import default_crd_dir, load_schemas

    if not default_crd_dir().is_dir():
        pytest.skip("KubeRay CRDs not found (../shared/kuberay-crds)")
    obj = render(load_config())["rayservice.yaml"]
    with SimulatedKubeApi([obj], schemas=load_schemas(default_crd_dir())) as api, _client(api) as c:
        bad = [{"op": "replace", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/replicas",
                "value": "three"}]  # fmt: skip
        r = c.patch(PATH, json=bad, headers={"Content-Type": JSON_PATCH})
        assert r.status_code == 422 and "integer" in r.json()["message"]


def test_kubeconfig_drives_the_real_client(api, tmp_path):
    from cluster.scaling import custom_objects_api

    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="easel")
    client = custom_objects_api(str(kubeconfig))
    obj = client.get_namespaced_custom_object("ray.io", "v1", "easel", "rayservices",
                                              "easel-default")  # fmt: skip
    assert obj["metadata"]["name"] == "easel-default"
    assert api.calls[-1].method == "GET" and api.calls[-1].status == 200
