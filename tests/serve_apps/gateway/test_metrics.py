"""The Prometheus exposition of the gateway's merged figures."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serve_apps.gateway.availability import Episode, UpstreamStats
from serve_apps.gateway.metrics import render_metrics


def test_every_series_is_there_and_parses():
    s = UpstreamStats("sdxl-turbo", "lambda-sim", 0.0)
    for ms in (3.0, 40.0, 40.0):
        s.record("ok", ms)
    s.record("connect", None)
    s.failovers = 1
    s.episodes = [Episode(1.0, 2.0, "connect", 5.0)]
    rows = [{"model": "sdxl-turbo", "provider": "lambda-sim", "healthy": True, "outstanding": 2}]
    text = render_metrics([s], rows, [("sdxl-turbo", 200, 3), ("sdxl-turbo", 503, 1)],
                          {"model_not_found": 4}).decode()  # fmt: skip
    samples = {
        (x.name, frozenset(x.labels.items())): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    up = {"model": "sdxl-turbo", "provider": "lambda-sim"}
    assert value("easel_gateway_requests_total", model="sdxl-turbo", status="503") == 1
    assert value("easel_gateway_rejected_total", code="model_not_found") == 4
    assert value("easel_gateway_attempts_total", outcome="connect", **up) == 1
    assert value("easel_gateway_failovers_total", **up) == 1
    assert value("easel_gateway_unhealthy_seconds_total", **up) == 3.0
    assert value("easel_gateway_upstream_healthy", **up) == 1.0
    assert value("easel_gateway_upstream_outstanding", **up) == 2
    assert value("easel_gateway_attempt_latency_ms_bucket", le="5", **up) == 1
    assert value("easel_gateway_attempt_latency_ms_bucket", le="+Inf", **up) == 3
    assert value("easel_gateway_attempt_latency_ms_count", **up) == 3
    # No series for a model nobody serves: a rejected request only counts by error code.
    assert "nope" not in text


def test_the_grafana_dashboard_charts_only_series_that_exist():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    dash = json.loads((root / "docs" / "grafana" / "easel.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in re.findall(r"\b((?:easel_gateway|ray_easel)_[a-z_]+)", e)}
    s = UpstreamStats("m", "p", 0.0)
    s.record("ok", 1.0)
    rows = [{"model": "m", "provider": "p", "healthy": True, "outstanding": 0}]
    text = render_metrics([s], rows, [("m", 200, 1)], {"x": 1}).decode()
    gateway = {x.name for fam in text_string_to_metric_families(text) for x in fam.samples}
    replica_src = (root / "serve_apps" / "provider" / "metrics.py").read_text()
    replica = {f"ray_{n}" for n in re.findall(r'"(easel_[a-z_]+)"', replica_src)}
    replica |= {f"{n}_{k}" for n in replica for k in ("bucket", "sum", "count")}
    assert used and used <= gateway | replica, sorted(used - gateway - replica)
