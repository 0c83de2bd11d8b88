"""One request, one record: timings, headers, images, keep-alive and every failure class."""

from __future__ import annotations

import asyncio
import base64

import pytest

from load_tests.client import Client, build_payload, endpoint_url, image_ext
from load_tests.echo_server import EchoServer, tiny_png
from load_tests.http1 import Endpoint
from tests._util import free_port


def _row(**kw):
    row = {
        "job_id": "job-1",
        "row": 0,
        "model": "sdxl-turbo",
        "niche": "corporate-headshots",
        "prompt": "a headshot",
        "width": 64,
        "height": 64,
        "steps": 1,
        "seed": 3,
        "tenant": None,
        "reference_image": None,
        "arrival_s": 0.0,
    }
    row.update(kw)
    return row


async def _send(url, row, api="easel", timeout_s=5.0, images_dir=None):
    async with Client(endpoint_url(url, api), api, timeout_s=timeout_s) as client:
        return await client.send(row, images_dir)


def test_payloads_and_urls():
    row = _row(reference_image=b"\x89PNG....", seed=None)
    easel = build_payload(row, "easel")
    assert easel["request_id"] == "job-1" and easel["niche"] == "corporate-headshots"
    assert "seed" not in easel  # null fields are left to the server
    assert base64.b64decode(easel["reference_image"]) == b"\x89PNG...."
    openai = build_payload(row, "openai")
    assert openai == {
        "model": "sdxl-turbo",
        "prompt": "a headshot",
        "n": 1,
        "response_format": "b64_json",
        "size": "64x64",
    }
    assert endpoint_url("http://h:1/", "easel") == "http://h:1/v1/generate"
    assert endpoint_url("http://h:1/v1/images/generations", "openai").count("/v1/") == 1
    with pytest.raises(ValueError, match="unknown api"):
        endpoint_url("http://h:1", "grpc")
    with pytest.raises(ValueError, match="http://"):
        endpoint_url("h:1", "easel")
    assert image_ext(tiny_png()) == ".png" and image_ext(b"{}") is None


def test_request_bytes_are_plain_http_1_1():
    ep = Endpoint.of("https://api.example.com/v1/images/generations?x=1", {"Authorization": "k"})
    data = ep.request(b'{"a":1}')
    head, body = data.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/images/generations?x=1 HTTP/1.1"
    assert "Host: api.example.com" in lines and "Authorization: k" in lines
    assert "Content-Length: 7" in lines and body == b'{"a":1}'
    assert ep.tls and ep.port == 443
    assert Endpoint.of("http://127.0.0.1:8123/v1/generate", {}).head.count(b"Host: 127.0.0.1:8123")


async def test_ok_record_with_timings_headers_and_image(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    with EchoServer(service_ms=30) as srv:
        rec = await _send(srv.url, _row(), images_dir=images)
    assert rec["ok"] and rec["status"] == 200 and rec["error_class"] == "ok"
    assert rec["sent_s"] <= rec["first_byte_s"] <= rec["done_s"]
    assert rec["service_ms"] >= 30 and rec["latency_ms"] >= rec["service_ms"]
    assert rec["provider"] == "echo" and rec["replica"] == "echo-0"
    assert rec["inference_ms"] >= 29 and rec["batch_size"] == 1 and rec["cold_start"] is True
    assert rec["image_path"] == "images/job-1.png"
    assert (tmp_path / rec["image_path"]).read_bytes() == tiny_png()
    assert len(rec["image_sha256"]) == 64


async def test_openai_api_has_null_timing_columns():
    with EchoServer() as srv:
        rec = await _send(srv.url, _row(), api="openai")
    assert rec["ok"], rec
    assert rec["image_sha256"] and rec["image_path"] is None
    for col in ("provider", "queue_ms", "inference_ms", "batch_size", "cold_start"):
        assert rec[col] is None


async def test_connections_are_kept_alive_and_reused():
    with EchoServer() as srv:
        async with Client(endpoint_url(srv.url, "easel"), "easel", timeout_s=5) as client:
            recs = [await client.send(_row(job_id=f"j{i}")) for i in range(5)]
            # Five at once need five connections; one of them was already open.
            recs += await asyncio.gather(*(client.send(_row(job_id=f"k{i}")) for i in range(5)))
            opened = client.pool.opened
    assert all(r["ok"] for r in recs)
    assert opened == 5


async def _raw_server(answer: bytes):
    """A server that answers every request with `answer` verbatim (then keeps or closes)."""

    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_chunked_and_closing_responses_are_framed():
    png = tiny_png()
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, png[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(png) - 10, png[10:])
    )
    server, url = await _raw_server(chunked)
    async with server, Client(url + "/v1/generate", "easel", timeout_s=5) as client:
        recs = [await client.send(_row(job_id=f"j{i}")) for i in range(3)]
        assert client.pool.opened == 1
    assert all(r["ok"] for r in recs) and recs[0]["image_sha256"]
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(png),
        png,
    )
    server, url = await _raw_server(closing)
    async with server, Client(url + "/v1/generate", "easel", timeout_s=5) as client:
        recs = [await client.send(_row(job_id=f"j{i}")) for i in range(3)]
        assert client.pool.opened == 3  # the server said close: never reused
    assert all(r["ok"] for r in recs)


async def test_http_errors_are_classified():
    with EchoServer(fail_every=1) as srv:
        rec = await _send(srv.url, _row())
        bad = await _send(srv.url, _row(prompt=""))
    assert rec["error_class"] == "http_503" and rec["status"] == 503 and not rec["ok"]
    assert "overloaded" in rec["error"] and "Retry-After: 1" in rec["error"]
    assert bad["error_class"] == "http_4xx" and bad["status"] == 422


async def test_timeout_and_connection_errors_are_records():
    with EchoServer(service_ms=800) as srv:
        slow = await _send(srv.url, _row(), timeout_s=0.2)
    assert slow["error_class"] == "timeout" and slow["status"] is None
    assert 150 <= slow["service_ms"] < 700
    refused = await _send(f"http://127.0.0.1:{free_port()}", _row())
    assert refused["error_class"] == "connection" and not refused["ok"]
    assert refused["done_s"] is not None and refused["latency_ms"] >= 0


async def test_a_200_that_is_not_an_image_is_a_bad_response():
    with EchoServer(body=b"<html>oops</html>") as srv:
        rec = await _send(srv.url, _row())
    assert rec["status"] == 200 and not rec["ok"] and rec["error_class"] == "bad_response"
    assert "not an image" in rec["error"] and rec["image_sha256"] is None
