"""Reading a request: the capability check comes before any image decode, decode is off-loop."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from config import load_config
from serve_apps.api import requests as reqs
from serve_apps.api.errors import ApiError
from serve_apps.api.schemas import GenerateRequest


def _request(**headers: str) -> SimpleNamespace:
    return SimpleNamespace(headers={k.lower(): v for k, v in headers.items()})


async def test_a_model_without_reference_input_never_decodes_one(monkeypatch):
    cfg = load_config()
    model = cfg.model("sdxl-turbo")  # a text-to-image pipeline: no reference image

    def boom(*_a, **_k):
        raise AssertionError("decoded an image the model cannot take")

    monkeypatch.setattr(reqs, "decode_references", boom)
    body = GenerateRequest(model=model.name, prompt="x", reference_image="not even base64")
    with pytest.raises(ApiError) as info:
        await reqs.resolve_body(body, model, _request(), cfg.serve, 1)
    assert (info.value.status, info.value.code) == (422, "unsupported_input")


async def test_reference_images_are_decoded_on_a_worker_thread(monkeypatch):
    cfg = load_config()
    model = cfg.model("flux2-schnell")  # a Flux.2 pipeline: takes reference images
    seen: list[str] = []

    def record(items, model, serve, **_kw) -> tuple[bytes, ...]:
        seen.append(threading.current_thread().name)
        return (b"\x89PNG",)

    monkeypatch.setattr(reqs, "decode_references", record)
    body = GenerateRequest(model=model.name, prompt="x", reference_image="aGk=")
    resolved = await reqs.resolve_body(body, model, _request(), cfg.serve, 1)
    assert resolved.references == (b"\x89PNG",)
    assert seen and seen[0] != threading.main_thread().name


def test_a_request_id_header_that_is_not_ascii_is_named_escaped():
    with pytest.raises(ApiError) as info:
        reqs.header_request_id(_request(**{"X-Request-Id": "ab\u00eac"}))
    assert info.value.status == 422 and "\\xea" in info.value.message
