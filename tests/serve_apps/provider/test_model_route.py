"""A model deployment's own HTTP route (`serve_apps/provider/model_route.py`), without Serve.

The route is plain Starlette code over a `generate` coroutine: driven here with real Starlette
requests and a stand-in for the replica's batcher. The route served by a real replica behind
Serve's proxy is tested in tests/serve_apps/local/test_stack.py.
"""

from __future__ import annotations

import asyncio
import json
import random

from starlette.requests import Request

from config import load_config
from serve_apps.api.outcomes import OUTCOME_HEADER
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.provider.model_route import answer
from serve_apps.provider.results import ErrorResult, ImageResult

CFG = load_config()
MODEL = CFG.model("sdxl-turbo")
PATH = "/lambda-sim/models/sdxl-turbo/v1/generate"


def _call(body: object, *, method: str = "POST", path: str = PATH, accept: str = "", result=None):
    """(status, headers, body bytes, the requests `generate` saw) of one request to the route."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if accept:
        headers.append((b"accept", accept.encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    seen: list[ResolvedRequest] = []

    async def generate(resolved: ResolvedRequest):
        seen.append(resolved)
        return result or ImageResult(b"\x89PNG-bytes", 1.5, 70.0, 2, False, "sdxl-turbo--x#1")

    async def run():
        response = await answer(
            Request(scope, receive), MODEL, CFG.serve, "lambda-sim", generate, random.Random(1)
        )
        return response.status_code, response.headers, response.body

    status, hdrs, data = asyncio.run(run())
    return status, hdrs, data, seen


def test_an_image_with_its_headers_and_the_models_defaults_filled_in():
    status, headers, data, seen = _call({"model": "sdxl-turbo", "prompt": "a mug", "seed": 3})
    assert status == 200 and data == b"\x89PNG-bytes"
    assert headers["content-type"] == "image/png"
    assert headers["x-easel-provider"] == "lambda-sim"
    assert headers["x-easel-replica"] == "sdxl-turbo--x#1"
    assert headers["x-easel-batch-size"] == "2" and headers["x-easel-seed"] == "3"
    (resolved,) = seen
    assert resolved.steps == MODEL.steps.default and resolved.width == MODEL.resolution.default
    # JSON with the image in base64 on Accept: application/json.
    status, headers, data, _ = _call(
        {"model": "sdxl-turbo", "prompt": "a"}, accept="application/json"
    )
    assert status == 200 and json.loads(data)["replica"] == "sdxl-turbo--x#1"


def test_errors_are_the_apis_shape_with_whose_fault_it_was():
    cases = [
        # (body, status, code, outcome): bad input is the client's; a model this route does
        # not serve means the gateway's config disagrees with the provider (fails over).
        (
            {"model": "sdxl-turbo", "prompt": "x", "steps": 999},
            422,
            "invalid_steps",
            "client_error",
        ),
        ({"model": "sdxl-turbo"}, 422, "invalid_request", "client_error"),
        (b"{not json", 400, "invalid_json", "client_error"),
        ({"model": "flux2-dev", "prompt": "x"}, 404, "model_not_found", "error"),
    ]
    for body, status, code, outcome in cases:
        got, headers, data, seen = _call(body)
        assert (got, json.loads(data)["error"]["code"]) == (status, code), data
        assert headers[OUTCOME_HEADER] == outcome and not seen
    got, headers, data, _ = _call({}, method="GET")
    assert got == 405 and headers[OUTCOME_HEADER] == "error"
    got, _, data, _ = _call({}, path="/lambda-sim/models/sdxl-turbo/v1/stats")
    assert got == 404 and json.loads(data)["error"]["code"] == "not_found"


def test_a_replicas_error_record_becomes_its_status_and_outcome():
    refused = ErrorResult(422, "prompt_too_long", "prompt: 90 tokens", "client_error")
    got, headers, data, _ = _call({"model": "sdxl-turbo", "prompt": "x"}, result=refused)
    assert got == 422 and json.loads(data)["error"]["code"] == "prompt_too_long"
    assert headers[OUTCOME_HEADER] == "client_error"
    failed = ErrorResult(500, "inference_failed", "RuntimeError: boom", "error")
    got, headers, _, _ = _call({"model": "sdxl-turbo", "prompt": "x"}, result=failed)
    assert got == 500 and headers[OUTCOME_HEADER] == "error"
