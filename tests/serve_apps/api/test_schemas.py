"""Per-model request limits: defaults filled in, anything out of range a 422 naming the range."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from config import load_config
from serve_apps.api.errors import ApiError
from serve_apps.api.schemas import (
    GenerateRequest,
    ImagesRequest,
    model_capabilities,
    parse_size,
    reference_models,
    resolve_generate,
)

CFG = load_config()


def _resolve(model: str = "sdxl-lightning", **kw):
    args = dict(
        model=CFG.model(model),
        request_id="r1",
        prompt="a cat",
        width=None,
        height=None,
        steps=None,
        guidance=None,
        seed=None,
        default_seed=42,
    )
    args.update(kw)
    return resolve_generate(**args)


def test_defaults_come_from_the_model():
    r = _resolve()
    m = CFG.model("sdxl-lightning")
    assert (r.width, r.height, r.steps, r.guidance, r.seed) == (
        m.resolution.default,
        m.resolution.default,
        m.steps.default,
        m.guidance.default,
        42,
    )


@pytest.mark.parametrize(
    ("kw", "code", "needle"),
    [
        ({"width": 100}, "invalid_resolution", "multiple of 16"),
        ({"height": 512}, "invalid_resolution", "32..256"),
        ({"width": 16}, "invalid_resolution", "32..256"),
        ({"steps": 9}, "invalid_steps", "1..8"),
        ({"guidance": 2.5}, "invalid_guidance", "0.0..2.0"),
        ({"prompt": "   "}, "invalid_request", "blank"),
        ({"negative_prompt": "blurry"}, "unsupported_input", "guidance > 1"),
        ({"references": [b"x"]}, "unsupported_input", "does not take reference images"),
    ],
)
def test_out_of_range_is_422_with_the_allowed_range(kw, code, needle):
    with pytest.raises(ApiError) as info:
        _resolve(**kw)
    assert info.value.status == 422
    assert info.value.code == code
    assert needle in info.value.message


def test_capabilities_follow_the_backend():
    assert model_capabilities(CFG.model("sdxl-turbo")) == {
        "negative_prompt": True,
        "reference_image": False,
        "max_reference_images": 0,
    }
    assert model_capabilities(CFG.model("flux2-dev"))["negative_prompt"] is False
    # The Flux.2 pipelines take `image=`; so do the vendor APIs; SDXL does not.
    for name in ("flux2-dev", "flux2-schnell", "proprietary-a", "proprietary-b"):
        assert model_capabilities(CFG.model(name))["max_reference_images"] == 4
    assert reference_models(CFG.models) == [
        "flux2-dev",
        "flux2-schnell",
        "proprietary-a",
        "proprietary-b",
    ]
    with pytest.raises(ApiError, match="negative prompt"):
        _resolve("flux2-dev", negative_prompt="x")
    r = _resolve("sdxl-lightning", negative_prompt="blurry", guidance=1.5)
    assert r.negative_prompt == "blurry"


def test_body_models_forbid_unknown_fields_and_bound_values():
    with pytest.raises(ValidationError, match="extra"):
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "colour": 1})
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "seed": -1})
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"model": "m", "prompt": "p", "request_id": "a b"})
    with pytest.raises(ValidationError):
        ImagesRequest.model_validate({"model": "m", "prompt": "p", "n": 0})
    ok = ImagesRequest.model_validate({"model": "m", "prompt": "p", "size": "64x32", "n": 2})
    assert ok.n == 2


@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (None, None)), ("auto", (None, None)), ("64x32", (64, 32))],
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["64", "64*64", "x64", "-1x5", "1024x1024x3"])
def test_parse_size_rejects(size):
    with pytest.raises(ApiError, match="WIDTHxHEIGHT"):
        parse_size(size)


def test_resolved_request_pickles_and_round_trips_through_the_wire_body():
    import pickle

    r = _resolve("proprietary-a", references=[b"\x89PNG...", b"\x89PNG 2"], niche="n")
    assert pickle.loads(pickle.dumps(r)) == r
    # What the gateway sends a provider resolves to the same request there, defaults and all.
    body = GenerateRequest.model_validate(r.wire_body())
    assert body.seed == r.seed and body.steps == r.steps and body.request_id == r.request_id
    assert body.width == r.width and body.guidance == r.guidance and body.niche == "n"
    assert [base64.b64decode(x) for x in body.reference_images] == list(r.references)


def test_too_many_references_is_422_naming_the_limit():
    with pytest.raises(ApiError) as info:
        _resolve("flux2-dev", references=[b"x"] * 5)
    assert info.value.status == 422 and info.value.code == "too_many_references"
    assert "at most 4" in info.value.message


def test_batch_key_separates_shapes_reference_counts_and_reference_sets():
    plain = _resolve("flux2-dev")
    one = _resolve("flux2-dev", references=[b"a"])
    one_again = _resolve("flux2-dev", references=[b"a"], seed=99)
    other = _resolve("flux2-dev", references=[b"b"])
    two = _resolve("flux2-dev", references=[b"a", b"b"])
    assert one.batch_key() == one_again.batch_key()  # same photos, other seed: one pass
    keys = {plain.batch_key(), one.batch_key(), other.batch_key(), two.batch_key()}
    assert len(keys) == 4
    assert [r.batch_key()[4] for r in (plain, one, two)] == [0, 1, 2]
    assert _resolve("flux2-dev", width=128).batch_key() != plain.batch_key()
