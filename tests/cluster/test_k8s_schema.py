"""Offline manifest validation catches what a strict API server would reject."""

from __future__ import annotations

import copy

import pytest

from cluster.k8s_schema import SchemaSet, default_crd_dir, load_schemas, validate_files
from cluster.kuberay import render
from config import load_config

CRDS = default_crd_dir()  # vendored in the package: these tests never skip


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return load_schemas(CRDS)


@pytest.fixture(scope="module")
def rendered() -> dict:
    return render(load_config())


def test_crds_loaded(schemas):
    for kind in ("RayService", "RayCluster", "RayJob"):
        assert ("ray.io/v1", kind) in schemas.crds


def test_unknown_field_is_rejected(schemas, rendered):
    obj = copy.deepcopy(rendered["lambda-sim/40-rayservice.yaml"])
    obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicaz"] = 2
    problems = schemas.validate(obj)
    assert any("workerGroupSpecs[0]" in p and "replicaz" in p for p in problems), problems


def test_wrong_type_and_bad_quantity_are_rejected(schemas, rendered):
    obj = copy.deepcopy(rendered["lambda-sim/40-rayservice.yaml"])
    group = obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["replicas"] = "two"
    group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    problems = schemas.validate(obj)
    assert any(p.endswith("'two' is not of type 'integer'") for p in problems), problems
    assert any("limits.memory" in p for p in problems), problems


def test_metadata_checked_as_object_meta(schemas, rendered):
    obj = copy.deepcopy(rendered["bench/40-rayjob.yaml"])
    obj["metadata"]["label"] = {"a": "b"}
    assert any(p.startswith("metadata.label") for p in schemas.validate(obj))


def test_builtin_kinds_use_kubernetes_models(schemas, rendered):
    cm = copy.deepcopy(rendered["lambda-sim/10-configmap.yaml"])
    assert schemas.validate(cm) == []
    cm["data"]["n"] = 3
    cm["spec"] = {}
    problems = schemas.validate(cm)
    assert any(p.startswith("data.n") for p in problems), problems
    assert any(p.startswith("spec") for p in problems), problems
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"password": "x"},
        "type": "Opaque",
    }
    assert schemas.validate(secret) == []
    for name in (
        "gateway/20-deployment.yaml",
        "lambda-sim/30-weights-job.yaml",
        "lambda-sim/20-model-cache.yaml",
        "bench/30-data-loader.yaml",
    ):
        obj = copy.deepcopy(rendered[name])
        assert schemas.validate(obj) == []
        obj["spec"]["bogus"] = 1
        assert any(p.startswith("spec.bogus") for p in schemas.validate(obj)), name


def test_unknown_kind_is_a_problem(schemas):
    problems = schemas.validate({"apiVersion": "apps/v1", "kind": "StatefulSet"})
    assert problems and "no schema for apps/v1 StatefulSet" in problems[0]


def test_validate_files_reports_per_document(tmp_path, schemas):
    path = tmp_path / "two.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\nbogus: 1\n"
    )
    report = validate_files([path], schemas)
    assert report[str(path)] and all(p.startswith("document 1:") for p in report[str(path)])


def test_missing_crd_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CRD folder"):
        SchemaSet(tmp_path / "nope")
