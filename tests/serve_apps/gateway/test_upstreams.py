"""What an attempt on an upstream comes back as: vendor failures, provider answers, no network."""

from __future__ import annotations

import pytest

from serve_apps.api.outcomes import outcome_of_status
from serve_apps.gateway.upstreams import _vendor_attempt, approximate_tokens
from serve_apps.vendors.clients import VendorError


@pytest.mark.parametrize(
    ("exc", "status", "outcome"),
    [
        (VendorError(504, "upstream_timeout", "slow", retryable=True), 504, "timeout"),
        (VendorError(503, "upstream_unavailable", "5xx", 2.0, True, vendor_status=500), 503,
         "error"),
        (VendorError(503, "upstream_unavailable", "busy", 3.0, True, vendor_status=429), 503,
         "shed"),
        (VendorError(502, "upstream_rejected", "bad key", vendor_status=401), 502, "error"),
        (VendorError(400, "upstream_rejected", "content policy", vendor_status=422), 400,
         "client_error"),
    ],
)  # fmt: skip
def test_vendor_errors_become_attempts(exc, status, outcome):
    a = _vendor_attempt(exc)
    assert (a.status, a.outcome, a.code) == (status, outcome, exc.code)
    assert a.message.startswith("vendor: ")
    if outcome == "shed":
        assert a.retry_after == 3.0


@pytest.mark.parametrize("vendor_status", [401, 422, 500, None])
def test_vendor_error_bodies_are_not_echoed_to_clients(vendor_status):
    # Real vendors echo parts of the key ("Incorrect API key provided: sk-abc...").
    body = "images: vendor answered 401 (invalid_api_key: Incorrect API key sk-live-SECRET)"
    status = 400 if vendor_status == 422 else 502 if vendor_status == 401 else 503
    a = _vendor_attempt(VendorError(status, "upstream_rejected", body, vendor_status=vendor_status))
    assert "SECRET" not in a.message and "Incorrect" not in a.message


async def test_text_a_client_cannot_send_is_its_own_error_not_the_vendors():
    from serve_apps.api.schemas import ResolvedRequest
    from serve_apps.gateway.upstreams import VendorUpstream
    from tests.serve_apps._configs import small_config

    model = small_config().model("api-fast").model_copy(
        update={"api": small_config().model("api-fast").api.model_copy(
            update={"base_url": "http://127.0.0.1:9"})}
    )  # fmt: skip
    up = VendorUpstream(model)
    # A request id that is not ASCII: the vendor client refuses it before any network call.
    a = await up.send(ResolvedRequest("caf\u00e9", "api-fast", "a cat", 64, 64, 1, 0.0, 7), 5.0)
    await up.aclose()
    assert (a.outcome, a.status) == ("client_error", 422)
    assert "cannot be sent" in a.message


def test_approximate_tokens_counts_words_and_punctuation():
    assert approximate_tokens("a red car, parked.") == 6
    assert approximate_tokens("") == 0


@pytest.mark.parametrize(
    ("status", "header", "outcome"),
    [
        (422, "client_error", "client_error"),  # the provider's own word wins
        (503, "shed", "shed"),
        (503, "error", "error"),
        (503, None, "shed"),  # a bare 503 (Serve's proxy, a load balancer): overload
        (504, None, "timeout"),
        (500, None, "error"),
        (404, None, "error"),  # a provider that does not know the model: another may
        (503, "bogus", "shed"),  # an unknown word is ignored
    ],
)
def test_provider_answers_say_whose_fault(status, header, outcome):
    assert outcome_of_status(status, header) == outcome
