"""The failover loop, with scripted senders (no network): order, deadlines, counts, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from serve_apps.api.errors import ApiError
from serve_apps.api.responses import ImageMeta
from serve_apps.api.schemas import ResolvedRequest
from serve_apps.gateway.dispatch import Dispatcher
from serve_apps.gateway.routing import RoutingTable
from serve_apps.gateway.upstreams import Attempt
from tests.serve_apps.gateway.test_routing import _cfg

REQ = ResolvedRequest("r1", "sdxl-turbo", "a cat", 64, 64, 1, 0.0, 7)


class Script:
    """A sender that answers as told, or hangs until cancelled."""

    def __init__(self, *answers: Attempt | str) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.cancelled = 0

    async def send(self, resolved: ResolvedRequest, timeout_s: float) -> Attempt:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else "hang"
        if answer == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if answer == "boom":
            raise RuntimeError("a bug in the sender")
        return answer  # type: ignore[return-value]


async def _in_flight(s, timeout: float = 5.0) -> None:
    """Wait (with a deadline) until an attempt is in flight on upstream `s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not s.outstanding:
        assert loop.time() < deadline, "no attempt went out"
        await asyncio.sleep(0.005)


def _ok() -> Attempt:
    meta = ImageMeta("r1", "sdxl-turbo", "", "rep#1", 1.0, 2.0, 1, False, 7, 64, 64, 1)
    return Attempt("ok", png=b"\x89PNG", meta=meta)


def _dispatcher(
    scripts: dict[str, Script], timeout_s: float = 5.0, policy: str = "cheapest_healthy"
):
    cfg = _cfg(policy)
    table = RoutingTable(cfg)
    senders = {("sdxl-turbo", p): scripts.get(p, Script()) for p in table.providers("sdxl-turbo")}
    return Dispatcher(table, senders, timeout_s), table, cfg.model("sdxl-turbo")


async def test_fails_over_in_order_and_counts_attempts():
    # cheapest first: runpod, then lambda, then azure
    scripts = {
        "runpod-sim": Script(Attempt("connect", 503, "upstream_unreachable", "refused")),
        "lambda-sim": Script(Attempt("error", 503, "replica_failed", "dead replica")),
        "azure-sim": Script(_ok()),
    }
    d, table, model = _dispatcher(scripts)
    png, meta = await d.dispatch(model, REQ)
    assert png == b"\x89PNG" and meta.provider == "azure-sim" and meta.attempts == 3
    assert [s.calls for s in scripts.values()] == [1, 1, 1]
    assert table.state("sdxl-turbo", "runpod-sim").stats.failovers == 1
    assert not table.state("sdxl-turbo", "runpod-sim").healthy  # refused: unhealthy at once
    assert all(s.outstanding == 0 for s in table.states())


async def test_a_client_error_goes_back_at_once_and_no_one_is_blamed():
    scripts = {"runpod-sim": Script(Attempt("client_error", 422, "prompt_too_long", "too long"))}
    d, table, model = _dispatcher(scripts)
    with pytest.raises(ApiError) as info:
        await d.dispatch(model, REQ)
    assert (info.value.status, info.value.code) == (422, "prompt_too_long")
    assert sum(s.calls for s in scripts.values()) == 1
    assert all(s.healthy and s.stats.errors == 0 for s in table.states())


async def test_every_provider_failing_is_503_naming_each():
    scripts = {
        p: Script(Attempt("error", 503, "x", f"{p} broke"))
        for p in ("runpod-sim", "lambda-sim", "azure-sim")
    }
    d, _, model = _dispatcher(scripts)
    with pytest.raises(ApiError) as info:
        await d.dispatch(model, REQ)
    err = info.value
    assert (err.status, err.code) == (503, "all_providers_failed") and err.retry_after >= 1
    assert all(p in err.message for p in scripts)


async def test_all_shed_is_overloaded_and_all_timeouts_504():
    d, _, model = _dispatcher({p: Script(Attempt("shed", 503, "overloaded", "full", 2.0))
                               for p in ("runpod-sim", "lambda-sim", "azure-sim")})  # fmt: skip
    with pytest.raises(ApiError) as info:
        await d.dispatch(model, REQ)
    assert (info.value.code, info.value.retry_after) == ("overloaded", 2.0)
    d, table, model = _dispatcher({}, timeout_s=0.3)  # every sender hangs
    with pytest.raises(ApiError) as info:
        await d.dispatch(model, REQ)
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    assert all(s.outstanding == 0 for s in table.states())


async def test_a_sender_bug_is_a_500_that_blames_no_provider():
    d, table, model = _dispatcher({"runpod-sim": Script("boom")})
    with pytest.raises(ApiError) as info:
        await d.dispatch(model, REQ)
    assert info.value.status == 500
    assert all(s.healthy and s.stats.errors == 0 for s in table.states())


async def test_cancellation_releases_counts_and_cancels_the_attempt():
    """The client disconnects mid-request: the attempt is cancelled, in-flight counts go to 0."""
    scripts = {"runpod-sim": Script("hang")}
    d, table, model = _dispatcher(scripts)
    task = asyncio.ensure_future(d.dispatch(model, REQ))
    s = table.state("sdxl-turbo", "runpod-sim")
    await _in_flight(s)
    assert s.outstanding == 1 and s.inflight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert s.outstanding == 0 and not s.inflight and scripts["runpod-sim"].cancelled == 1
    assert s.healthy and s.stats.attempts["cancelled"] == 1


async def test_an_attempt_on_an_upstream_marked_unhealthy_is_abandoned_and_fails_over():
    scripts = {"runpod-sim": Script("hang"), "lambda-sim": Script(_ok())}
    d, table, model = _dispatcher(scripts)
    task = asyncio.ensure_future(d.dispatch(model, REQ))
    s = table.state("sdxl-turbo", "runpod-sim")
    await _in_flight(s)
    table.probe_result("runpod-sim", None, {}, unreachable=True)  # its cluster is gone
    _, meta = await asyncio.wait_for(task, 5)
    assert meta.provider == "lambda-sim" and meta.attempts == 2
    assert scripts["runpod-sim"].cancelled == 1 and s.outstanding == 0
