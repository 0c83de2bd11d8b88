"""The provider app's builder: the Serve import path, its args, deployment options (no Ray).

The app itself serves in tests/serve_apps/local (default and isolated modes).
"""

from __future__ import annotations

import pytest

from config import Autoscaling, load_config
from serve_apps.provider import app_builder, build_provider_app, provider_models
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
        build_provider_app(only_api, "azure-sim")


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


def _model_deployments(app) -> dict[str, str]:
    """{model: the name of the deployment the ingress hands it to} of a built provider app."""
    _config, _provider, handles = app._bound_deployment.init_args
    return {m: h._bound_deployment.name for m, h in handles.items()}


def test_share_tiny_replicas_puts_a_providers_tiny_builds_in_one_deployment():
    from serve_apps.provider.app import shares_a_process

    data = CFG.model_dump(mode="json")
    data["serve"]["share_tiny_replicas"] = True
    from config import parse_config

    shared = parse_config(data, "<shared tiny replicas>")
    app = build_provider_app(shared, "azure-sim")
    assert _model_deployments(app) == {
        "flux2-dev": "tiny-models--azure-sim",
        "sdxl-lightning": "tiny-models--azure-sim",
    }
    opts = app._bound_deployment.init_args[2]["flux2-dev"]._bound_deployment
    assert opts.max_ongoing_requests == 16 and opts.num_replicas == 1  # both models' bounds
    assert opts.ray_actor_options["num_cpus"] == pytest.approx(0.2)
    # Off (the default), or a model that autoscales: one deployment per model.
    assert _model_deployments(build_provider_app(CFG, "azure-sim")) == {
        "flux2-dev": "flux2-dev--azure-sim",
        "sdxl-lightning": "sdxl-lightning--azure-sim",
    }
    scaled = CFG.model("flux2-dev").model_copy(
        update={"autoscaling": Autoscaling(min_replicas=1, max_replicas=4)}
    )
    assert not shares_a_process(scaled) and shares_a_process(CFG.model("flux2-dev"))
    assert not shares_a_process(CFG.model("flux2-dev").model_copy(update={"num_gpus": 1}))
