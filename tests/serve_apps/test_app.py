"""The full default application: every default model over HTTP, batching, usage, metrics.

One Serve application for the module: the embedded default config (four tiny diffusers models,
two closed models behind simulated vendors, three simulated providers), deployed by `run_app`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from config import Autoscaling, EaselConfig, load_config
from tests._util import free_port, wait_for

ADMIN = {"Authorization": "Bearer app-test-admin"}
_ENV = {
    "EASEL_ADMIN_KEY": "app-test-admin",
    # Export metrics every second (default 10 s) so the Prometheus check does not wait long.
    "RAY_metrics_report_interval_ms": "1000",
}


@pytest.fixture(scope="module")
def serve_env() -> dict[str, str]:
    return _ENV


@pytest.fixture(scope="module")
def cfg() -> EaselConfig:
    return load_config()


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("model", [m.name for m in load_config().models])
def test_each_default_model_answers_png_with_headers(client, model):
    r = client.post(
        "/v1/generate", json={"model": model, "prompt": "a lighthouse", "width": 48, "height": 32}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert _image(r.content).size == (48, 32)
    h = r.headers
    assert h["x-easel-model"] == model
    assert h["x-easel-provider"] in load_config().model(model).providers
    assert h["x-easel-replica"].startswith(f"{model}--{h['x-easel-provider']}#")
    for key in ("x-easel-queue-ms", "x-easel-inference-ms"):
        assert float(h[key]) >= 0
    assert int(h["x-easel-batch-size"]) >= 1
    assert h["x-easel-cold-start"] in {"true", "false"}
    assert h["x-easel-attempts"] == "1"
    assert h["x-request-id"] and h["x-easel-request-id"]


def test_openai_client_gets_images(url):
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    out = client.images.generate(
        model="sdxl-turbo", prompt="a red kite", n=2, size="64x64", response_format="b64_json"
    )
    assert len(out.data) == 2
    for item in out.data:
        assert _image(base64.b64decode(item.b64_json)).size == (64, 64)
    models = client.models.list()
    assert {m.id for m in models.data} >= {"sdxl-turbo", "flux2-dev", "proprietary-b"}


def test_concurrent_requests_are_batched_by_size_with_their_own_seeds(client, url):
    # One provider only, so all requests meet in one replica's batch queue.
    r = client.put(
        "/v1/admin/routing", json={"drain": ["runpod-sim"], "model": "flux2-schnell"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    small = [(1, 32), (1, 32), (2, 32), (3, 32), (4, 32), (5, 32)]
    large = [(6, 48), (7, 48)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/v1/generate",
                        json={
                            "model": "flux2-schnell",
                            "prompt": "the same prompt",
                            "seed": seed,
                            "width": side,
                            "height": side,
                        },
                    )
                    for seed, side in small + large
                )
            )

    try:
        responses = asyncio.run(burst())
    finally:
        client.put("/v1/admin/routing", json={"undrain": ["runpod-sim"]}, headers=ADMIN)
    assert [r.status_code for r in responses] == [200] * 8
    assert {r.headers["x-easel-provider"] for r in responses} == {"lambda-sim"}
    sizes = [int(r.headers["x-easel-batch-size"]) for r in responses]
    assert max(sizes[: len(small)]) > 1, sizes  # batched
    assert max(sizes[len(small) :]) <= len(large), sizes  # 48x48 never shares with 32x32
    images = [np.asarray(_image(r.content), dtype=np.float32) for r in responses]
    assert [im.shape[:2] for im in images] == [(s, s) for _, s in small + large]
    # Same seed, same image (batched or not, up to float rounding); another seed differs.
    assert np.abs(images[0] - images[1]).max() <= 2
    assert np.abs(images[0] - images[2]).mean() > 5


def test_prompt_length_is_checked_in_the_model_tokens(client):
    prompt = " ".join(["portrait"] * 90)  # > 77 CLIP tokens, far < 512 Flux.2 tokens
    r = client.post("/v1/generate", json={"model": "sdxl-turbo", "prompt": prompt})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "prompt_too_long" and "77" in err["message"]
    r = client.post("/v1/generate", json={"model": "flux2-schnell", "prompt": prompt})
    assert r.status_code == 200


def test_usage_ledger_has_every_replica(client, cfg):
    from serve_apps.usage import read_usage

    rows = read_usage()
    assert {(x["model"], x["provider"]) for x in rows} == {
        (m.name, p) for m in cfg.models for p in m.providers
    }
    for row in rows:
        model = cfg.model(row["model"])
        assert row["gpus"] == (0.0 if model.backend == "http_api" else 1.0)
        assert row["alive"] and row["load_s"] > 0 and row["last_seen_s"] >= row["started_s"]
    served = [x for x in rows if x["images"]]
    assert served and all(x["busy_s"] > 0 and x["batches"] >= 1 for x in served)
    via_http = client.get("/v1/admin/usage", headers=ADMIN).json()["replicas"]
    assert {x["replica"] for x in via_http} == {x["replica"] for x in rows}


def test_prometheus_endpoint_has_easel_and_serve_metrics(client):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = (
        "easel_requests_total",
        "easel_queue_ms",
        "easel_inference_ms",
        "easel_batch_size",
        "easel_cold_starts_total",
        "ray_serve_",
    )

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return all(w in text for w in wanted)

    wait_for(exported, timeout=60, interval=0.5)


def test_app_builder_is_the_serve_config_import_path(tmp_path, cfg):
    from serve_apps.app import app_builder, deployment_options

    path = tmp_path / "easel.yaml"
    path.write_text(cfg.to_yaml())
    app = app_builder({"config": str(path)})
    assert type(app).__name__ == "Application"
    with pytest.raises(ValueError, match="unknown application args"):
        app_builder({"confg": str(path)})
    opts = deployment_options(cfg.model("flux2-dev"), cfg.provider("azure-sim"))
    assert opts["name"] == "flux2-dev--azure-sim"
    assert opts["ray_actor_options"]["resources"] == {"provider:azure-sim": 0.001}
    assert opts["max_queued_requests"] == 32 and opts["num_replicas"] == 1
    assert opts["max_ongoing_requests"] == 8
    assert opts["ray_actor_options"]["num_cpus"] == 0.1
    scaled = cfg.model("flux2-dev").model_copy(
        update={"autoscaling": Autoscaling(min_replicas=1, max_replicas=4, upscale_delay_s=2)}
    )
    opts = deployment_options(scaled, cfg.provider("azure-sim"))
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["upscale_delay_s"] == 2


@pytest.mark.slow
def test_easel_serve_cli_serves_a_png(tmp_path):
    """`easel serve` on its own Ray (what a fresh machine does), then a plain HTTP POST."""
    port = free_port()
    env = {**os.environ, "EASEL_ADMIN_KEY": "cli"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "easel.cli", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, timeout=600)
        r = httpx.post(
            f"{base}/v1/generate", json={"model": "sdxl-turbo", "prompt": "a fox"}, timeout=120
        )
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        log.close()
