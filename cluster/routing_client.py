"""HTTP client for a running easel gateway's admin routes.

`easel route ...` and `easel operator` use it to read per-provider weights, health, outstanding
requests and p95 (`/v1/admin/routing`), and to change weights, the policy and drains without a
redeploy; the gateway applies a change on every one of its processes. `easel bench` reads the
usage rows for costing (`/v1/admin/usage`) and the availability figures
(`/v1/admin/availability`) through it too. The admin key travels as a bearer token and is never
printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cluster._table import format_table

__all__ = [
    "ProviderRoute",
    "ProviderSummary",
    "RoutingClient",
    "RoutingError",
    "RoutingView",
    "format_view",
]

ROUTE = "/v1/admin/routing"


class RoutingError(RuntimeError):
    """The app could not be reached or refused the request; the message says which and why."""


@dataclass(frozen=True)
class ProviderRoute:
    """One (model, provider) route as the app reports it."""

    model: str
    provider: str
    weight: float
    drained: bool
    healthy: bool
    outstanding: int
    p95_ms: float | None
    requests: int
    errors: int


@dataclass(frozen=True)
class ProviderSummary:
    """A provider over all the models it serves."""

    provider: str
    weight: float
    drained: bool
    healthy: bool
    outstanding: int
    requests: int
    errors: int
    p95_ms: float | None
    models: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class RoutingView:
    """The app's routing state."""

    policy: str
    routes: tuple[ProviderRoute, ...]

    def by_provider(self) -> dict[str, ProviderSummary]:
        """Per provider: drained/healthy only if every model route is, counts summed, worst p95."""
        out: dict[str, ProviderSummary] = {}
        for r in self.routes:
            s = out.get(r.provider)
            if s is None:
                out[r.provider] = ProviderSummary(
                    r.provider,
                    r.weight,
                    r.drained,
                    r.healthy,
                    r.outstanding,
                    r.requests,
                    r.errors,
                    r.p95_ms,
                    (r.model,),
                )
                continue
            p95s = [p for p in (s.p95_ms, r.p95_ms) if p is not None]
            out[r.provider] = ProviderSummary(
                r.provider,
                max(s.weight, r.weight),
                s.drained and r.drained,
                s.healthy and r.healthy,
                s.outstanding + r.outstanding,
                s.requests + r.requests,
                s.errors + r.errors,
                max(p95s) if p95s else None,
                (*s.models, r.model),
            )
        return out


class RoutingClient:
    """Talks to `<url>/v1/admin/routing` with the admin key."""

    def __init__(
        self,
        url: str,
        admin_key: str | None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise RoutingError(f"url must start with http:// or https://, got {url!r}")
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RoutingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self) -> RoutingView:
        """The current routing state."""
        return self._request("GET")

    def update(
        self,
        *,
        policy: str | None = None,
        weights: dict[str, float] | None = None,
        drain: Iterable[str] = (),
        undrain: Iterable[str] = (),
        model: str | None = None,
    ) -> RoutingView:
        """Change any of policy, weights and drains (of one model, or all); returns the new view."""
        body: dict[str, Any] = {}
        if policy is not None:
            body["policy"] = policy
        if weights:
            bad = {p: w for p, w in weights.items() if not w >= 0}
            if bad:
                raise RoutingError(f"weights must be >= 0, got {bad}")
            body["weights"] = dict(weights)
        if drain := list(drain):
            body["drain"] = drain
        if undrain := list(undrain):
            body["undrain"] = undrain
        if not body:
            raise RoutingError("nothing to change: give a policy, weights, drain or undrain")
        if model is not None:
            body["model"] = model
        return self._request("PUT", body)

    def usage(self) -> list[dict[str, Any]]:
        """Every replica's usage row (the providers' ledgers and the vendors' images)."""
        return list(self._get_json("/v1/admin/usage")["replicas"])

    def availability(self) -> dict[str, Any]:
        """The gateway's per-upstream availability figures (`rows`, raw `stats`, the window)."""
        return self._get_json("/v1/admin/availability")

    def wait_drained(
        self, providers: Iterable[str], timeout: float = 120.0, interval: float = 0.25
    ) -> RoutingView:
        """Poll until `providers` have no outstanding requests; RoutingError after `timeout`."""
        wanted = set(providers)
        deadline = time.monotonic() + timeout
        while True:
            view = self.show()
            left = {
                p: s.outstanding
                for p, s in view.by_provider().items()
                if p in wanted and s.outstanding > 0
            }
            if not left:
                return view
            if time.monotonic() >= deadline:
                raise RoutingError(f"still in flight after {timeout:g}s: {left}")
            time.sleep(interval)

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(method, route, json=body)
        except httpx.HTTPError as exc:
            raise RoutingError(f"cannot reach {self.url}{route}: {exc}") from None
        if resp.status_code in (401, 403):
            raise RoutingError(
                f"{self.url} refused the admin key ({resp.status_code}: {_error(resp)}); set the "
                "admin key env variable (serve.admin_key_env) on both the server and this client"
            )
        if resp.status_code >= 400:
            raise RoutingError(f"{method} {route} answered {resp.status_code}: {_error(resp)}")
        try:
            return resp.json()
        except ValueError as exc:
            raise RoutingError(f"{route} answered something that is not JSON: {exc}") from None

    def _get_json(self, route: str) -> dict[str, Any]:
        data = self._call("GET", route)
        if not isinstance(data, dict):
            raise RoutingError(f"{route} answered {type(data).__name__}, not an object")
        return data

    def _request(self, method: str, body: dict[str, Any] | None = None) -> RoutingView:
        data = self._call(method, ROUTE, body)
        try:
            return _view(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise RoutingError(f"{ROUTE} answered something unexpected: {exc}") from None


def format_view(view: RoutingView) -> str:
    """The routing state as a table, one (model, provider) route a line."""
    rows = [
        (
            r.model,
            r.provider,
            f"{r.weight:g}",
            "drained" if r.drained else "-",
            "healthy" if r.healthy else "UNHEALTHY",
            r.outstanding,
            "-" if r.p95_ms is None else f"{r.p95_ms:.0f}",
            r.requests,
            r.errors,
        )
        for r in sorted(view.routes, key=lambda r: (r.model, r.provider))
    ]
    header = (
        "model",
        "provider",
        "weight",
        "drain",
        "health",
        "outstanding",
        "p95_ms",
        "requests",
        "errors",
    )
    return f"policy: {view.policy}\n" + format_table(header, rows)


def _view(data: dict[str, Any]) -> RoutingView:
    routes = tuple(
        ProviderRoute(
            model=str(p["model"]),
            provider=str(p["provider"]),
            weight=float(p["weight"]),
            drained=bool(p["drained"]),
            healthy=bool(p["healthy"]),
            outstanding=int(p["outstanding"]),
            p95_ms=None if p.get("p95_ms") is None else float(p["p95_ms"]),
            requests=int(p.get("requests", 0)),
            errors=int(p.get("errors", 0)),
        )
        for p in data["providers"]
    )
    return RoutingView(policy=str(data["policy"]), routes=routes)


def _error(resp: httpx.Response) -> str:
    try:
        err = resp.json()["error"]
        return f"{err.get('code')}: {err.get('message')}"
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason_phrase
