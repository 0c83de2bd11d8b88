"""The saturation sweep: its verdicts, and one short real sweep against a capped endpoint."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from load_tests.echo_server import EchoServer
from load_tests.records import REQUEST_SCHEMA, new_record
from load_tests.stats import summarize
from load_tests.sweep import judge_step, min_requests, run_sweep


def _step(cfg, n, latency_ms, *, fail_every=0, lag_ms=0.5, overload=0, spacing_s=0.01):
    """The summary of n requests to sdxl-turbo at `latency_ms` (a number or f(i))."""
    recs = []
    for i in range(n):
        lat = latency_ms(i) if callable(latency_ms) else latency_ms
        row = {"job_id": f"j{i}", "model": "sdxl-turbo", "niche": "n"}
        sched = i * spacing_s
        if fail_every and i % fail_every == 0:
            recs.append(new_record(row, status=503, error_class="http_503", scheduled_s=sched))
            continue
        recs.append(
            new_record(
                row,
                ok=True,
                error_class="ok",
                scheduled_s=sched,
                sent_s=sched + lag_ms / 1000,
                done_s=sched + lat / 1000,
                latency_ms=float(lat),
                service_ms=float(lat),
            )
        )
    recs += [
        new_record(
            {"job_id": f"o{i}", "model": "sdxl-turbo", "niche": "n"},
            error_class="client_overload",
            scheduled_s=n * spacing_s,
        )
        for i in range(overload)
    ]
    return summarize(pa.Table.from_pylist(recs, schema=REQUEST_SCHEMA), cfg)


@pytest.fixture(scope="module")
def turbo_cfg(make_cfg):
    return make_cfg(traffic={"model_mix": {"sdxl-turbo": 1}}, slo_ms=1000)


def test_twenty_requests_never_decide_a_step(turbo_cfg):
    # p95 of 20 requests at 100 ms against a 1 s SLO looked like a pass; with 20 requests
    # nothing bounds the p95 from above, so the verdict is inconclusive.
    v = judge_step(_step(turbo_cfg, 20, 100), turbo_cfg)
    assert v.verdict == "inconclusive" and not v.passed
    assert any("N=20 below" in r for r in v.reasons)
    assert min_requests(turbo_cfg) == max(turbo_cfg.slo.min_requests, 59)


def test_a_clear_pass_and_a_clear_fail(turbo_cfg):
    n = min_requests(turbo_cfg)
    assert judge_step(_step(turbo_cfg, n, 100), turbo_cfg).verdict == "pass"
    v = judge_step(_step(turbo_cfg, n, 1500), turbo_cfg)
    assert v.verdict == "fail" and "lower bound" in v.reasons[0]
    # Even a few requests can fail a step when the lower bound already breaks the SLO.
    assert judge_step(_step(turbo_cfg, 20, 3000), turbo_cfg).verdict == "fail"


def test_the_slo_inside_the_interval_is_inconclusive(turbo_cfg):
    # 5 % of requests at 1.2 s: the point p95 sits near the SLO and its interval straddles it.
    n = min_requests(turbo_cfg)
    v = judge_step(_step(turbo_cfg, n, lambda i: 1200 if i % 20 == 0 else 300), turbo_cfg)
    assert v.verdict == "inconclusive" and "upper bound" in v.reasons[0]


def test_failures_count_beyond_the_deadline_in_the_verdict(turbo_cfg):
    # Every third request fails fast; the successes are quick. Success-only p95 passes easily,
    # but the p95 of all requests falls among the failures: a fail, not a pass.
    s = _step(turbo_cfg, 300, 100, fail_every=3)
    assert s.by_model["sdxl-turbo"]["latency_p95_ms"] < 200
    v = judge_step(s, turbo_cfg)
    assert v.verdict == "fail"
    assert "beyond the deadline" in " ".join(v.reasons) and "error rate" in " ".join(v.reasons)


def test_judge_step_tells_the_generator_from_the_server(turbo_cfg):
    n = min_requests(turbo_cfg)
    # Sends late but within the SLO anyway: latency counts from the schedule, the pass stands.
    assert judge_step(_step(turbo_cfg, n, 100, lag_ms=40), turbo_cfg).verdict == "pass"
    # Failed while the generator lagged by a material part of the SLO: may be the generator's.
    v = judge_step(_step(turbo_cfg, n, 1500, lag_ms=400), turbo_cfg)
    assert v.verdict == "fail" and v.generator_limited
    # A lag far below the SLO cannot be what broke it: the server's verdict stands.
    v = judge_step(_step(turbo_cfg, n, 1500, lag_ms=40), turbo_cfg)
    assert v.verdict == "fail" and not v.generator_limited
    # The offered load was not delivered: never a pass.
    v = judge_step(_step(turbo_cfg, n, 100, overload=5), turbo_cfg)
    assert v.generator_limited and not v.passed


@pytest.mark.usefixtures("ray_pkg")
def test_sweep_finds_the_rate_a_capped_server_sustains(make_cfg, tmp_path):
    # Two requests at a time, 50 ms each: capacity 40 req/s. At 80 req/s the queue grows by
    # 40/s, past the 1 s SLO within the 2.5 s step; at 20 req/s p95 stays near 100 ms. The
    # first step is sized up to the 60 requests a verdict needs (3 s at 20 req/s).
    slo = {"error_budget": 0.05, "percentile": 95, "min_requests": 60}
    cfg = make_cfg(traffic={"model_mix": {"sdxl-turbo": 1}}, slo_ms=1000, slo=slo)
    with EchoServer(service_ms=50, concurrency=2) as srv:
        res = run_sweep(
            srv.url,
            tmp_path,
            cfg,
            start_rate=20,
            factor=4,
            step_s=2.5,
            max_steps=3,
            progress=False,
            dispatchers=1,
        )
    assert [s.rate for s in res.steps] == pytest.approx([20, 80])
    assert [s.verdict for s in res.steps] == ["pass", "fail"]
    assert [s.jobs for s in res.steps] == [60, 200]
    assert res.best_rate == pytest.approx(20)
    assert "broke the SLO" in res.stopped_because
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["best_rate"] == pytest.approx(20) and len(saved["steps"]) == 2
    assert (tmp_path / "step-01-80rps" / "requests.parquet").is_file()
