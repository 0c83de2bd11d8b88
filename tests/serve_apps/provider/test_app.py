"""The provider app's builder: the Serve import path, its args, deployment options (no Ray).

The app itself serves in tests/serve_apps/local (default and isolated modes).
"""

from __future__ import annotations

import pytest

from config import Autoscaling, load_config
from serve_apps.provider import (
    app_builder,
    build_provider_apps,
    model_app_builder,
    provider_models,
)
from serve_apps.provider.app import deployment_options

CFG = load_config()


def test_app_builder_is_the_serve_import_path_with_config_and_provider(tmp_path):
    path = tmp_path / "easel.yaml"
    path.write_text(CFG.to_yaml())
    app = app_builder({"config": str(path), "provider": "azure-sim"})
    assert type(app).__name__ == "Application"
    assert type(app_builder({"provider": "lambda-sim"})).__name__ == "Application"  # default config
    with pytest.raises(ValueError, match="unknown application args"):
        app_builder({"confg": str(path), "provider": "azure-sim"})
    with pytest.raises(ValueError, match="`provider` is required"):
        app_builder({"config": str(path)})
    with pytest.raises(KeyError, match="known"):
        app_builder({"provider": "gcp-sim"})


def test_model_app_builder_builds_one_models_app_of_a_provider(tmp_path):
    path = tmp_path / "easel.yaml"
    path.write_text(CFG.to_yaml())
    args = {"config": str(path), "provider": "azure-sim", "model": "flux2-dev"}
    assert type(model_app_builder(args)).__name__ == "Application"
    with pytest.raises(ValueError, match="`model` is required"):
        model_app_builder({"provider": "azure-sim"})
    with pytest.raises(ValueError, match="does not serve the self-hosted model 'sdxl-turbo'"):
        model_app_builder({"provider": "azure-sim", "model": "sdxl-turbo"})
    with pytest.raises(ValueError, match="unknown application args"):
        model_app_builder({**args, "replicas": 2})


def test_provider_apps_are_the_ingress_and_one_app_per_model_at_its_route():
    from serve_apps.api.paths import model_generate_url

    apps = build_provider_apps(CFG, "azure-sim", name="provider-azure-sim", route_prefix="/azure")
    assert [(a.name, a.route_prefix) for a in apps] == [
        ("provider-azure-sim", "/azure"),
        ("provider-azure-sim--flux2-dev", "/azure/models/flux2-dev"),
        ("provider-azure-sim--sdxl-lightning", "/azure/models/sdxl-lightning"),
    ]
    # Where the gateway sends a model's requests: under the model app's route prefix.
    url = model_generate_url("http://127.0.0.1:8000/azure", "flux2-dev")
    assert url == "http://127.0.0.1:8000/azure/models/flux2-dev/v1/generate"
    assert [a.route_prefix for a in build_provider_apps(CFG, "azure-sim")][1] == "/models/flux2-dev"


def test_a_provider_deploys_its_self_hosted_models_only():
    assert [m.name for m in provider_models(CFG, "azure-sim")] == ["flux2-dev", "sdxl-lightning"]
    assert "proprietary-a" not in [m.name for m in provider_models(CFG, "azure-sim")]
    data = CFG.model_dump(mode="json")
    for m in data["models"]:
        if m["backend"] == "diffusers":
            m["providers"] = [p for p in m["providers"] if p != "azure-sim"] or ["lambda-sim"]
    from config import parse_config

    only_api = parse_config(data, "<azure serves only a closed model>")
    with pytest.raises(ValueError, match="serves no self-hosted model"):
        build_provider_apps(only_api, "azure-sim")


def test_deployment_options_come_from_the_config():
    opts = deployment_options(CFG.model("flux2-dev"), CFG.provider("azure-sim"))
    assert opts["name"] == "flux2-dev--azure-sim"
    assert opts["ray_actor_options"]["resources"] == {"provider:azure-sim": 0.001}
    assert opts["max_queued_requests"] == 32 and opts["num_replicas"] == 1
    assert opts["max_ongoing_requests"] == 8
    assert opts["ray_actor_options"]["num_cpus"] == 0.1
    scaled = CFG.model("flux2-dev").model_copy(
        update={"autoscaling": Autoscaling(min_replicas=1, max_replicas=4, upscale_delay_s=2)}
    )
    opts = deployment_options(scaled, CFG.provider("azure-sim"))
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["upscale_delay_s"] == 2


def test_share_tiny_replicas_puts_a_providers_tiny_builds_in_one_deployment():
    from config import parse_config
    from serve_apps.provider.app import model_units, shares_a_process

    data = CFG.model_dump(mode="json")
    data["serve"]["share_tiny_replicas"] = True
    shared = parse_config(data, "<shared tiny replicas>")
    assert model_units(shared, "azure-sim") == {
        "flux2-dev": "tiny-models",
        "sdxl-lightning": "tiny-models",
    }
    apps = build_provider_apps(shared, "azure-sim", name="p", route_prefix="/azure-sim")
    # One application for both, mounted where each model's route begins: /azure-sim/models/<m>.
    assert [(a.name, a.route_prefix) for a in apps] == [
        ("p", "/azure-sim"),
        ("p--tiny-models", "/azure-sim/models"),
    ]
    dep = apps[1].app._bound_deployment
    assert dep.name == "tiny-models--azure-sim"
    assert dep.max_ongoing_requests == 16 and dep.num_replicas == 1  # both models' bounds
    assert dep.ray_actor_options["num_cpus"] == pytest.approx(0.2)
    # Off (the default), or a model that autoscales: one deployment and application per model.
    assert set(model_units(CFG, "azure-sim").values()) == {"flux2-dev", "sdxl-lightning"}
    assert [a.name for a in build_provider_apps(CFG, "azure-sim", name="p")] == [
        "p",
        "p--flux2-dev",
        "p--sdxl-lightning",
    ]
    scaled = CFG.model("flux2-dev").model_copy(
        update={"autoscaling": Autoscaling(min_replicas=1, max_replicas=4)}
    )
    assert not shares_a_process(scaled) and shares_a_process(CFG.model("flux2-dev"))
    assert not shares_a_process(CFG.model("flux2-dev").model_copy(update={"num_gpus": 1}))
