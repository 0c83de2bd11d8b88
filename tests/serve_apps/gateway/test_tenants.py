"""Tenant API keys (401/403) and token-bucket rate limits (429 with a wait)."""

from __future__ import annotations

import pytest

from config import Tenant
from serve_apps.api.errors import ApiError
from serve_apps.gateway.tenants import RateLimiter, TenantAuth, bearer_token

TENANTS = [
    Tenant(name="alpha", api_key_env="ALPHA_KEY"),
    Tenant(name="beta", api_key_env="BETA_KEY", rate_limit_per_s=2.0, burst=2, models=["m1"]),
]
ENV = {"ALPHA_KEY": "ka", "BETA_KEY": "kb"}


def test_no_tenants_means_open_api():
    assert TenantAuth([], {}).authenticate(None, "m1") is None


@pytest.mark.parametrize(
    ("header", "model", "status"),
    [
        (None, "m1", 401),
        ("Bearer nope", "m1", 401),
        ("Basic ka", "m1", 401),
        ("Bearer kb", "m2", 403),
    ],
)
def test_auth_errors(header, model, status):
    with pytest.raises(ApiError) as info:
        TenantAuth(TENANTS, ENV).authenticate(header, model)
    assert info.value.status == status


def test_auth_finds_the_tenant():
    auth = TenantAuth(TENANTS, ENV)
    assert auth.authenticate("Bearer ka", "m2") == "alpha"
    assert auth.authenticate("bearer kb", "m1") == "beta"
    assert TenantAuth(TENANTS, {"ALPHA_KEY": "ka"}).missing_keys == ["beta"]


def test_bearer_token():
    assert bearer_token("Bearer  x ") == "x"
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_rate_limiter_bursts_then_waits_then_refills():
    now = [0.0]
    lim = RateLimiter(TENANTS, clock=lambda: now[0])
    assert lim.admit("alpha") is None  # no limit configured
    assert lim.admit("beta") is None
    assert lim.admit("beta") is None
    wait = lim.admit("beta")
    assert wait == pytest.approx(0.5)
    now[0] += 0.5
    assert lim.admit("beta") is None
    assert lim.admit("beta") == pytest.approx(0.5)


def test_each_of_n_processes_enforces_its_share_of_the_rate():
    now = [0.0]
    whole = [Tenant(name="t", api_key_env="T_KEY", rate_limit_per_s=4.0, burst=4)]
    half = RateLimiter(whole, clock=lambda: now[0], share=0.5)
    assert [half.admit("t") for _ in range(2)] == [None, None]
    assert half.admit("t") == pytest.approx(0.5)  # 2 req/s: the next token in half a second
    now[0] += 0.5
    assert half.admit("t") is None
