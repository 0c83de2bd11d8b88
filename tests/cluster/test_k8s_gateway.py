"""The gateway's manifests: `easel gateway` processes behind a Service, reaching every provider's
Serve app at an endpoint it can resolve, rolling on what it reads and nothing else."""

from __future__ import annotations

import pytest
import yaml

from cluster.k8s_common import ManifestError
from cluster.k8s_gateway import gateway_manifests, gateway_url, provider_endpoint
from cluster.kuberay import render
from config import load_config, parse_config, shipped_config_path

PROD = shipped_config_path("production.example.yaml")


def test_the_deployment_runs_easel_gateway_on_the_mounted_config():
    cfg = load_config(PROD)
    objs = gateway_manifests(cfg, cfg.kubernetes.image)
    dep = objs["20-deployment.yaml"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    gw = cfg.kubernetes.gateway
    assert c["command"] == [
        "easel",
        "gateway",
        "--config",
        "/etc/easel/config.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--workers",
        str(gw.workers),
    ]
    assert dep["spec"]["replicas"] == gw.replicas
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (vol,) = dep["spec"]["template"]["spec"]["volumes"]
    assert vol["configMap"]["name"] == objs["10-configmap.yaml"]["metadata"]["name"]
    env = {e["name"] for e in c["env"]}
    assert {
        "EASEL_ADMIN_KEY",
        "VENDOR_A_API_KEY",
        "VENDOR_B_API_KEY",
        "EASEL_TENANT_ACME_KEY",
    } <= env  # the gateway calls vendors, checks tenants
    svc = objs["30-service.yaml"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert gateway_url(cfg) == "http://easel-production-example-gateway.easel.svc:8000"
    assert objs["40-disruption-budget.yaml"]["spec"]["minAvailable"] == gw.replicas - 1


def test_endpoints_in_the_gateways_config():
    cfg = load_config(PROD)
    text = gateway_manifests(cfg, cfg.kubernetes.image)["10-configmap.yaml"]["data"]["config.yaml"]
    providers = {p["name"]: p for p in yaml.safe_load(text)["providers"]}
    # lambda shares the gateway's cluster: KubeRay's Serve Service; aws and azure: their LBs.
    assert providers["lambda"]["endpoint"] == (
        "http://easel-production-example-lambda-serve-svc.easel.svc:8000"
    )
    assert providers["aws"]["endpoint"] == "http://aws.serve.easel.example.com:8000"
    assert providers["azure"]["endpoint"] == "http://azure.serve.easel.example.com:8000"
    # The gateway's copy parses as a config whose endpoints are set; the providers' own copies
    # keep what the config says (none here).
    gw = parse_config(yaml.safe_load(text))
    assert gw.provider("aws").endpoint == "http://aws.serve.easel.example.com:8000"
    assert cfg.provider("aws").endpoint is None


def test_a_provider_the_gateway_cannot_reach_is_refused():
    data = load_config(PROD).model_dump(mode="json")
    data["providers"][1]["kubernetes"].update(serve_service_type="ClusterIP", hostname=None)
    with pytest.raises(
        ManifestError,
        match=r"provider 'aws' runs in kube context 'aws'.*"
        r"providers\[\]\.endpoint",
    ):
        render(parse_config(data))


def test_an_explicit_endpoint_wins():
    cfg = load_config(PROD)
    aws = cfg.provider("aws")
    assert provider_endpoint(cfg, aws) == "http://aws.serve.easel.example.com:8000"
    data = cfg.model_dump(mode="json")
    data["providers"][1]["endpoint"] = "https://aws.example.net/"
    explicit = parse_config(data)
    assert explicit.provider("aws").endpoint == "https://aws.example.net"  # validated, no slash
    assert provider_endpoint(explicit, explicit.provider("aws")) == "https://aws.example.net"
    text = gateway_manifests(explicit, cfg.kubernetes.image)["10-configmap.yaml"]["data"]
    assert yaml.safe_load(text["config.yaml"])["providers"][1]["endpoint"] == (
        "https://aws.example.net"
    )


def test_the_gateway_rolls_on_routing_and_prices_not_on_traffic():
    cfg = load_config(PROD)

    def name(c):
        return gateway_manifests(c, cfg.kubernetes.image)["10-configmap.yaml"]["metadata"]["name"]

    data = cfg.model_dump(mode="json")
    data["traffic"]["jobs"] = 7
    data["operator"]["cooldown_s"] = 5
    assert name(parse_config(data)) == name(cfg)
    data["routing"]["policy"] = "weighted"
    assert name(parse_config(data)) != name(cfg)
