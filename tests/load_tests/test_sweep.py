"""The saturation sweep: its verdicts, and one short real sweep against a capped endpoint."""

from __future__ import annotations

import json

import pytest

from load_tests.echo_server import EchoServer
from load_tests.stats import LoadSummary
from load_tests.sweep import judge_step, run_sweep


def _summary(p95, slo, *, n=100, errors=None, warning=None):
    model = {"latency_at_slo_percentile_ms": p95, "slo_ms": slo}
    overall = {"n": n, "errors": errors or {}}
    return LoadSummary([], {"m": model}, overall, {"warning": warning})


def test_judge_step(cfg):
    assert judge_step(_summary(90, 100), cfg) == (True, False, [])
    passed, limited, reasons = judge_step(_summary(150, 100), cfg)
    assert not passed and not limited and "p95 150 ms > SLO 100 ms" in reasons[0]
    budget = cfg.slo.error_budget
    errors = {"http_503": int(100 * budget) + 1, "client_overload": 50}
    passed, _, reasons = judge_step(_summary(90, 100, errors=errors), cfg)
    assert not passed and "error rate" in reasons[0]
    # The client's own overload is the generator's problem, not the server's error budget.
    passed, limited, _ = judge_step(_summary(90, 100, errors={"client_overload": 50}), cfg)
    assert passed and not limited
    passed, limited, reasons = judge_step(_summary(90, 100, warning="lagging"), cfg)
    assert not passed and limited and reasons == ["lagging"]
    assert judge_step(_summary(None, 100, n=0), cfg)[0] is False


@pytest.mark.usefixtures("ray_pkg")
def test_sweep_finds_the_rate_a_capped_server_sustains(make_cfg, tmp_path):
    # Two requests at a time, 50 ms each: capacity 40 req/s. At 62.5 req/s the queue grows
    # past the 400 ms SLO within the step; at 25 req/s it stays well inside.
    cfg = make_cfg(traffic={"model_mix": {"sdxl-turbo": 1}}, slo_ms=400)
    with EchoServer(service_ms=50, concurrency=2) as srv:
        res = run_sweep(
            srv.url,
            tmp_path,
            cfg,
            start_rate=10,
            factor=2.5,
            step_s=2.0,
            max_steps=4,
            progress=False,
        )
    rates = [s.rate for s in res.steps]
    assert rates == pytest.approx([10, 25, 62.5])
    assert [s.passed for s in res.steps] == [True, True, False]
    assert res.best_rate == pytest.approx(25)
    assert "broke the SLO" in res.stopped_because
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["best_rate"] == pytest.approx(25) and len(saved["steps"]) == 3
    assert (tmp_path / "step-02-62.5rps" / "requests.parquet").is_file()
