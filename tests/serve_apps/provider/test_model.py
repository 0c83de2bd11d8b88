"""How the model deployments turn vendor failures into records (the replicas run in test_app.py
and test_ingress.py)."""

from __future__ import annotations

import pytest

from serve_apps.deployments import _vendor_error, approximate_tokens
from serve_apps.http_api import VendorError


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
def test_vendor_errors_become_records(exc, status, outcome):
    rec = _vendor_error(exc)
    assert rec["ok"] is False
    assert (rec["status"], rec["outcome"], rec["code"]) == (status, outcome, exc.code)
    assert rec["message"].startswith("vendor: ")
    if outcome == "shed":
        assert rec["retry_after"] == 3.0


def test_approximate_tokens_counts_words_and_punctuation():
    assert approximate_tokens("a red car, parked.") == 6
    assert approximate_tokens("") == 0
