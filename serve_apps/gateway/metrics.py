"""The gateway's Prometheus metrics, on its own `/metrics` (beside Ray's endpoints per cluster).

Rendered at scrape time from the same merged figures the admin routes show (every process of
the gateway, `snapshots.py`), so one scrape of any process sees the whole gateway:

- `easel_gateway_requests_total{model,status}`: answers to clients;
- `easel_gateway_rejected_total{code}`: answers before a model was known (bad body, unknown
  model: no per-model series is created for a name nobody serves);
- `easel_gateway_attempts_total{model,provider,outcome}`: attempts per upstream and outcome;
- `easel_gateway_failovers_total{model,provider}`: attempts moved on from that upstream;
- `easel_gateway_attempt_latency_ms{model,provider}`: a histogram of successful attempts;
- `easel_gateway_upstream_healthy{model,provider}` and `..._outstanding`: the routing state;
- `easel_gateway_unhealthy_seconds_total{model,provider}`: time marked unhealthy;
- `easel_gateway_unhealthy_episodes_total{model,provider}`.

`docs/grafana/easel.json` charts these, Serve's `ray_serve_*` series of each provider cluster
and the load runs' figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from serve_apps.gateway.availability import LATENCY_BUCKETS_MS, UpstreamStats

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UP = ("model", "provider")


class _Figures:
    """A prometheus_client collector over one set of merged figures."""

    def __init__(
        self,
        stats: list[UpstreamStats],
        rows: list[dict[str, Any]],
        answers: Iterable[tuple[str, int, int]],
        rejected: dict[str, int],
    ) -> None:
        self.stats, self.rows, self.answers, self.rejected = stats, rows, list(answers), rejected

    def collect(self) -> Iterable[Any]:
        now = time.time()
        requests = CounterMetricFamily(
            "easel_gateway_requests", "Answers to clients, by model and HTTP status.",
            labels=["model", "status"],
        )  # fmt: skip
        for model, status, n in self.answers:
            requests.add_metric([model, str(status)], n)
        yield requests
        rejected = CounterMetricFamily(
            "easel_gateway_rejected", "Answers before a model was known, by error code.",
            labels=["code"],
        )  # fmt: skip
        for code, n in sorted(self.rejected.items()):
            rejected.add_metric([code], n)
        yield rejected
        attempts = CounterMetricFamily(
            "easel_gateway_attempts", "Attempts per upstream, by outcome.",
            labels=[*_UP, "outcome"],
        )  # fmt: skip
        failovers = CounterMetricFamily(
            "easel_gateway_failovers", "Attempts moved on from this upstream.", labels=list(_UP)
        )
        unhealthy = CounterMetricFamily(
            "easel_gateway_unhealthy_seconds", "Time marked unhealthy.", labels=list(_UP)
        )
        episodes = CounterMetricFamily(
            "easel_gateway_unhealthy_episodes", "Times marked unhealthy.", labels=list(_UP)
        )
        latency = HistogramMetricFamily(
            "easel_gateway_attempt_latency_ms", "Latency of successful attempts, ms.",
            labels=list(_UP),
        )  # fmt: skip
        for s in self.stats:
            key = [s.model, s.provider]
            for outcome, n in sorted(s.attempts.items()):
                attempts.add_metric([*key, outcome], n)
            failovers.add_metric(key, s.failovers)
            unhealthy.add_metric(key, s.unhealthy_s(s.started_s, now))
            episodes.add_metric(key, len(s.episodes))
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS_MS, float("inf")), s.buckets, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            latency.add_metric(key, buckets, s.latency_sum_ms)
        yield from (attempts, failovers, unhealthy, episodes, latency)
        healthy = GaugeMetricFamily(
            "easel_gateway_upstream_healthy", "1 when the upstream takes traffic.", labels=list(_UP)
        )
        outstanding = GaugeMetricFamily(
            "easel_gateway_upstream_outstanding", "Attempts in flight.", labels=list(_UP)
        )
        for r in self.rows:
            healthy.add_metric([r["model"], r["provider"]], 1.0 if r["healthy"] else 0.0)
            outstanding.add_metric([r["model"], r["provider"]], r["outstanding"])
        yield from (healthy, outstanding)


def render_metrics(
    stats: list[UpstreamStats],
    rows: list[dict[str, Any]],
    answers: Iterable[tuple[str, int, int]],
    rejected: dict[str, int],
) -> bytes:
    """The Prometheus text exposition of the gateway's merged figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(stats, rows, answers, rejected))  # type: ignore[arg-type]
    return generate_latest(registry)
