"""Ray cluster-launcher configs per cloud: valid for `ray up`, A100 80GB workers, from config."""

from __future__ import annotations

import copy

import pytest

from cluster.kuberay import ManifestError
from cluster.launcher import INSTANCE_TYPES, LAUNCHER_CLOUDS, instance_for, render_launchers
from config import load_config, parse_config, shipped_config_path


def _three_clouds(**updates: object):
    """The default config with its providers moved to AWS, GCP and Azure."""
    data = load_config().model_dump(mode="json")
    for p, cloud in zip(data["providers"], LAUNCHER_CLOUDS, strict=True):
        p["cloud"] = cloud
        if cloud == "gcp":
            p["project_id"] = "easel-bench-123"
        p.update(updates)
    return parse_config(data)


def test_every_cloud_validates_with_rays_own_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _three_clouds()
    rendered = render_launchers(cfg)
    assert sorted(rendered) == sorted(f"{p.name}.yaml" for p in cfg.providers)
    for obj in rendered.values():
        validate_config(obj)
        validate_config(prepare_config(copy.deepcopy(obj)))  # with the cloud's defaults filled


def test_workers_are_a100_80gb_and_carry_the_provider_resource():
    cfg = _three_clouds(gpus_per_replica=2, capacity=8, min_replicas=1, max_replicas=4)
    for p in cfg.providers:
        obj = render_launchers(cfg)[f"{p.name}.yaml"]
        assert obj["provider"]["type"] == p.cloud
        head = obj["available_node_types"][obj["head_node_type"]]
        assert head["resources"] == {"CPU": 0}
        worker = obj["available_node_types"][f"gpu-{p.name}"]
        inst = next(t for t in INSTANCE_TYPES[p.cloud] if t.gpus == worker["resources"]["GPU"])
        assert inst.gpu == "A100-80GB" and inst.gpus >= 2
        assert worker["resources"][p.resource] > 0
        # Replica bounds in GPUs, turned into whole instances within the GPU capacity.
        assert worker["max_workers"] * inst.gpus <= p.capacity
        assert worker["min_workers"] * inst.gpus >= 1 * 2


def test_shipped_production_uses_the_instance_its_node_selector_names():
    cfg = load_config(shipped_config_path("production.example.yaml"))
    rendered = render_launchers(cfg)
    for p in cfg.providers:
        if p.cloud not in LAUNCHER_CLOUDS:
            assert f"{p.name}.yaml" not in rendered
            continue
        worker = rendered[f"{p.name}.yaml"]["available_node_types"][f"gpu-{p.name}"]
        named = p.node_selector.get("node.kubernetes.io/instance-type")
        if named:
            config = worker["node_config"]
            assert named in (
                config.get("InstanceType"),
                config.get("azure_arm_parameters", {}).get("vmSize"),
            )


def test_gcp_project_comes_from_the_config():
    cfg = _three_clouds()
    gcp = next(p for p in cfg.providers if p.cloud == "gcp")
    assert render_launchers(cfg)[f"{gcp.name}.yaml"]["provider"]["project_id"] == "easel-bench-123"
    data = cfg.model_dump(mode="json")
    next(p for p in data["providers"] if p["cloud"] == "gcp")["project_id"] = None
    with pytest.raises(ManifestError, match="set its project_id"):
        render_launchers(parse_config(data))


def test_nc_a100_v4_is_pcie_and_sxm_configs_skip_it():
    nc = [t for t in INSTANCE_TYPES["azure"] if t.name.startswith("Standard_NC")]
    assert nc and all(t.form == "PCIe" for t in nc)
    assert all(t.form == "SXM" for c in ("aws", "gcp") for t in INSTANCE_TYPES[c])
    cfg = _three_clouds(gpus_per_replica=2)
    azure = next(p for p in cfg.providers if p.cloud == "azure")
    assert instance_for(azure).name == "Standard_NC48ads_A100_v4"  # any form: the smallest
    assert instance_for(azure, "SXM").name == "Standard_ND96amsr_A100_v4"


def test_real_providers_pull_a_registry_image():
    cfg = load_config(shipped_config_path("production.example.yaml"))
    for obj in render_launchers(cfg).values():
        assert obj["docker"]["pull_before_run"] is True
        assert obj["docker"]["image"] == cfg.kubernetes.image
    with pytest.raises(ManifestError, match="names no registry"):
        render_launchers(cfg, image="easel:local")
    # A simulated rehearsal may run a local tag: nothing is pulled then.
    (obj,) = render_launchers(load_config()).values()
    assert obj["docker"]["pull_before_run"] is False


def test_unknown_instance_type_is_an_error():
    cfg = _three_clouds(node_selector={"node.kubernetes.io/instance-type": "p3.2xlarge"})
    with pytest.raises(ManifestError, match=r"p3\.2xlarge.*not a known aws instance"):
        instance_for(cfg.providers[0])


def test_gpu_without_instance_table_is_an_error():
    data = _three_clouds().model_dump(mode="json")
    data["gpus"].append({"name": "H100", "peak_tflops": 989, "memory_gb": 80})
    data["providers"][1]["gpu"] = "H100"
    with pytest.raises(ManifestError, match="no gcp instance carries 1 x H100"):
        render_launchers(parse_config(data))


def test_capacity_too_small_for_an_instance_is_an_error():
    cfg = _three_clouds(capacity=4)  # AWS's A100 80GB instance has 8 GPUs
    with pytest.raises(ManifestError, match=r"capacity 4 GPUs holds no p4de\.24xlarge"):
        render_launchers(cfg)


def test_launcher_cli(tmp_path, capsys):
    from easel.cli import main

    assert main(["cluster", "launcher", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["azure-sim.yaml"]
    assert "no launcher config for ['lambda-sim', 'runpod-sim']" in out
