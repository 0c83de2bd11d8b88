"""What the simulated vendor does, seen over real HTTP from a vendor subprocess."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from config import LatencyDistribution, load_config
from simulators.vendor import (
    VendorSettings,
    sim_configure,
    sim_reset,
    sim_stats,
    start_simulated_vendor_process,
)


@pytest.fixture(scope="module")
def vendor_url() -> Iterator[str]:
    settings = VendorSettings(
        name="app-test",
        latency=LatencyDistribution(p50_ms=5, p95_ms=5),
        concurrency=64,
        seed=11,
        price_usd=0.04,
    )
    with start_simulated_vendor_process(settings) as vendor:
        yield vendor.url


@pytest.fixture(autouse=True)
def _fresh_vendor(vendor_url: str) -> None:
    sim_reset(vendor_url)


def _image(size: str = "32x32", **kw: object) -> dict[str, object]:
    return {"model": "m", "prompt": "a cat", "size": size, "response_format": "b64_json"} | kw


def test_says_it_is_simulated(vendor_url: str) -> None:
    root = httpx.get(f"{vendor_url}/")
    assert root.json()["simulated"] is True and "SIMULATED" in root.json()["service"]
    ok = httpx.post(f"{vendor_url}/v1/images/generations", json=_image())
    missing = httpx.get(f"{vendor_url}/v1/jobs/nope")
    for resp in (root, ok, missing):
        assert resp.headers["x-simulated-vendor"] == "true"
    assert ok.headers["x-vendor-price-usd"] == "0.040000"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert sim_stats(vendor_url)["billed_usd"] == pytest.approx(0.04)


async def test_latency_follows_p50_p95(vendor_url: str) -> None:
    p50, p95 = 30.0, 90.0
    sim_configure(vendor_url, latency={"p50_ms": p50, "p95_ms": p95}, concurrency=64)
    drawn, held, wall = [], [], []
    async with httpx.AsyncClient(base_url=vendor_url, timeout=30) as http:

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            r = (await http.post("/v1/images/generations", json=_image(seed=i))).raise_for_status()
            wall.append((time.perf_counter() - t0) * 1000)
            drawn.append(float(r.headers["x-vendor-service-target-ms"]))
            held.append(float(r.headers["x-vendor-service-ms"]))

        for batch in range(10):  # 20 at a time: no queueing at 64 workers, little client load
            await asyncio.gather(*(one(batch * 20 + i) for i in range(20)))
    # The draws: loose bounds for 200 log-normal samples (+-12 % on p50, +-20 % on p95 at
    # 2 sigma); a constant or uniform service time fails them.
    d50, d95 = np.percentile(drawn, [50, 95])
    assert 0.8 * p50 <= d50 <= 1.25 * p50, d50
    assert 0.7 * p95 <= d95 <= 1.4 * p95, d95
    # What was measured: each worker was really held for its draw, and each client waited at
    # least that long. Only lower bounds: a busy machine adds lateness, never takes it away.
    # (The server's loop timers may fire up to ~1 ms early: uvloop rounds to milliseconds.)
    early = [(h, d) for h, d in zip(held, drawn, strict=True) if h < d - 1.5]
    assert not early, early
    assert all(w >= h for w, h in zip(wall, held, strict=True))
    h50, h95 = np.percentile(held, [50, 95])
    assert h50 >= 0.8 * p50 and h95 >= 0.7 * p95 and h95 / h50 > 1.5, (h50, h95)


async def test_queueing_with_one_worker_queue_api(vendor_url: str) -> None:
    service_s = 0.1
    sim_configure(vendor_url, latency={"p50_ms": 100, "p95_ms": 100}, concurrency=1)
    body = {"prompt": "a dog", "width": 32, "height": 32}
    async with httpx.AsyncClient(base_url=vendor_url, timeout=30) as http:
        submitted = await asyncio.gather(*(http.post("/v1/jobs", json=body) for _ in range(5)))
        ids = [r.json()["id"] for r in submitted]
        jobs: list[dict[str, Any]] = []
        while len(jobs) < 5 or any(j["status"] != "succeeded" for j in jobs):
            await asyncio.sleep(0.05)
            jobs = [(await http.get(f"/v1/jobs/{i}")).json() for i in ids]
    jobs.sort(key=lambda j: j["started_at"])
    # One worker: each job starts only when the one before it has finished.
    for before, after in itertools.pairwise(jobs):
        assert after["started_at"] >= before["finished_at"] - 0.002
    # So the last one waits ~4 service times (less however late it arrived).
    first_arrival = min(j["created_at"] for j in jobs)
    assert jobs[-1]["started_at"] - first_arrival >= 4 * service_s * 0.95
    assert jobs[-1]["queue_ms"] / 1000 >= 4 * service_s * 0.95 - (
        jobs[-1]["created_at"] - first_arrival
    )
    assert jobs[0]["queue_ms"] < 0.5 * service_s * 1000
    assert jobs[-1]["queue_ms"] <= 4 * service_s * 1000 + 1000  # not grossly longer either


async def test_queueing_with_one_worker_images_api(vendor_url: str) -> None:
    service_ms = 100.0
    sim_configure(vendor_url, latency={"p50_ms": service_ms, "p95_ms": service_ms}, concurrency=1)
    async with httpx.AsyncClient(base_url=vendor_url, timeout=30) as http:
        t0 = time.perf_counter()
        resps = await asyncio.gather(
            *(http.post("/v1/images/generations", json=_image()) for _ in range(5))
        )
        elapsed_ms = (time.perf_counter() - t0) * 1000
    queue = sorted(float(r.headers["x-vendor-queue-ms"]) for r in resps)
    assert elapsed_ms >= 5 * service_ms * 0.95  # served one after another, not side by side
    # The last waited ~4 service times (3 at least, unless the requests arrived far apart).
    assert queue[-1] >= 3 * service_ms, queue
    assert queue[0] < 0.5 * service_ms, queue


async def test_429_when_the_queue_is_full(vendor_url: str) -> None:
    sim_configure(
        vendor_url,
        latency={"p50_ms": 300, "p95_ms": 300},
        concurrency=1,
        max_queue=1,
        retry_after_s=2,
    )
    body = {"prompt": "a dog", "width": 32, "height": 32}
    async with httpx.AsyncClient(base_url=vendor_url, timeout=30) as http:
        resps = await asyncio.gather(*(http.post("/v1/jobs", json=body) for _ in range(4)))
    codes = sorted(r.status_code for r in resps)
    assert codes == [202, 202, 429, 429]  # one in service, one waiting, the rest refused
    refused = [r for r in resps if r.status_code == 429]
    assert all(r.headers["retry-after"] == "2" for r in refused)
    assert sim_stats(vendor_url)["rejected_429"] == 2


def test_failures_are_drawn_from_the_seed(vendor_url: str) -> None:
    sim_configure(vendor_url, failure_rate=0.3, latency={"p50_ms": 1, "p95_ms": 1})

    def pattern() -> list[int]:
        with httpx.Client(base_url=vendor_url) as http:
            return [
                http.post("/v1/images/generations", json=_image(seed=i)).status_code
                for i in range(40)
            ]

    first = pattern()
    sim_reset(vendor_url)
    sim_configure(vendor_url, failure_rate=0.3, latency={"p50_ms": 1, "p95_ms": 1})
    assert pattern() == first  # same seed, same arrivals: the same requests fail
    assert set(first) == {200, 500} and 4 <= first.count(500) <= 20
    assert sim_stats(vendor_url)["failures"] == first.count(500)
    sim_configure(vendor_url, seed=12)
    assert pattern() != first


def test_config_route_validates_and_applies_live(vendor_url: str) -> None:
    bad = [{"failure_rate": 2}, {"no_such": 1}, {"latency": {"p50_ms": 9, "p95_ms": 1}}, [1]]
    for patch in bad:
        r = httpx.post(f"{vendor_url}/_sim/config", json=patch)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_settings"
    assert sim_configure(vendor_url, failure_rate=1.0)["failure_rate"] == 1.0
    r = httpx.post(f"{vendor_url}/v1/images/generations", json=_image())
    assert r.status_code == 500 and r.json()["error"]["code"] == "simulated_failure"
    assert sim_reset(vendor_url)["settings"]["failure_rate"] == 0.0


def test_bad_requests_are_4xx(vendor_url: str) -> None:
    gen = f"{vendor_url}/v1/images/generations"
    for body in (_image(n=2), _image(size="big"), _image(prompt=" "), {"prompt": 5}):
        r = httpx.post(gen, json=body)
        assert r.status_code == 400, (body, r.text)
    sim_configure(vendor_url, vendor_model="only-this")
    assert httpx.post(gen, json=_image()).status_code == 404


def test_references_as_the_real_apis_take_them(vendor_url: str) -> None:
    """OpenAI edits: `image` / `image[]` file parts; queue: `image_urls` (data URIs or URLs)."""
    png = b"\x89PNG\r\n\x1a\n..."
    edits = f"{vendor_url}/v1/images/edits"
    form = {"model": "m", "prompt": "a cat", "size": "32x32"}
    two = [("image[]", ("a.png", png, "image/png")), ("image[]", ("b.webp", png, "image/webp"))]
    assert httpx.post(edits, data=form, files=two).status_code == 200
    assert httpx.post(edits, data=form, files={"image": ("a.png", png, "image/png")}).is_success
    job = {"model": "m", "prompt": "a cat", "width": 32, "height": 32}
    urls = ["data:image/png;base64,iVBORw0KGgo=", "https://example.com/garment.jpg"]
    assert httpx.post(f"{vendor_url}/v1/jobs", json=job | {"image_urls": urls}).status_code == 202
    assert sim_stats(vendor_url)["reference_images"] == 5
    bad = [
        (edits, {"data": form}),  # no image part
        (edits, {"data": form, "files": {"image": ("a.gif", png, "image/gif")}}),
        (edits, {"data": form, "files": {"image": ("a.png", b"", "image/png")}}),
        (f"{vendor_url}/v1/jobs", {"json": job | {"image_urls": ["data:image/png;base64,%%"]}}),
        (f"{vendor_url}/v1/jobs", {"json": job | {"image_urls": ["ftp://x/y.png"]}}),
        (f"{vendor_url}/v1/jobs", {"json": job | {"image_urls": ["data:text/plain;base64,aGk="]}}),
    ]
    for url, kw in bad:
        r = httpx.post(url, **kw)
        assert r.status_code == 400, (kw, r.text)
    assert sim_stats(vendor_url)["reference_images"] == 5


def test_settings_from_the_default_config() -> None:
    cfg = load_config()
    for name in ("proprietary-a", "proprietary-b"):
        model = cfg.model(name)
        s = VendorSettings.from_model(model)
        assert s.price_usd == model.price_per_image and s.name == name
        assert model.api is not None and model.api.simulated is not None
        assert s.latency == model.api.simulated.latency
    with pytest.raises(ValueError, match="simulated"):
        VendorSettings.from_model(cfg.model("sdxl-turbo"))
