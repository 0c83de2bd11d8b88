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
