"""KubeRay manifests: one RayService per provider serving only its models, valid against the
vendored CRDs, sized to fit, rolling only on what pods run, never drifting from the configs."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from cluster.capacity import hosted_models
from cluster.k8s_schema import default_crd_dir, load_schemas, validate_files
from cluster.kuberay import (
    APP_IMPORT_PATH,
    CONFIG_PATH,
    MODEL_APP_IMPORT_PATH,
    PROVIDER_RESOURCE_UNITS,
    ManifestError,
    default_image,
    render,
    serve_deployment_name,
    write_manifests,
)
from cluster.shipped import SHIPPED, default_k8s_dir, render_shipped
from config import load_config, parse_config, shipped_config_path
from serve_apps.api.paths import model_route_prefix
from serve_apps.provider.app import model_app_name

RAY_VERSION = importlib.metadata.version("ray")
PROD = shipped_config_path("production.example.yaml")


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    cfg = load_config(shipped_config_path(SHIPPED[request.param]))
    return cfg, render(cfg)


def _rayservices(cfg, objs) -> dict:
    return {
        p.name: objs[f"{p.name}/40-rayservice.yaml"]
        for p in cfg.providers
        if f"{p.name}/40-rayservice.yaml" in objs
    }


def test_crds_are_vendored():
    assert default_crd_dir().is_relative_to(Path(__file__).resolve().parents[2] / "cluster")
    assert {p.name for p in default_crd_dir().glob("ray.io_*.yaml")} == {
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    }


def test_shipped_manifests_validate_strictly(shipped, tmp_path):
    cfg, _ = shipped
    written = write_manifests(cfg, tmp_path)
    report = validate_files(written, load_schemas(default_crd_dir()))
    assert report == {str(p): [] for p in written}
    kinds = {yaml.safe_load(p.read_text().split("\n", 1)[1])["kind"] for p in written}
    assert {
        "RayService",
        "RayJob",
        "Deployment",
        "Service",
        "Job",
        "PersistentVolumeClaim",
    } <= kinds


def test_one_rayservice_per_provider_serving_only_its_models(shipped):
    from ray.serve.schema import ServeDeploySchema

    cfg, objs = shipped
    services = _rayservices(cfg, objs)
    assert sorted(services) == sorted(p.name for p in cfg.providers if hosted_models(cfg, p))
    for name, rs in services.items():
        p = cfg.provider(name)
        assert rs["metadata"]["namespace"] == (p.kubernetes.namespace or cfg.kubernetes.namespace)
        # Each provider's folder names the kube context it is applied in.
        context = p.kubernetes.context or cfg.kubernetes.context or "(current)"
        for obj in (rs, objs[f"{name}/00-namespace.yaml"]):
            assert obj["metadata"]["annotations"]["easel.dev/kube-context"] == context
        serve_cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
        ServeDeploySchema.model_validate(serve_cfg)  # Ray Serve's own schema for config files
        ingress, *model_apps = serve_cfg["applications"]
        assert ingress["import_path"] == APP_IMPORT_PATH and ingress["route_prefix"] == "/"
        assert ingress["args"] == {"config": CONFIG_PATH, "provider": name}
        assert "deployments" not in ingress  # the models run in their own apps
        models = [m for m in hosted_models(cfg, p)]
        # One app per model, under the names and routes the provider app uses (its model
        # apps are `<ingress app>--<model>`; the gateway sends to `/models/<model>`).
        assert [(a["name"], a["route_prefix"]) for a in model_apps] == [
            (model_app_name(name, m.name), model_route_prefix("/", m.name)) for m in models
        ]
        for a, m in zip(model_apps, models, strict=True):
            assert a["import_path"] == MODEL_APP_IMPORT_PATH
            assert a["args"] == {"config": CONFIG_PATH, "provider": name, "model": m.name}
            (d,) = a["deployments"]
            assert d["name"] == serve_deployment_name(m.name, name)
            auto = d["autoscaling_config"]
            assert (auto["min_replicas"], auto["max_replicas"]) == (
                m.autoscaling.min_replicas,
                m.autoscaling.max_replicas,
            )
        cluster = rs["spec"]["rayClusterConfig"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["rayVersion"] == RAY_VERSION
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        for g in cluster["workerGroupSpecs"]:
            assert g["resources"] == {p.resource: str(PROVIDER_RESOURCE_UNITS)}
            assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
            (c,) = g["template"]["spec"]["containers"]
            assert c["resources"]["requests"] == c["resources"]["limits"]


def test_deployment_names_match_the_serving_app():
    """serveConfigV2 overrides deployments by name: they must be the names the app builds."""
    from serve_apps.provider import app

    cfg = load_config()
    for m in cfg.models:
        for p in m.providers:
            built = app.deployment_options(m, cfg.provider(p))["name"]
            assert built == serve_deployment_name(m.name, p)


def test_gpu_groups_cover_the_deployments_max_replicas():
    cfg = load_config(PROD)
    objs = render(cfg)
    for name, rs in _rayservices(cfg, objs).items():
        p = cfg.provider(name)
        (gpu,) = [
            g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu"
        ]
        pod_gpus = int(
            gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        )
        pod_cpus = float(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        models = [m for m in hosted_models(cfg, p) if m.num_gpus]
        assert gpu["maxReplicas"] * pod_gpus >= sum(
            m.autoscaling.max_replicas * m.num_gpus for m in models
        )
        assert gpu["maxReplicas"] * pod_cpus >= sum(
            m.autoscaling.max_replicas * m.num_cpus for m in models
        )
        assert gpu["maxReplicas"] <= p.capacity // p.gpus_per_replica
        pod = gpu["template"]["spec"]
        assert pod["nodeSelector"] == dict(p.node_selector)
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]


def test_render_refuses_a_config_that_cannot_fit():
    data = load_config(PROD).model_dump(mode="json")
    data["providers"][1]["capacity"] = 8  # aws: 4 pods of 2 GPUs, the deployments need 7
    with pytest.raises(ManifestError, match=r"provider 'aws', worker group 'gpu'.*short by 3 pods"):
        render(parse_config(data))


def test_weights_reach_pods_from_the_cache_offline(shipped):
    cfg, objs = shipped
    for name, rs in _rayservices(cfg, objs).items():
        cluster = rs["spec"]["rayClusterConfig"]
        pvc = objs[f"{name}/20-model-cache.yaml"]
        for pod in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            spec = pod["template"]["spec"]
            (vol,) = [v for v in spec["volumes"] if v["name"] == "models"]
            assert vol["persistentVolumeClaim"] == {
                "claimName": pvc["metadata"]["name"],
                "readOnly": True,
            }
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == "/models/hf"
            assert "HF_TOKEN" not in env  # serving pods never hold the hub token
        job = objs[f"{name}/30-weights-job.yaml"]["spec"]["template"]["spec"]
        (c,) = job["containers"]
        assert c["command"][:3] == ["easel", "k8s", "weights"]
        token = next(e for e in c["env"] if e["name"] == "HF_TOKEN")
        assert token["valueFrom"]["secretKeyRef"] == {
            "name": cfg.kubernetes.secret_name,
            "key": "HF_TOKEN",
            "optional": True,
        }
        assert "HF_HUB_OFFLINE" not in {e["name"] for e in c["env"]}


def test_unpinned_hub_weights_are_refused():
    data = load_config(PROD).model_dump(mode="json")
    data["models"][0]["revision"] = None
    with pytest.raises(ManifestError, match=r"pin the hub weights.*FLUX\.2-dev"):
        render(parse_config(data))


def test_secrets_only_by_reference(shipped):
    cfg, objs = shipped
    for rs in _rayservices(cfg, objs).values():
        gcs = rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
        assert gcs["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == (
            cfg.kubernetes.redis_password_secret
        )
    # Every env variable that carries a secret comes from a Secret, never a literal value.
    for path, obj in objs.items():
        for env in _env_lists(obj):
            for e in env:
                if any(w in e["name"] for w in ("KEY", "TOKEN", "PASSWORD", "SECRET")):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (path, e)


def _env_lists(node):
    if isinstance(node, dict):
        if isinstance(node.get("env"), list):
            yield node["env"]
        for v in node.values():
            yield from _env_lists(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_lists(v)


def test_dockerfile_builds_on_the_same_ray():
    text = (default_k8s_dir() / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(RAY_VERSION)}$", text, re.M), (
        f"k8s/Dockerfile's RAY_VERSION differs from the installed Ray {RAY_VERSION}"
    )
    assert default_image().endswith(f"-ray{RAY_VERSION}")


def test_real_providers_need_a_pullable_image():
    data = load_config(PROD).model_dump(mode="json")
    data["kubernetes"]["image"] = "easel:0.1.0"
    with pytest.raises(ManifestError, match="names no registry"):
        render(parse_config(data))
    # Simulated providers (a kind/minikube rehearsal) may use a locally loaded tag.
    assert render(load_config())


def _names(objs: dict) -> dict[str, str]:
    return {k: o["metadata"]["name"] for k, o in objs.items()}


def test_a_resolved_config_renders_the_same():
    """A config dumped and read back (a run folder's config.yaml) renders the same objects."""
    for cfg in (load_config(), load_config(PROD)):
        again = parse_config(cfg.model_dump(mode="json"))
        assert render(again) == render(cfg)


def test_only_what_pods_run_rolls_them():
    """A price, the traffic or an operator threshold changes no pod template and no name; a
    model change rolls only the providers that serve it (a new ConfigMap name)."""
    cfg = load_config(PROD)
    base = render(cfg)
    data = cfg.model_dump(mode="json")
    data["providers"][1]["price_per_gpu_hour"] = 4.99
    data["traffic"]["jobs"] = 50
    data["operator"]["queue_high"] = 9
    data["evaluation"]["bootstrap"] = 10
    data["models"][0]["autoscaling"]["max_replicas"] = 3  # Serve applies it in place
    same = render(parse_config(data))
    for name in _rayservices(cfg, base):
        key = f"{name}/40-rayservice.yaml"
        assert same[key]["spec"]["rayClusterConfig"] == base[key]["spec"]["rayClusterConfig"]
        assert (
            _names(same)[f"{name}/10-configmap.yaml"] == _names(base)[f"{name}/10-configmap.yaml"]
        )
    assert (
        same["aws/40-rayservice.yaml"]["spec"]["serveConfigV2"]
        != (base["aws/40-rayservice.yaml"]["spec"]["serveConfigV2"])
    )
    # The gateway routes by price (cheapest_healthy): its config, and so its pods, change.
    assert _names(same)["gateway/10-configmap.yaml"] != _names(base)["gateway/10-configmap.yaml"]

    data = cfg.model_dump(mode="json")
    data["models"][0]["providers"] = ["lambda", "aws"]  # flux2-dev leaves azure
    data["models"][1]["batching"]["max_batch_size"] = 2  # flux2-schnell, on all three
    moved = render(parse_config(data))
    for name in ("lambda", "aws", "azure"):
        key = f"{name}/40-rayservice.yaml"
        assert moved[key]["spec"]["rayClusterConfig"] != base[key]["spec"]["rayClusterConfig"]


def test_committed_manifests_equal_a_fresh_render(tmp_path):
    root = default_k8s_dir()
    render_shipped(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.yaml")}
    committed = {
        p.relative_to(root): p.read_text()
        for name in SHIPPED
        for p in (root / name).rglob("*.yaml")
    }
    stale = sorted(str(p) for p in fresh if committed.get(p) != fresh[p])
    stale += sorted(str(p) for p in committed if p not in fresh)
    assert not stale, f"k8s/ differs from the configs in {stale}: run `easel k8s render --shipped`"


def _rename(data: dict, old: str, new: str) -> None:
    for p in data["providers"]:
        if p["name"] == old:
            p["name"] = new
    for m in data["models"]:
        m["providers"] = [new if p == old else p for p in m["providers"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["kubernetes"].update(name="a" * 40) or _rename(d, "lambda", "lambda-labs"),
            "cannot name provider 'lambda-labs'",
        ),
        (lambda d: d["models"][0].update(num_gpus=3), "raise the provider's gpus_per_replica"),
        (
            lambda d: (
                d["gpus"].append({"name": "H100", "peak_tflops": 989, "memory_gb": 80})
                or d["providers"][0].update(gpu="H100", node_selector={})
            ),
            "set node_selector",
        ),
    ],
)
def test_undeployable_configs_are_clear_errors(change, message):
    data = load_config(PROD).model_dump(mode="json")
    change(data)
    with pytest.raises(ManifestError, match=re.escape(message)):
        render(parse_config(data))


def test_pcie_gpus_get_the_pcie_product_label():
    data = load_config(PROD).model_dump(mode="json")
    data["gpus"][0]["form_factor"] = "PCIe"
    data["providers"][0]["node_selector"] = {}
    rs = render(parse_config(data))["lambda/40-rayservice.yaml"]
    (gpu,) = [
        g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu"
    ]
    assert gpu["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"
    }


def test_provider_tolerations_are_rendered():
    data = load_config(PROD).model_dump(mode="json")
    data["providers"][0]["tolerations"] = [
        {"key": "lambda.ai/gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    ]
    rs = render(parse_config(data))["lambda/40-rayservice.yaml"]
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert (
        groups["gpu"]["template"]["spec"]["tolerations"][1]
        == (data["providers"][0]["tolerations"][0])
    )
    assert "tolerations" not in groups["cpu"]["template"]["spec"]  # CPU pods avoid GPU nodes


def test_render_cli_writes_folders(tmp_path):
    from easel.cli import main

    assert main(["k8s", "render", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "azure-sim",
        "bench",
        "gateway",
        "lambda-sim",
        "runpod-sim",
    ]
    assert sorted(p.name for p in (tmp_path / "runpod-sim").iterdir()) == [
        "00-namespace.yaml",
        "10-configmap.yaml",
        "20-model-cache.yaml",
        "30-weights-job.yaml",
        "40-rayservice.yaml",
    ]
    assert main(["k8s", "render", "--shipped", "--out", str(tmp_path)]) == 2


def test_validate_cli_flags_a_broken_manifest(tmp_path, capsys):
    from easel.cli import main

    write_manifests(load_config(), tmp_path)
    assert main(["k8s", "validate", str(tmp_path)]) == 0
    path = tmp_path / "lambda-sim" / "40-rayservice.yaml"
    path.write_text(path.read_text().replace("minReplicas:", "minReplica:", 1))
    assert main(["k8s", "validate", str(tmp_path)]) == 1
    assert "minReplica" in capsys.readouterr().out


def test_render_refuses_local_modes_shared_tiny_replicas():
    data = load_config(None).model_dump(mode="json")
    data["serve"]["share_tiny_replicas"] = True
    with pytest.raises(ValueError, match="share_tiny_replicas is a local-mode setting"):
        render(parse_config(data, "<shared>"))
