"""The request path: send one image request to the upstreams of its model until one answers.

Within the request's deadline (`routing.request_timeout_s`), the routing table offers an
upstream, the attempt goes out, and a refused connection, an error, a timeout or a full queue
moves the request to the next upstream the table offers (never one already tried); a client's
mistake goes straight back to the client. In-flight counts are taken before each attempt and
given back in a `finally`, so a request cancelled by its client's disconnect releases them too.
An attempt whose upstream is marked unhealthy while it waits is abandoned by the routing table
and fails over at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from config import ModelConfig
from serve_apps.api.errors import ApiError
from serve_apps.api.responses import ImageMeta
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.gateway.routing import RoutingTable, UpstreamState
from serve_apps.gateway.upstreams import Attempt

__all__ = ["Dispatcher", "Sender"]


class Sender(Protocol):
    """What an upstream does with one attempt (`ProviderUpstream`, `VendorUpstream`)."""

    async def send(self, resolved: ResolvedRequest, timeout_s: float) -> Attempt: ...


class Dispatcher:
    """Failover over the upstreams of `table`; `senders` maps (model, provider) to its sender."""

    def __init__(
        self,
        table: RoutingTable,
        senders: Mapping[tuple[str, str], Sender],
        timeout_s: float,
    ) -> None:
        self.table = table
        self.senders = senders
        self.timeout_s = timeout_s

    async def dispatch(
        self, model: ModelConfig, resolved: ResolvedRequest
    ) -> tuple[bytes, ImageMeta]:
        """The image and its metadata; ApiError (4xx passed on, 503/504) when none could make it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        upstream_s = 0.0  # time spent waiting on upstreams
        tried: list[str] = []
        failures: list[tuple[str, str, str]] = []  # (provider, outcome, message)
        retry_after = 1.0
        last: UpstreamState | None = None
        while True:
            choice = self.table.choose(model.name, tried)
            if choice.upstream is None:
                if choice.why == "full":
                    failures.append(("gateway", "shed", "every healthy upstream is at its limit"))
                retry_after = max(retry_after, choice.retry_after)
                break
            s = choice.upstream
            if last is not None:
                last.stats.failovers += 1
            tried.append(s.provider)
            sent = loop.time()
            result = await self._attempt(s, resolved, deadline)
            upstream_s += loop.time() - sent
            if result.outcome == "ok":
                assert result.meta is not None
                meta = replace(
                    result.meta,
                    provider=s.provider,
                    attempts=len(tried),
                    gateway_ms=-upstream_s * 1000,  # the route adds its own elapsed time
                )
                return result.png, meta
            if result.outcome == "client_error":
                raise ApiError(result.status, result.message, code=result.code or None)
            if result.outcome == "internal":
                raise ApiError(500, result.message, code="internal_error")
            if result.retry_after:
                retry_after = max(retry_after, result.retry_after)
            failures.append((s.provider, result.outcome, result.message))
            last = s
            if loop.time() >= deadline:
                break
        raise _final_error(
            model.name, failures, self.timeout_s, retry_after, loop.time() >= deadline
        )

    async def _attempt(
        self, s: UpstreamState, resolved: ResolvedRequest, deadline: float
    ) -> Attempt:
        """One attempt on `s`, counted in and out; abandoned when `s` turns unhealthy."""
        loop = asyncio.get_running_loop()
        remaining = max(0.001, deadline - loop.time())
        sender = self.senders[(s.model, s.provider)]
        self.table.begin(s)
        outcome, latency_ms = "cancelled", None
        task = asyncio.ensure_future(sender.send(resolved, remaining))
        s.inflight.add(task)
        t0 = time.perf_counter()
        try:
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if not done:
                result = Attempt(
                    "timeout", 504, "upstream_timeout", f"no answer within {remaining:.3g}s"
                )
            elif task.cancelled():  # abandoned: the routing table marked `s` unhealthy meanwhile
                result = Attempt("error", 503, "upstream_unhealthy", "abandoned: marked unhealthy")
            else:
                result = task.result()
            outcome = result.outcome
            latency_ms = (time.perf_counter() - t0) * 1000
            return result
        except Exception as exc:  # a bug in a sender: ours, never the upstream's fault
            outcome = "internal"
            return Attempt(
                "internal", 500, "internal_error", f"internal error ({type(exc).__name__})"
            )
        finally:
            s.inflight.discard(task)
            if not task.done():
                task.cancel()
            self.table.end(s, outcome, latency_ms)


def _final_error(
    model: str,
    failures: list[tuple[str, str, str]],
    timeout_s: float,
    retry_after: float,
    timed_out: bool,
) -> ApiError:
    detail = "; ".join(f"{p}: {o} ({m})" if m else f"{p}: {o}" for p, o, m in failures)
    if failures and (
        all(o == "timeout" for _, o, _ in failures) or (timed_out and failures[-1][1] == "timeout")
    ):
        return ApiError(
            504,
            f"model {model!r}: no answer within {timeout_s:g}s ({detail})",
            code="upstream_timeout",
        )
    if failures and all(o == "shed" for _, o, _ in failures):
        return ApiError(
            503,
            f"model {model!r} is overloaded: every provider's queue is full ({detail})",
            code="overloaded",
            retry_after=retry_after,
        )
    if failures:
        return ApiError(
            503,
            f"model {model!r}: every provider failed ({detail})",
            code="all_providers_failed",
            retry_after=retry_after,
        )
    return ApiError(
        503,
        f"model {model!r}: no healthy, undrained provider",
        code="no_healthy_provider",
        retry_after=retry_after,
    )
