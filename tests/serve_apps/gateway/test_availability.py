"""Availability figures that merge exactly across gateway processes, and the report's rows."""

from __future__ import annotations

import pytest

from serve_apps.gateway.availability import (
    Episode,
    UpstreamStats,
    availability_rows,
    merge,
    since,
)


def _stats(oks: list[float], errors: int = 0, started: float = 100.0) -> UpstreamStats:
    s = UpstreamStats("m", "p", started)
    for ms in oks:
        s.record("ok", ms)
    for _ in range(errors):
        s.record("connect", None)
    s.record("cancelled", None)
    return s


def test_merge_adds_counts_pools_latencies_and_round_trips_json():
    a, b = _stats([1.0, 2.0, 300.0], errors=1), _stats([4.0] * 97, started=90.0)
    b.failovers = 3
    b.record_vendor_image(0.5, 200.0)
    m = merge([UpstreamStats.from_json(a.to_json()), UpstreamStats.from_json(b.to_json())])
    assert (m.requests, m.errors, m.failovers, m.started_s) == (101, 1, 3, 90.0)
    assert m.attempts["cancelled"] == 2 and m.attempts["ok"] == 100
    assert sum(m.buckets) == 100 and m.latency_sum_ms == pytest.approx(303.0 + 388.0)
    # The p95 of the pooled values, not an average of two p95s.
    assert m.p95_ms() == 4.0
    assert (m.vendor_images, m.vendor_first_s, m.vendor_last_s) == (1, 199.5, 200.0)
    with pytest.raises(ValueError):
        merge([a, UpstreamStats("m", "other", 0.0)])


def test_unhealthy_time_is_the_union_of_episodes_inside_the_window():
    s = UpstreamStats("m", "p", 0.0)
    s.episodes = [
        Episode(9.0, 10.0, "connect", 20.0),
        Episode(14.0, 15.0, "probe", 25.0),  # another process saw the same outage, later
        Episode(39.0, 40.0, "error"),  # still going
    ]
    assert s.unhealthy_s(0.0, 50.0) == pytest.approx(15.0 + 10.0)
    assert s.unhealthy_s(12.0, 45.0) == pytest.approx(13.0 + 5.0)


def test_rows_give_uptime_error_rate_detect_and_recover():
    s = _stats([10.0] * 8, errors=2, started=0.0)
    s.failovers = 2
    s.episodes = [Episode(9.5, 10.0, "connect", 30.0)]
    (row,) = availability_rows([s], 0.0, 100.0)
    assert row["uptime_pct"] == pytest.approx(80.0)
    assert row["error_rate"] == pytest.approx(0.2) and row["errors_by_class"] == {"connect": 2}
    assert (row["failovers"], row["episodes"]) == (2, 1)
    assert row["detect_s"] == pytest.approx(0.5) and row["recover_s"] == pytest.approx(20.0)
    (empty,) = availability_rows([UpstreamStats("m", "q", 0.0)], 0.0, 10.0)
    assert empty["error_rate"] is None and empty["uptime_pct"] == 100.0


def test_since_gives_the_window_between_two_snapshots():
    before = _stats([10.0] * 5, errors=1)
    after = UpstreamStats.from_json(before.to_json())
    for _ in range(3):
        after.record("ok", 20.0)
    after.record("timeout", None)
    after.failovers = 2
    w = since(after, before)
    assert (w.attempts["ok"], w.attempts["timeout"], w.errors, w.failovers) == (3, 1, 1, 2)
    assert sum(w.buckets) == 3 and w.latency_sum_ms == pytest.approx(60.0)
    assert since(after, None) is after
