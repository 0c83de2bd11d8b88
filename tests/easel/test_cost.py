"""The cost formula against hand-computed cases."""

from __future__ import annotations

import pytest

from easel.cost import (
    COST_FORMULA,
    api_cost_per_image,
    deployment_costs,
    gpu_cost_per_image,
    model_costs,
    niche_costs,
    spent_usd,
)
from tests.easel._synthetic_run import config_with


def test_gpu_cost_per_image_by_hand() -> None:
    # One GPU-hour at $2 over 100 images = $0.02; + $0.001 overhead = $0.021; + 10 % = $0.0231.
    assert gpu_cost_per_image(3600, 100, 2.0, 0.001, 10) == pytest.approx(0.0231)
    # No overhead, no fee: exactly the compute share.
    assert gpu_cost_per_image(1800, 10, 4.0, 0, 0) == pytest.approx(0.2)


def test_gpu_cost_refuses_zero_images() -> None:
    with pytest.raises(ValueError, match="no images"):
        gpu_cost_per_image(10, 0, 2.0, 0, 0)


def test_api_cost_per_image_by_hand() -> None:
    assert api_cost_per_image(0.04, 0.0005, 10) == pytest.approx(0.04455)


def _usage(model: str, provider: str, **kw: float) -> dict:
    row = {
        "replica": f"{model}-{provider}",
        "model": model,
        "provider": provider,
        "gpus": 1,
        "started_s": 0.0,
        "load_s": 0.0,
        "last_seen_s": 0.0,
        "busy_s": 0.0,
        "batches": 0,
        "images": 0,
        "alive": True,
    }
    row.update(kw)
    return row


def test_deployment_costs_sum_replicas_with_idle_and_cold_start() -> None:
    cfg = config_with()  # lambda-sim $1.79/GPU-h, azure-sim $4.10; overhead $0.0005; fee 10 %
    usage = [
        # flux2-dev on lambda-sim: two replicas. The first lived 100 s on 2 GPUs (20 s loading,
        # 50 s busy, 30 s idle); the second 50 s on the provider's default 1 GPU (gpus missing).
        _usage(
            "flux2-dev",
            "lambda-sim",
            gpus=2,
            started_s=10,
            last_seen_s=110,
            load_s=20,
            busy_s=50,
            images=30,
        ),
        _usage(
            "flux2-dev",
            "lambda-sim",
            gpus=None,
            started_s=60,
            last_seen_s=110,
            load_s=5,
            busy_s=15,
            images=10,
        ),
    ]
    costs = {(c.model, c.provider): c for c in deployment_costs(cfg, usage)}
    c = costs[("flux2-dev", "lambda-sim")]
    assert c.replicas == 2
    assert c.gpu_seconds == pytest.approx(250.0)  # 100 s × 2 + 50 s × 1
    assert c.alive_s == pytest.approx(150.0)
    assert c.load_s == pytest.approx(25.0)
    assert c.busy_s == pytest.approx(65.0)
    assert c.idle_s == pytest.approx(60.0)
    assert c.images == 40
    compute = 250 * 1.79 / 3600 / 40
    assert c.compute_per_image == pytest.approx(compute)
    assert c.cost_per_image == pytest.approx((compute + 0.0005) * 1.10)
    assert c.price_date == "2026-11-26"

    # A declared deployment without usage: no figure, and the reason.
    missing = costs[("flux2-dev", "azure-sim")]
    assert missing.cost_per_image is None
    assert "no replica usage" in missing.note

    # API models are priced per image, with or without usage.
    api = costs[("proprietary-a", "azure-sim")]
    assert api.pricing == "api"
    assert api.cost_per_image == pytest.approx((0.04 + 0.0005) * 1.10)


def test_deployment_with_no_images_has_no_unit_cost() -> None:
    cfg = config_with()
    usage = [_usage("sdxl-turbo", "runpod-sim", last_seen_s=30, images=0)]
    c = {(c.model, c.provider): c for c in deployment_costs(cfg, usage)}[
        ("sdxl-turbo", "runpod-sim")
    ]
    assert c.cost_per_image is None
    assert c.gpu_seconds == pytest.approx(30.0)
    assert "no images" in c.note


def test_images_override_and_provider_gpus_per_replica() -> None:
    data_cfg = config_with()
    data = data_cfg.model_dump(mode="json")
    for p in data["providers"]:
        if p["name"] == "runpod-sim":
            p["gpus_per_replica"] = 4
    from config import parse_config

    cfg = parse_config(data)
    usage = [_usage("sdxl-turbo", "runpod-sim", gpus=None, last_seen_s=36, images=99)]
    c = {
        (c.model, c.provider): c
        for c in deployment_costs(cfg, usage, {("sdxl-turbo", "runpod-sim"): 10})
    }[("sdxl-turbo", "runpod-sim")]
    assert c.gpu_seconds == pytest.approx(144.0)  # 36 s × 4 GPUs
    assert c.images == 10
    assert c.cost_per_image == pytest.approx((144 * 1.64 / 3600 / 10 + 0.0005) * 1.10)


def test_niche_costs_amortise_evenly_and_model_costs_weight_by_images() -> None:
    cfg = config_with()
    usage = [
        _usage("sdxl-lightning", "runpod-sim", last_seen_s=3600, images=100),
        _usage("sdxl-lightning", "azure-sim", last_seen_s=3600, images=300),
    ]
    costs = deployment_costs(cfg, usage)
    unit = {(c.model, c.provider): c.cost_per_image for c in costs}
    rp = unit[("sdxl-lightning", "runpod-sim")]
    az = unit[("sdxl-lightning", "azure-sim")]
    assert rp == pytest.approx((1.64 / 100 + 0.0005) * 1.1)
    assert az == pytest.approx((4.10 / 300 + 0.0005) * 1.1)

    rows = niche_costs(
        costs,
        {
            ("sdxl-lightning", "corporate-headshots", "runpod-sim"): 7,
            ("sdxl-lightning", "creative-portraits", "runpod-sim"): 3,
        },
    )
    assert [r.cost_per_image for r in rows] == [pytest.approx(rp)] * 2
    assert [r.total_usd for r in rows] == [pytest.approx(7 * rp), pytest.approx(3 * rp)]

    per_model = model_costs(costs)
    assert per_model["sdxl-lightning"] == pytest.approx((100 * rp + 300 * az) / 400)
    assert spent_usd(
        next(c for c in costs if c.provider == "azure-sim" and c.model == "sdxl-lightning")
    ) == pytest.approx(300 * az)
    assert per_model["flux2-dev"] is None  # no usage at all
    assert per_model["proprietary-b"] == pytest.approx((0.06 + 0.0005) * 1.1)


def test_formula_text_names_every_term() -> None:
    for term in (
        "GPU-seconds",
        "price per GPU-hour",
        "orchestration",
        "platform fee",
        "idle",
        "cold-start",
        "price per image",
    ):
        assert term in COST_FORMULA


def test_model_cost_counts_deployments_that_made_no_image() -> None:
    cfg = config_with()
    # sdxl-turbo: runpod-sim made 10 images in an hour; lambda-sim sat idle for an hour.
    usage = [
        _usage("sdxl-turbo", "runpod-sim", last_seen_s=3600, images=10),
        _usage("sdxl-turbo", "lambda-sim", last_seen_s=3600, images=0),
    ]
    per_model = model_costs(deployment_costs(cfg, usage))
    # Both GPU-hours ($1.64 + $1.79) over the 10 images, plus overhead, plus fee.
    assert per_model["sdxl-turbo"] == pytest.approx(((1.64 + 1.79) / 10 + 0.0005) * 1.1)
