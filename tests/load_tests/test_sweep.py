"""The saturation sweep: its verdicts, and one short real sweep against a capped endpoint."""

from __future__ import annotations

import json

import pytest

from load_tests.echo_server import EchoServer
from load_tests.stats import LoadSummary
from load_tests.sweep import judge_step, run_sweep


def _summary(p95, slo, *, n=100, errors=None, lag_p99=1.0, achieved=10.0, overload=0):
    model = {"latency_at_slo_percentile_ms": p95, "slo_ms": slo}
    overall = {"n": n, "errors": errors or {}}
    gen = {
        "send_lag_p99_ms": lag_p99,
        "offered_rps": 10.0,
        "achieved_rps": achieved,
        "client_overload": overload,
        "warning": "the generator, not the server, set the pace" if lag_p99 > 10 else None,
    }
    return LoadSummary([], {"m": model}, overall, gen)


def test_judge_step(cfg):
    assert judge_step(_summary(90, 100), cfg) == (True, False, [])
    passed, limited, reasons = judge_step(_summary(150, 100), cfg)
    assert not passed and not limited and "p95 150 ms > SLO 100 ms" in reasons[0]
    budget = cfg.slo.error_budget
    passed, _, reasons = judge_step(
        _summary(90, 100, errors={"http_503": int(100 * budget) + 1}), cfg
    )
    assert not passed and "error rate" in reasons[0]
    assert judge_step(_summary(None, 100, n=0), cfg)[0] is False


def test_judge_step_tells_the_generator_from_the_server(cfg):
    # Sends late but within the SLO anyway: latency counts from the schedule, the pass stands.
    assert judge_step(_summary(90, 100, lag_p99=40), cfg)[:2] == (True, False)
    # Failed while the generator lagged by a material part of the SLO: inconclusive.
    passed, limited, _ = judge_step(_summary(150, 100, lag_p99=40), cfg)
    assert not passed and limited
    # A lag far below the SLO cannot be what broke it: the server's verdict stands.
    passed, limited, _ = judge_step(_summary(1500, 1000, lag_p99=40), cfg)
    assert not passed and not limited
    # The offered load was not delivered: never a pass.
    assert judge_step(_summary(90, 100, achieved=8.0), cfg)[:2] == (False, True)
    passed, limited, _ = judge_step(
        _summary(90, 100, errors={"client_overload": 5}, overload=5), cfg
    )
    assert (passed, limited) == (False, True)


@pytest.mark.usefixtures("ray_pkg")
def test_sweep_finds_the_rate_a_capped_server_sustains(make_cfg, tmp_path):
    # Two requests at a time, 50 ms each: capacity 40 req/s. At 80 req/s the queue grows by
    # 40/s, past the 1 s SLO within the 2.5 s step; at 20 req/s p95 stays near 100 ms.
    cfg = make_cfg(traffic={"model_mix": {"sdxl-turbo": 1}}, slo_ms=1000)
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
    assert [s.passed for s in res.steps] == [True, False]
    assert res.best_rate == pytest.approx(20)
    assert "broke the SLO" in res.stopped_because
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["best_rate"] == pytest.approx(20) and len(saved["steps"]) == 2
    assert (tmp_path / "step-01-80rps" / "requests.parquet").is_file()
