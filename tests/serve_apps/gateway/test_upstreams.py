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
