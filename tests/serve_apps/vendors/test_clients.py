"""The closed-model clients against a simulated vendor running in a subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import pickle
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from config import LatencyDistribution, ModelConfig
from serve_apps.vendors.clients import (
    OpenAIImagesClient,
    QueueApiClient,
    VendorConfigError,
    VendorError,
    VendorImage,
    _retry_after,
    make_client,
)
from simulators.vendor import (
    VendorSettings,
    sim_configure,
    sim_reset,
    sim_stats,
    start_simulated_vendor_process,
)
from tests._util import free_port, wait_for

PROTOCOLS = ["openai_images", "queue"]
KEY_ENV = "EASEL_TEST_VENDOR_KEY"
SECRET = "sk-easel-TOPSECRET-0123456789"


@pytest.fixture(scope="module")
def vendor_url() -> Iterator[str]:
    settings = VendorSettings(
        name="test-vendor",
        vendor_model="vendor-x",
        latency=LatencyDistribution(p50_ms=5, p95_ms=5),
        concurrency=16,
        seed=7,
        price_usd=0.05,
    )
    with start_simulated_vendor_process(settings) as vendor:
        yield vendor.url


@pytest.fixture(autouse=True)
def _fresh_vendor(vendor_url: str) -> None:
    sim_reset(vendor_url)


def _model(protocol: str, **api: Any) -> ModelConfig:
    spec: dict[str, Any] = {
        "protocol": protocol,
        "vendor_model": "vendor-x",
        "api_key_env": KEY_ENV,
        "timeout_s": 10,
        "max_retries": 3,
        "backoff_s": 0.01,
        "poll_interval_s": 0.01,
        "simulated": {"latency": {"p50_ms": 5, "p95_ms": 5}},
    }
    spec.update(api)
    return ModelConfig.model_validate(
        {
            "name": "closed-test",
            "display_name": "Closed test (simulated API)",
            "backend": "http_api",
            "kind": "closed",
            "steps": {"default": 1, "min": 1, "max": 1},
            "guidance": {"default": 0, "min": 0, "max": 0},
            "resolution": {"default": 64, "min": 32, "max": 256, "multiple": 16},
            "price_per_image": 0.05,
            "api": spec,
            "providers": ["azure-sim"],
            "slo_ms": 3000,
        }
    )


async def _generate(client: Any, **kw: Any) -> VendorImage:
    args = {"prompt": "a red apple", "width": 48, "height": 32, "seed": 3, "request_id": "r-1"}
    return await client.generate(**(args | kw))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_png_of_requested_size(vendor_url: str, protocol: str) -> None:
    async with make_client(_model(protocol), vendor_url) as client:
        img = await _generate(client)
        again = await _generate(client, request_id="r-2")
        other = await _generate(client, seed=4)
    assert Image.open(io.BytesIO(img.png)).size == (48, 32)
    assert img.attempts == 1 and img.simulated and img.price_usd == pytest.approx(0.05)
    assert img.vendor_request_id and img.vendor_request_id.startswith("simjob-")
    assert img.vendor_ms > 0 and img.vendor_queue_ms is not None
    assert again.png == img.png  # same prompt and seed: same image
    assert other.png != img.png
    assert sim_stats(vendor_url)["succeeded"] == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reference_images_are_sent(vendor_url: str, protocol: str) -> None:
    refs = [b"\x89PNG\r\n\x1a\n fake person", b"\xff\xd8\xff fake garment (JPEG magic)"]
    async with make_client(_model(protocol), vendor_url) as client:
        img = await _generate(client, reference_images=refs)
        assert Image.open(io.BytesIO(img.png)).size == (48, 32)
        # The vendor counts every reference it received (image[] parts / image_urls)...
        assert sim_stats(vendor_url)["reference_images"] == 2
        # ...and refuses an empty one: proof that the bytes travel with the request.
        with pytest.raises(VendorError) as err:
            await _generate(client, reference_images=[refs[0], b""])
    assert (err.value.status, err.value.code, err.value.vendor_status) == (
        400,
        "upstream_rejected",
        400,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [503, 429])
async def test_retries_injected_failures_then_succeeds(
    vendor_url: str, protocol: str, status: int
) -> None:
    sim_configure(vendor_url, fail_next=2, fail_status=status, retry_after_s=0)
    async with make_client(_model(protocol), vendor_url) as client:
        img = await _generate(client)
    assert img.attempts == 3
    stats = sim_stats(vendor_url)
    assert stats["requests"] == 3 and stats["succeeded"] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_gives_up_after_max_retries(vendor_url: str, protocol: str) -> None:
    sim_configure(vendor_url, failure_rate=1.0)
    async with make_client(_model(protocol, max_retries=2), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    e = err.value
    assert (e.status, e.code, e.retryable, e.vendor_status, e.attempts) == (
        503,
        "upstream_unavailable",
        True,
        500,
        3,
    )
    assert sim_stats(vendor_url)["requests"] == 3


async def test_failed_queue_job_is_resubmitted(vendor_url: str) -> None:
    sim_configure(vendor_url, job_failure_rate=1.0)
    async with make_client(_model("queue", max_retries=1), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert err.value.code == "upstream_unavailable" and err.value.attempts == 2
    assert "simulated_job_failure" in err.value.message
    assert sim_stats(vendor_url)["jobs_failed"] == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_timeout_is_upstream_timeout(vendor_url: str, protocol: str) -> None:
    sim_configure(vendor_url, latency={"p50_ms": 3000, "p95_ms": 3000})
    started = time.monotonic()
    async with make_client(_model(protocol, timeout_s=0.3), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert (err.value.status, err.value.code, err.value.retryable) == (
        504,
        "upstream_timeout",
        True,
    )
    assert time.monotonic() - started < 2.5  # the deadline, not the vendor's 3 s
    if protocol == "queue":
        # The abandoned job is cancelled so it stops holding a vendor worker.
        wait_for(lambda: sim_stats(vendor_url)["jobs_cancelled"] == 1, timeout=10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retry_after_is_honoured(vendor_url: str, protocol: str) -> None:
    sim_configure(vendor_url, fail_next=1, fail_status=429, retry_after_s=0.6)
    started = time.monotonic()
    async with make_client(_model(protocol, backoff_s=0.001), vendor_url) as client:
        img = await _generate(client)
    # Backoff alone would retry after ~1 ms; the vendor's Retry-After (0.6 s) is the floor.
    assert time.monotonic() - started >= 0.55
    assert img.attempts == 2


async def test_retry_after_past_the_deadline_gives_up_at_once(vendor_url: str) -> None:
    sim_configure(vendor_url, fail_next=1, fail_status=429, retry_after_s=30)
    started = time.monotonic()
    async with make_client(_model("openai_images", timeout_s=5), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert time.monotonic() - started < 4
    assert (err.value.code, err.value.retry_after, err.value.vendor_status) == (
        "upstream_unavailable",
        30,
        429,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_vendor_rejection_is_not_retried(vendor_url: str, protocol: str) -> None:
    async with make_client(_model(protocol, vendor_model="no-such-model"), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    e = err.value
    assert (e.status, e.code, e.retryable, e.vendor_status, e.attempts) == (
        502,
        "upstream_rejected",
        False,
        404,
        1,
    )
    async with make_client(_model(protocol), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client, width=8192)
    assert (err.value.status, err.value.vendor_status) == (400, 400)


async def test_connection_errors_are_retried_then_unavailable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with make_client(_model("queue", max_retries=2), dead) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    e = err.value
    assert (e.code, e.vendor_status, e.attempts) == ("upstream_unavailable", None, 3)
    assert "connection error" in e.message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_key_is_sent_but_never_logged_or_shown(
    vendor_url: str,
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    sim_configure(vendor_url, require_key_sha256=hashlib.sha256(SECRET.encode()).hexdigest())
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    client = make_client(_model(protocol), vendor_url)
    shown = [repr(client), str(client), repr(vars(client))]
    async with client:
        img = await _generate(client)  # the vendor only answers when the key is right
        sim_configure(vendor_url, fail_next=1, fail_status=503, retry_after_s=0)
        await _generate(client)  # a retry is logged
        sim_configure(vendor_url, failure_rate=1.0)
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert img.attempts == 1
    assert any("retrying" in r.getMessage() for r in caplog.records)
    shown += [repr(err.value), str(err.value), caplog.text]
    shown += [repr(r.__dict__) for r in caplog.records]
    assert all(SECRET not in s for s in shown)
    with pytest.raises(TypeError):
        pickle.dumps(client._key)


async def test_simulated_vendor_refuses_a_missing_key_when_told_to(
    vendor_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    sim_configure(vendor_url, require_key_sha256=hashlib.sha256(SECRET.encode()).hexdigest())
    async with make_client(_model("openai_images"), vendor_url) as client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert (err.value.status, err.value.vendor_status, err.value.retryable) == (502, 401, False)


def test_real_api_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    real = _model("openai_images", simulated=None, base_url="https://vendor.example")
    with pytest.raises(VendorConfigError, match=KEY_ENV):
        make_client(real)
    monkeypatch.setenv(KEY_ENV, SECRET)
    client = make_client(real)
    assert isinstance(client, OpenAIImagesClient) and client.base_url == "https://vendor.example"
    assert SECRET not in repr(client)


def test_make_client_picks_the_protocol_and_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)  # a simulated vendor needs no key
    assert isinstance(make_client(_model("queue"), "http://127.0.0.1:1"), QueueApiClient)
    assert isinstance(
        make_client(_model("openai_images"), "http://127.0.0.1:1"), OpenAIImagesClient
    )
    with pytest.raises(VendorConfigError, match="start_vendors"):
        make_client(_model("queue"))


def test_vendor_error_survives_pickle() -> None:
    e = VendorError(503, "upstream_unavailable", "busy", 2.5, True, 429, 4)
    back = pickle.loads(pickle.dumps(e))
    fields = ("status", "code", "message", "retry_after", "retryable", "vendor_status", "attempts")
    assert all(getattr(back, f) == getattr(e, f) for f in fields)


def test_retry_after_header_forms() -> None:
    assert _retry_after("2.5") == 2.5
    assert _retry_after(None) is None and _retry_after("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < (_retry_after(date) or 0) <= 30


async def test_one_pool_serves_concurrent_requests(vendor_url: str) -> None:
    async with make_client(_model("openai_images"), vendor_url) as client:
        images = await asyncio.gather(
            *(_generate(client, request_id=f"r-{i}", seed=i) for i in range(12))
        )
    assert len({img.png for img in images}) == 12


@pytest.mark.parametrize(
    ("protocol", "answer"),
    [
        ("openai_images", httpx.Response(200, text="<html>not json</html>")),
        ("openai_images", httpx.Response(200, json={"data": [{"b64_json": "bm90IGEgcG5n"}]})),
        ("queue", httpx.Response(200, json=["no", "id"])),
        ("queue", httpx.Response(202, json={"id": "j1", "status": "succeeded", "error": "x"})),
    ],
)
async def test_malformed_answers_are_vendor_errors(protocol: str, answer: httpx.Response) -> None:
    # A vendor that answers 2xx with garbage (no simulated vendor does: an httpx mock
    # transport plays it). Whatever comes back, generate raises VendorError and nothing else.
    def vendor(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/result"):
            return httpx.Response(200, content=b"not a png")
        return answer

    model = _model(protocol, max_retries=1)
    client = make_client(model, "http://vendor.invalid", transport=httpx.MockTransport(vendor))
    async with client:
        with pytest.raises(VendorError) as err:
            await _generate(client)
    assert (err.value.code, err.value.attempts) == ("upstream_unavailable", 2)
