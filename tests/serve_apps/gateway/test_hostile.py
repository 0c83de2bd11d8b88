"""Hostile input against a live gateway: fuzzing, bombs, slow bodies, auth on every route, secrets.

One gateway in this process (uvicorn on a thread, real HTTP on 127.0.0.1) in front of the
cheapest upstreams there are, closed models behind simulated vendors (each its own process): the
gateway's validation, auth and error paths are what is under attack, and they are the same code
whatever the upstream. The tenant key and the admin key are one value here, so that the fuzzer's
one `Authorization` header reaches the admin routes and the model routes alike.

The figures of the fuzzing run (cases per operation, statuses) are written as a JSON record to
`$EASEL_RELIABILITY_DIR/hostile.json` when that variable is set (`make hostile-report`), and
docs/reliability.md is generated from it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from config import EaselConfig
from tests._util import ThreadServer, set_env
from tests.serve_apps._configs import small_config
from tests.serve_apps.api.test_images import _bomb_png

KEY = "fuzz-key-7Qm2"  # both the tenant key and the admin key
AUTH = {"Authorization": f"Bearer {KEY}"}
_ENV = {
    "EASEL_ADMIN_KEY": KEY,
    "EASEL_TEST_ALPHA_KEY": KEY,
    "EASEL_TEST_BETA_KEY": "beta-secret-9Xv4",
    "EASEL_VENDOR_KEY_UNDER_TEST": "vendor-secret-3Jk8",
}
SECRETS = tuple(v for k, v in _ENV.items())
# Cases per body operation and generation mode; GETs without parameters have one case each.
_EXAMPLES = 180
OPEN_ROUTES = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


@pytest.fixture(scope="module")
def cfg() -> EaselConfig:
    data = small_config().model_dump(mode="json")
    # A vendor with a key: its key must never surface anywhere either.
    data["models"][0]["api"]["api_key_env"] = "EASEL_VENDOR_KEY_UNDER_TEST"
    data["serve"]["body_timeout_s"] = 1.0
    from config import parse_config

    return parse_config(data, "<hostile test config>")


@pytest.fixture(scope="module")
def gateway(cfg: EaselConfig) -> Iterator[ThreadServer]:
    from serve_apps.gateway.app import create_app
    from serve_apps.gateway.core import with_upstreams
    from simulators import start_vendors

    procs = start_vendors(cfg.models)
    try:
        with set_env(_ENV):
            app = create_app(with_upstreams(cfg, {}, {m: v.url for m, v in procs.items()}))
            with ThreadServer(app) as server:
                server.app = app  # type: ignore[attr-defined]
                yield server
    finally:
        for v in procs.values():
            v.stop()


@pytest.fixture
def client(gateway: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30, headers=AUTH) as c:
        yield c


def _all_healthy(client: httpx.Client) -> list[tuple[str, str]]:
    rows = client.get("/v1/admin/routing").json()["providers"]
    return [(r["model"], r["provider"]) for r in rows if not r["healthy"]]


# --- schemathesis: >= 1,000 generated cases over every operation ------------------------------


def test_fuzzed_cases_get_no_server_error_and_match_the_schema(gateway, client):
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance]
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    unsendable: Counter[str] = Counter()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/generate", "/v1/images/generations", "/v1/models", "/v1/admin/routing",
        "/v1/admin/usage", "/v1/admin/availability", "/metrics", "/healthz", "/readyz",
    }  # fmt: skip

    def fuzz(op, mode):
        @settings(
            max_examples=_EXAMPLES, deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case) -> None:
            body = case.body if isinstance(case.body, dict) else None
            # Every other valid body names a served model, so the fuzzer gets past the model
            # lookup into the model's limits and the upstream path.
            if body is not None and "model" in body and cases[op.label] % 2:
                body["model"] = "api-fast"
                body.pop("n", None)  # one image per case keeps the run short
            cases[op.label] += 1
            try:
                response = case.call(base_url=gateway.url, headers=AUTH, timeout=30)
            except requests.ConnectionError as exc:  # the server dropped us: a failure
                failures.append(f"{op.label} [{mode.value}]: connection lost ({exc!r})"[:400])
                return
            except (requests.RequestException, ValueError) as exc:  # the client refused it
                unsendable[type(exc).__name__] += 1
                return
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # collect them all, fail once at the end
                failures.append(f"{op.label} [{mode.value}]: {str(exc)[:400]}")

        try:
            run()
        except Unsatisfiable:  # no parameters to break: nothing negative to generate
            assert mode == schemathesis.GenerationMode.NEGATIVE, op.label

    started = time.monotonic()
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(op, mode)
    total = sum(cases.values()) - sum(unsendable.values())
    record = {
        "cases": total,
        "per_operation": dict(cases),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "failures": len(failures),
        "unsendable_by_the_client": dict(unsendable),
        "seconds": round(time.monotonic() - started, 1),
        "unhealthy_after": _all_healthy(client),
    }
    _write_record("fuzz", record)
    assert not failures, "\n".join(failures[:10])
    assert total >= 1_000, record
    assert record["unhealthy_after"] == []  # the fuzzing left every provider healthy


# --- hand-made hostile requests ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(side: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(side: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 10)).save(buf, format="JPEG")
    return buf.getvalue()


IMAGES = [
    # (name, reference_image, status, code)
    ("decompression bomb", _bomb_png(50_000), 413, "image_too_large"),
    ("truncated png", _b64(_png()[:60]), 400, "invalid_image"),
    ("png header only", _b64(_png()[:8]), 415, "unsupported_image_format"),
    ("random bytes", _b64(os.urandom(256)), 415, "unsupported_image_format"),
    ("gif", _b64(b"GIF89a" + bytes(64)), 415, "unsupported_image_format"),
    ("svg", _b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 415, "unsupported_image_format"),
    ("jpeg labelled png", f"data:image/png;base64,{_b64(_jpeg())}", 200, ""),
    ("data url without base64", "data:image/png,abc", 400, "bad_request"),
    ("empty", "", 400, "invalid_image"),
]


@pytest.mark.parametrize(
    ("reference", "status", "code"), [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES]
)
def test_hostile_reference_images(client, reference, status, code):
    r = client.post(
        "/v1/generate",
        json={"model": "api-fast", "prompt": "a cat", "reference_image": reference},
    )
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["code"] == code


def test_a_body_over_the_cap_is_refused_whatever_content_length_says(gateway):
    big = b'{"model": "api-fast", "prompt": "' + b"x" * 200_000 + b'"}'

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to check up front
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as c:
        r = c.post("/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def _raw(gateway: ThreadServer, head: bytes, body: bytes = b"") -> bytes:
    """Send raw bytes, then keep the connection open; the answer the server gives."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            data += part
        return data


def test_a_slow_loris_body_is_cut_off_with_408(gateway):
    head = (
        b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: 4000\r\n\r\n".encode()
    )
    t0 = time.monotonic()
    answer = _raw(gateway, head, b'{"model": "api-f')  # ... and the rest never comes
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"body_timeout"' in answer
    assert time.monotonic() - t0 < 8  # body_timeout_s is 1 s here; not held forever


def test_an_unauthenticated_slow_body_is_refused_before_it_is_read(gateway):
    head = (
        b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8000000\r\n\r\n"
    )
    answer = _raw(gateway, head, b"{")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "image/png"],
)  # fmt: skip
def test_wrong_content_types_are_415(client, content_type):
    r = client.post(
        "/v1/generate",
        content=b'{"model": "api-fast", "prompt": "x"}',
        headers={"Content-Type": content_type},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


# --- auth on every route ----------------------------------------------------------------------


def _routes(gateway: ThreadServer) -> list[tuple[str, str]]:
    out = []
    for route in gateway.app.routes:  # type: ignore[attr-defined]
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                out.append((method, route.path))
    return sorted(set(out))


def test_every_route_but_the_probes_needs_a_key(gateway):
    routes = _routes(gateway)
    assert ("PUT", "/v1/admin/routing") in routes and ("POST", "/v1/generate") in routes
    checked = 0
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        for method, path in routes:
            if path in OPEN_ROUTES:
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                r = c.request(method, path, headers=headers, content=b"{}")
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert set(r.json()["error"]) == {"code", "message"}
                checked += 1
    assert checked >= 3 * 8


def test_a_tenant_key_is_not_an_admin_key(gateway):
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        headers = {"Authorization": f"Bearer {_ENV['EASEL_TEST_BETA_KEY']}"}
        assert c.get("/v1/models", headers=headers).status_code == 200
        for path in ("/v1/admin/routing", "/v1/admin/usage", "/metrics"):
            assert c.get(path, headers=headers).status_code == 401


# --- nothing secret in logs, answers or records ---------------------------------------------


def test_no_secret_reaches_logs_or_answers(gateway, client, caplog):
    from simulators import sim_configure

    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    vendor = None
    try:
        for r in (
            client.post("/v1/generate", json={"model": "api-fast", "prompt": "x"}),
            client.post("/v1/generate", json={"model": "nope", "prompt": "x"}),
            client.get("/v1/admin/routing"),
            client.get("/metrics"),
            httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": "Bearer sk-wrong"}),
        ):
            answers.append(r.text + json.dumps(dict(r.headers)))
        # A vendor failing: its answers must not carry our key back to the client.
        vendor = gateway.app.state.gateway.cfg.model("api-fast").api.base_url  # type: ignore[attr-defined]
        sim_configure(str(vendor), failure_rate=1.0)
        r = client.post("/v1/generate", json={"model": "api-fast", "prompt": "x"})
        assert r.status_code == 503
        answers.append(r.text)
    finally:
        if vendor is not None:
            sim_configure(str(vendor), failure_rate=0.0)
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    spec = client.get("/openapi.json").text
    for secret in SECRETS:
        assert all(secret not in a for a in answers), secret
        assert secret not in logs, secret
        assert secret not in spec
    assert "sk-wrong" not in "".join(answers)


def _write_record(name: str, record: dict) -> None:
    folder = os.environ.get("EASEL_RELIABILITY_DIR")
    if folder:
        path = Path(folder) / "hostile.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True))
