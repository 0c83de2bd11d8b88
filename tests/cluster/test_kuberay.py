"""KubeRay manifests: rendered from the config, valid against the CRDs, never drifting."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from cluster.k8s_schema import default_crd_dir, load_schemas, validate_files
from cluster.kuberay import (
    CONFIG_PATH,
    PROVIDER_RESOURCE_UNITS,
    SERVE_IMPORT_PATH,
    ManifestError,
    default_image,
    render,
    write_manifests,
)
from cluster.shipped import SHIPPED, default_k8s_dir, render_shipped
from config import load_config, parse_config, shipped_config_path

CRDS = default_crd_dir()
needs_crds = pytest.mark.skipif(
    not CRDS.is_dir(), reason=f"KubeRay CRDs not found at {CRDS} (../shared/kuberay-crds)"
)
RAY_VERSION = importlib.metadata.version("ray")


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    cfg = load_config(shipped_config_path(SHIPPED[request.param]))
    return cfg, render(cfg)


def _cluster(obj: dict) -> dict:
    return (
        obj["spec"]["rayClusterConfig"]
        if obj["kind"] == "RayService"
        else obj["spec"]["rayClusterSpec"]
    )


@needs_crds
def test_shipped_manifests_validate(shipped, tmp_path):
    cfg, _ = shipped
    written = write_manifests(cfg, tmp_path)
    report = validate_files(written, load_schemas(CRDS))
    assert report == {str(p): [] for p in written}


def test_ray_version_and_image_pinned(shipped):
    _, objs = shipped
    for name in ("rayservice.yaml", "rayjob-bench.yaml"):
        spec = _cluster(objs[name])
        assert spec["rayVersion"] == RAY_VERSION
        images = [c["image"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
                  for c in g["template"]["spec"]["containers"]]  # fmt: skip
        assert images and all(i == default_image() for i in images)
        assert default_image().endswith(f"-ray{RAY_VERSION}")


def test_dockerfile_builds_on_the_same_ray():
    text = (default_k8s_dir() / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(RAY_VERSION)}$", text, re.M), (
        f"k8s/Dockerfile's RAY_VERSION differs from the installed Ray {RAY_VERSION}"
    )


def test_serve_config_runs_the_easel_serve_app_on_the_mounted_config(shipped):
    from ray.serve.schema import ServeDeploySchema

    cfg, objs = shipped
    serve_cfg = yaml.safe_load(objs["rayservice.yaml"]["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_cfg)  # Ray Serve's own schema for config files
    (app,) = serve_cfg["applications"]
    assert app["import_path"] == SERVE_IMPORT_PATH
    assert app["args"] == {"config": CONFIG_PATH}
    assert serve_cfg["http_options"]["port"] == cfg.serve.port
    # The mounted file is the ConfigMap, holding this very config.
    cm = objs["configmap.yaml"]
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).digest() == cfg.digest()
    head = _cluster(objs["rayservice.yaml"])["headGroupSpec"]["template"]["spec"]
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "easel-config"]
    assert CONFIG_PATH.startswith(mount["mountPath"] + "/")
    (vol,) = [v for v in head["volumes"] if v["name"] == "easel-config"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]


def test_worker_group_per_provider(shipped):
    cfg, objs = shipped
    spec = _cluster(objs["rayservice.yaml"])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == [p.name for p in cfg.providers]
    for p in cfg.providers:
        g = groups[p.name]
        assert g["resources"] == {p.resource: str(PROVIDER_RESOURCE_UNITS)}
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert g["maxReplicas"] <= p.capacity // p.gpus_per_replica
        pod = g["template"]["spec"]
        (c,) = pod["containers"]
        assert c["resources"]["requests"] == c["resources"]["limits"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(p.gpus_per_replica)
        assert pod["nodeSelector"] == (
            dict(p.node_selector) or {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        )
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]


def test_secrets_only_by_reference(shipped):
    cfg, objs = shipped
    gcs = objs["rayservice.yaml"]["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] == cfg.kubernetes.redis_address
    assert gcs["redisPassword"] == {
        "valueFrom": {
            "secretKeyRef": {
                "name": cfg.kubernetes.redis_password_secret,
                "key": cfg.kubernetes.redis_password_key,
            }
        }
    }
    head = _cluster(objs["rayservice.yaml"])["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    assert cfg.serve.admin_key_env in env
    for e in env.values():
        assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == (
            cfg.kubernetes.secret_name
        )


def test_rayjob_runs_easel_bench(shipped):
    cfg, objs = shipped
    job = objs["rayjob-bench.yaml"]["spec"]
    assert job["entrypoint"].startswith(f"easel bench --config {CONFIG_PATH} --out ")
    assert job["shutdownAfterJobFinishes"] is True
    groups = [g["groupName"] for g in job["rayClusterSpec"]["workerGroupSpecs"]]
    assert groups == [p.name for p in cfg.providers]


def test_committed_manifests_equal_a_fresh_render(tmp_path):
    root = default_k8s_dir()
    render_shipped(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.yaml")}
    committed = {
        p.relative_to(root): p.read_text()
        for name in SHIPPED for p in (root / name).rglob("*.yaml")
    }  # fmt: skip
    stale = sorted(str(p) for p in fresh if committed.get(p) != fresh[p])
    stale += sorted(str(p) for p in committed if p not in fresh)
    assert not stale, f"k8s/ differs from the configs in {stale}: run `easel k8s render --shipped`"


def test_config_change_renames_the_configmap():
    cfg = load_config()
    data = cfg.model_dump(mode="json")
    data["serve"]["port"] = 8123
    other = parse_config(data)
    a, b = render(cfg)["configmap.yaml"], render(other)["configmap.yaml"]
    assert a["metadata"]["name"] != b["metadata"]["name"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(name="has_underscore"), "cannot name a RayService"),
        (lambda d: d["providers"][0].update(name="under_score"), "cannot name a worker group"),
        (lambda d: d["models"][0].update(num_gpus=2), "raise the provider's gpus_per_replica"),
        (
            lambda d: (
                d["gpus"].append({"name": "H100", "peak_tflops": 989, "memory_gb": 80})
                or d["providers"][0].update(gpu="H100")
            ),
            "set node_selector",
        ),
    ],
)
def test_undeployable_configs_are_clear_errors(change, message):
    data = load_config().model_dump(mode="json")
    change(data)
    # Keep model references valid after a provider rename.
    names = {p["name"] for p in data["providers"]}
    for m in data["models"]:
        m["providers"] = [p if p in names else data["providers"][0]["name"] for p in m["providers"]]
    with pytest.raises(ManifestError, match=re.escape(message)):
        render(parse_config(data))


def test_render_cli_writes_files(tmp_path):
    from easel.cli import main

    assert main(["k8s", "render", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "configmap.yaml", "rayjob-bench.yaml", "rayservice.yaml"]  # fmt: skip
    assert main(["k8s", "render", "--shipped", "--out", str(tmp_path)]) == 2


@needs_crds
def test_validate_cli_flags_a_broken_manifest(tmp_path, capsys):
    from easel.cli import main

    write_manifests(load_config(), tmp_path)
    assert main(["k8s", "validate", str(tmp_path)]) == 0
    path: Path = tmp_path / "rayservice.yaml"
    path.write_text(path.read_text().replace("minReplicas:", "minReplica:", 1))
    assert main(["k8s", "validate", str(tmp_path)]) == 1
    assert "minReplica" in capsys.readouterr().out


def test_provider_tolerations_are_rendered_and_checked():
    from config import ConfigError

    data = load_config().model_dump(mode="json")
    data["providers"][0]["tolerations"] = [
        {"key": "lambda.ai/gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    ]
    spec = render(parse_config(data))["rayservice.yaml"]["spec"]["rayClusterConfig"]
    tolerations = spec["workerGroupSpecs"][0]["template"]["spec"]["tolerations"]
    assert tolerations[1] == data["providers"][0]["tolerations"][0]
    assert len(spec["workerGroupSpecs"][1]["template"]["spec"]["tolerations"]) == 1
    data["providers"][0]["tolerations"] = [{"key": "x", "operator": "Equal"}]
    with pytest.raises(ConfigError, match="operator 'Equal' needs a value"):
        parse_config(data)
