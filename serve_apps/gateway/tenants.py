"""Optional per-tenant API keys and rate limits.

With no tenants in the config the API is open. With tenants, every model request needs
`Authorization: Bearer <key>` where the key is the value of the tenant's `api_key_env` in the
gateway processes: a missing or unknown key is 401, a model the tenant may not use is 403, and a
tenant over its rate is 429 with `Retry-After`. The token buckets live in each gateway process
(nothing shared on the request path): with `serve.workers` processes, each enforces its share of
the rate and burst, so the gateway as a whole enforces the configured figures. Behind several
gateway replicas (pods), each replica enforces the whole rate: set it per replica there.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Mapping

from config import Tenant
from serve_apps.api.errors import ApiError

__all__ = ["RateLimiter", "TenantAuth", "bearer_token"]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TenantAuth:
    """Maps API keys (read from each tenant's env var) to tenants."""

    def __init__(self, tenants: list[Tenant], environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._tenants = {t.name: t for t in tenants}
        self._keys: list[tuple[str, str]] = []
        self.missing_keys = [t.name for t in tenants if not env.get(t.api_key_env)]
        for t in tenants:
            key = env.get(t.api_key_env)
            if key:
                self._keys.append((key, t.name))

    @property
    def enabled(self) -> bool:
        return bool(self._tenants)

    def identify(self, authorization: str | None) -> str | None:
        """The tenant whose key this is; None when auth is off. ApiError 401 else.

        Needs nothing but the header, so the routes call it before reading the body.
        """
        if not self.enabled:
            return None
        token = bearer_token(authorization)
        if token is None:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        tenant = None
        for key, name in self._keys:
            # Constant-time comparison: a key must not leak through response timing.
            if hmac.compare_digest(key.encode(), token.encode("utf-8", "surrogateescape")):
                tenant = name
        if tenant is None:
            raise ApiError(401, "unknown API key")
        return tenant

    def may_use(self, tenant: str, model: str) -> bool:
        allowed = self._tenants[tenant].models
        return allowed is None or model in allowed

    def allow(self, tenant: str | None, model: str) -> None:
        """ApiError 403 when `tenant` may not use `model`."""
        if tenant is None:
            return
        allowed = self._tenants[tenant].models
        if not self.may_use(tenant, model):
            raise ApiError(
                403, f"tenant {tenant!r} may not use model {model!r} (allowed: {allowed})"
            )

    def authenticate(self, authorization: str | None, model: str) -> str | None:
        """The tenant allowed to call `model`; None when auth is off. ApiError 401/403 else."""
        tenant = self.identify(authorization)
        self.allow(tenant, model)
        return tenant


class RateLimiter:
    """Token buckets per tenant: `rate_limit_per_s` refill, `burst` capacity, times `share`.

    Args:
        share: the part of each limit this process enforces (1 / processes sharing it); the
            burst never drops below one request.
    """

    def __init__(self, tenants: list[Tenant], clock=time.monotonic, share: float = 1.0) -> None:
        self._clock = clock
        self._limits = {
            t.name: (t.rate_limit_per_s * share, max(1.0, t.burst * share))
            for t in tenants
            if t.rate_limit_per_s is not None
        }
        now = clock()
        self._buckets = {name: [burst, now] for name, (_, burst) in self._limits.items()}

    def admit(self, tenant: str | None) -> float | None:
        """Take one token; None when admitted, else the seconds until a token is available."""
        if tenant is None or tenant not in self._limits:
            return None
        rate, burst = self._limits[tenant]
        bucket = self._buckets[tenant]
        now = self._clock()
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return None
        return (1 - bucket[0]) / rate
