"""The routing table: policies, health (passive and probed), trials, drains, live documents.

Plain Python, no server: a config with one self-hosted model on three providers and one closed
model, a fake clock.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from config import load_config, parse_config
from serve_apps.gateway.document import RoutingDocument, updated
from serve_apps.gateway.policies import POLICIES, make_policy
from serve_apps.gateway.routing import RoutingTable, route_cost


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cfg(policy: str = "least_outstanding", **routing):
    data = load_config().model_dump(mode="json")
    turbo = next(m for m in data["models"] if m["name"] == "sdxl-turbo")
    turbo["providers"] = ["lambda-sim", "runpod-sim", "azure-sim"]
    api = next(m for m in data["models"] if m["name"] == "proprietary-a")
    api["providers"] = ["azure-sim", "lambda-sim"]
    data["models"] = [turbo, api]
    data["traffic"]["model_mix"] = {}
    data["routing"] = {
        "policy": policy,
        "unhealthy_after_errors": 2,
        "recheck_after_s": 5.0,
        **routing,
    }
    return parse_config(data, "<routing test>")


def _table(policy: str = "least_outstanding", **routing) -> tuple[RoutingTable, _Clock]:
    clock = _Clock()
    return RoutingTable(_cfg(policy, **routing), clock=clock, wall=clock), clock


def _send(t: RoutingTable, model: str = "sdxl-turbo", outcome: str = "ok", exclude=()) -> str:
    """Choose, begin and end one attempt; returns the provider it went to."""
    s = t.choose(model, exclude).upstream
    assert s is not None
    t.begin(s)
    t.end(s, outcome, 10.0 if outcome == "ok" else None)
    return s.provider


def _row(t: RoutingTable, provider: str, model: str = "sdxl-turbo") -> dict:
    return next(r for r in t.view_rows() if (r["model"], r["provider"]) == (model, provider))


# --- policies ---------------------------------------------------------------------------------


def test_least_outstanding_spreads_in_flight_requests():
    t, _ = _table()
    held = []
    for _ in range(6):
        s = t.choose("sdxl-turbo").upstream
        t.begin(s)
        held.append(s)
    assert collections.Counter(s.provider for s in held) == {
        "lambda-sim": 2, "runpod-sim": 2, "azure-sim": 2,
    }  # fmt: skip
    for s in held:
        t.end(s, "ok", 5.0)
    assert all(s.outstanding == 0 for s in t.states())


def test_least_outstanding_is_normalised_by_capacity():
    t, _ = _table()
    # A probe says lambda has 4 replicas (32 slots), runpod 1 (8 slots).
    t.probe_result("lambda-sim", {"sdxl-turbo": True}, {"sdxl-turbo": 32.0})
    t.probe_result("runpod-sim", {"sdxl-turbo": True}, {"sdxl-turbo": 8.0})
    t.apply(updated(t.document, {m: t.providers(m) for m in t.models}, policies=list(POLICIES),
                    drain=["azure-sim"], model="sdxl-turbo"))  # fmt: skip
    held = []
    for _ in range(20):
        s = t.choose("sdxl-turbo").upstream
        t.begin(s)
        held.append(s.provider)
    counts = collections.Counter(held)
    assert counts["lambda-sim"] == 16 and counts["runpod-sim"] == 4  # 4:1, like the capacity


def test_cheapest_healthy_prefers_price_then_skips_unhealthy():
    t, _ = _table("cheapest_healthy")
    cfg = _cfg()
    cheapest = min(
        cfg.model("sdxl-turbo").providers, key=lambda p: route_cost(cfg, cfg.model("sdxl-turbo"), p)
    )
    assert cheapest == "runpod-sim"
    assert _send(t) == "runpod-sim"
    _send(t, outcome="error", exclude=["lambda-sim", "azure-sim"])
    _send(t, outcome="error", exclude=["lambda-sim", "azure-sim"])  # 2 in a row: unhealthy
    assert not _row(t, "runpod-sim")["healthy"]
    assert _send(t) == "lambda-sim"  # the next cheapest


def test_weighted_follows_weights_and_zero_means_none():
    t, _ = _table("weighted")
    known = {m: t.providers(m) for m in t.models}
    t.apply(updated(t.document, known, policies=list(POLICIES), model="sdxl-turbo",
                    weights={"lambda-sim": 3.0, "runpod-sim": 1.0, "azure-sim": 0.0}))  # fmt: skip
    picks = collections.Counter(_send(t) for _ in range(4000))
    assert picks["azure-sim"] == 0
    assert 2.6 < picks["lambda-sim"] / picks["runpod-sim"] < 3.4


def test_every_policy_is_registered_by_name():
    assert set(POLICIES) == {"weighted", "least_outstanding", "cheapest_healthy"}
    assert make_policy("weighted").name == "weighted"
    with pytest.raises(ValueError, match="allowed"):
        make_policy("round_robin")


# --- failover order, health, trials -----------------------------------------------------------


def test_choose_never_offers_an_upstream_already_tried():
    t, _ = _table("cheapest_healthy")
    order = []
    for _ in range(3):
        s = t.choose("sdxl-turbo", order).upstream
        order.append(s.provider)
    assert order == ["runpod-sim", "lambda-sim", "azure-sim"]
    choice = t.choose("sdxl-turbo", order)
    assert choice.upstream is None and choice.why == "none"


def test_a_refused_connection_marks_unhealthy_at_once_errors_after_the_threshold():
    t, _ = _table()
    only = ["runpod-sim", "azure-sim"]
    _send(t, outcome="connect", exclude=only)
    assert not _row(t, "lambda-sim")["healthy"] and _row(t, "lambda-sim")["reason"] == "connect"
    _send(t, outcome="error", exclude=["lambda-sim", "azure-sim"])
    assert _row(t, "runpod-sim")["healthy"]  # one error: not yet
    _send(t, outcome="timeout", exclude=["lambda-sim", "azure-sim"])
    assert not _row(t, "runpod-sim")["healthy"]


def test_client_errors_shed_and_cancelled_never_count_against_a_provider():
    t, _ = _table(unhealthy_after_errors=1)
    for outcome in ("client_error", "shed", "cancelled", "internal"):
        _send(t, outcome=outcome, exclude=["runpod-sim", "azure-sim"])
    row = _row(t, "lambda-sim")
    assert row["healthy"] and row["errors"] == 0 and row["shed"] == 1
    assert row["requests"] == 3  # cancelled attempts reached no verdict


def test_with_none_healthy_a_sick_upstream_still_gets_requests():
    t, _ = _table()
    for _ in range(2):
        _send(t, "proprietary-a", "error", exclude=["lambda-sim"])
    for _ in range(2):
        _send(t, "proprietary-a", "timeout", exclude=["azure-sim"])
    assert not any(s.healthy for s in t.states("proprietary-a"))
    # A slow answer beats a failed request: both are still offered, without waiting.
    assert t.choose("proprietary-a").upstream is not None
    tried = [t.choose("proprietary-a").upstream.provider]
    assert t.choose("proprietary-a", tried).upstream is not None


def test_a_down_vendor_gets_one_trial_after_recheck_and_a_failed_trial_waits_again():
    t, clock = _table()
    for p in ("azure-sim", "lambda-sim"):
        _send(
            t,
            "proprietary-a",
            "connect",
            exclude=[q for q in ("azure-sim", "lambda-sim") if q != p],
        )
    choice = t.choose("proprietary-a")
    assert choice.upstream is None and choice.why == "unhealthy"
    assert choice.retry_after == pytest.approx(5.0)
    clock.now += 5.0
    trial = t.choose("proprietary-a").upstream
    assert trial is not None and trial.trial
    assert t.choose("proprietary-a", [trial.provider]).upstream is not None  # the other is due too
    t.begin(trial)
    t.end(trial, "error")
    assert not trial.healthy and not trial.trial
    assert (
        t.choose(
            "proprietary-a", [q for q in ("azure-sim", "lambda-sim") if q != trial.provider]
        ).upstream
        is None
    )
    clock.now += 5.0
    trial = t.choose("proprietary-a").upstream
    t.begin(trial)
    t.end(trial, "ok", 300.0)
    assert trial.healthy


def test_a_cancelled_trial_clears_its_flag():
    t, clock = _table()
    s = t.state("proprietary-a", "azure-sim")
    t.mark_unhealthy(t.state("proprietary-a", "lambda-sim"), "connect")
    t.mark_unhealthy(s, "connect")
    clock.now += 5.0
    trial = t.choose("proprietary-a").upstream
    t.begin(trial)
    t.end(trial, "cancelled")  # the client went away mid-trial
    assert not trial.trial and trial.outstanding == 0
    assert t.choose("proprietary-a").upstream is not None  # another trial may go


def test_probes_mark_and_restore_a_provider():
    t, clock = _table()
    t.probe_result("lambda-sim", None, {}, unreachable=True)
    assert not _row(t, "lambda-sim")["healthy"] and _row(t, "lambda-sim")["reason"] == "unreachable"
    assert _row(t, "lambda-sim", "proprietary-a")["healthy"]  # a vendor is not the provider's
    t.probe_result("lambda-sim", {"sdxl-turbo": True}, {"sdxl-turbo": 8.0})
    assert _row(t, "lambda-sim")["healthy"]  # reachable again: at once
    # A slow probe is not an outage: only three in a row make a provider sick.
    for _ in range(2):
        t.probe_result("lambda-sim", None, {})
    assert _row(t, "lambda-sim")["healthy"]
    t.probe_result("lambda-sim", None, {})
    assert _row(t, "lambda-sim")["reason"] == "probe"
    t.probe_result("lambda-sim", {"sdxl-turbo": True}, {})
    assert _row(t, "lambda-sim")["healthy"]
    t.probe_result("runpod-sim", {"sdxl-turbo": False}, {})
    assert _row(t, "runpod-sim")["reason"] == "no_replica"
    # Marked for errors, a good probe restores only once recheck_after_s has passed.
    for _ in range(2):
        _send(t, outcome="error", exclude=["runpod-sim", "lambda-sim"])
    t.probe_result("azure-sim", {"sdxl-turbo": True}, {})
    assert not _row(t, "azure-sim")["healthy"]
    clock.now += 5.0
    t.probe_result("azure-sim", {"sdxl-turbo": True}, {})
    assert _row(t, "azure-sim")["healthy"]


def test_episodes_record_detection_and_recovery_times():
    t, clock = _table()
    _send(t, outcome="error", exclude=["runpod-sim", "azure-sim"])
    clock.now += 0.4
    _send(t, outcome="error", exclude=["runpod-sim", "azure-sim"])  # marked now
    clock.now += 5.0
    _send(t, outcome="ok", exclude=["runpod-sim", "azure-sim"])  # sick, but the only one
    (ep,) = t.state("sdxl-turbo", "lambda-sim").stats.episodes
    assert ep.marked_s - ep.first_failure_s == pytest.approx(0.4)
    assert ep.recovered_s - ep.marked_s == pytest.approx(5.0)
    assert ep.reason == "error"


async def test_marking_unhealthy_abandons_attempts_in_flight_when_another_can_serve():
    t, _ = _table()
    s = t.state("sdxl-turbo", "lambda-sim")
    slow = asyncio.ensure_future(asyncio.sleep(60))
    s.inflight.add(slow)
    t.mark_unhealthy(s, "error")  # sick: its attempts may still answer
    await asyncio.sleep(0)
    assert not slow.cancelled()
    t.mark_unhealthy(s, "no_replica")  # its replicas are gone: they wait for a new one
    await asyncio.sleep(0)
    assert slow.cancelled()
    # Probes unanswered three times in a row: the ingress is parked in Serve's queue, and so are
    # the attempts.
    mute = t.state("sdxl-turbo", "runpod-sim")
    parked = asyncio.ensure_future(asyncio.sleep(60))
    mute.inflight.add(parked)
    for _ in range(2):
        t.probe_result("runpod-sim", None, {})
    await asyncio.sleep(0)
    assert not parked.cancelled()
    t.probe_result("runpod-sim", None, {})
    await asyncio.sleep(0)
    assert parked.cancelled() and mute.reason == "probe"
    # The last healthy one left keeps its attempts: better slow than failed.
    alone, _ = _table()
    for p in ("runpod-sim", "azure-sim"):
        alone.mark_unhealthy(alone.state("sdxl-turbo", p), "unreachable")
    last = alone.state("sdxl-turbo", "lambda-sim")
    keep = asyncio.ensure_future(asyncio.sleep(60))
    last.inflight.add(keep)
    alone.mark_unhealthy(last, "unreachable")
    await asyncio.sleep(0)
    assert not keep.cancelled()
    keep.cancel()


def test_vendor_upstreams_shed_at_their_limit():
    t, _ = _table()
    s = t.state("proprietary-a", "azure-sim")
    other = t.state("proprietary-a", "lambda-sim")
    assert s.limit == 32 + 64
    s.outstanding = other.outstanding = s.limit
    choice = t.choose("proprietary-a")
    assert choice.upstream is None and choice.why == "full"


# --- live documents ---------------------------------------------------------------------------


def test_a_document_applies_weights_drains_and_policy_at_once():
    t, _ = _table()
    known = {m: t.providers(m) for m in t.models}
    doc = updated(
        t.document, known, policies=list(POLICIES), drain=["lambda-sim"], model="sdxl-turbo"
    )
    doc = updated(
        doc, known, policies=list(POLICIES), policy="weighted", weights={"runpod-sim": 0.0}
    )
    assert doc.version == 2
    t.apply(doc)
    assert t.policy.name == "weighted"
    assert (
        _row(t, "lambda-sim")["drained"] and not _row(t, "lambda-sim", "proprietary-a")["drained"]
    )
    assert {_send(t) for _ in range(10)} == {"azure-sim"}
    t.apply(RoutingDocument(version=3, policy="least_outstanding"))  # back to the config's
    assert not _row(t, "lambda-sim")["drained"] and _row(t, "runpod-sim")["weight"] == 1.0


def test_view_rows_count_and_p95():
    t, _ = _table()
    for i in range(1, 101):
        s = t.choose("sdxl-turbo", ["runpod-sim", "azure-sim"]).upstream
        t.begin(s)
        t.end(s, "ok", float(i))
    row = _row(t, "lambda-sim")
    assert (row["requests"], row["errors"], row["outstanding"], row["p95_ms"]) == (100, 0, 0, 95.0)
    assert _row(t, "runpod-sim")["p95_ms"] is None
    for key in ("model", "provider", "weight", "drained", "healthy", "outstanding", "p95_ms",
                "requests", "errors", "shed"):  # fmt: skip
        assert key in row  # the admin view's contract


def test_route_costs_cover_every_model_provider_of_the_default_config():
    cfg = load_config()
    t = RoutingTable(cfg)
    assert {(s.model, s.provider) for s in t.states()} == {
        (m.name, p) for m in cfg.models for p in m.providers
    }
    flux = cfg.model("flux2-dev")
    assert route_cost(cfg, flux, "azure-sim") > route_cost(cfg, flux, "lambda-sim")
    assert route_cost(cfg, cfg.model("proprietary-a"), "azure-sim") == pytest.approx(0.04)
    assert {s.kind for s in t.states("proprietary-b")} == {"vendor"}
