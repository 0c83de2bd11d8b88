"""The dispatcher on its own (no Ray): schedule order, and the in-flight bound recorded."""

from __future__ import annotations

import time

from load_tests.client import endpoint_url
from load_tests.dispatcher import Dispatcher
from load_tests.echo_server import EchoServer


def _rows(n, rate, model="sdxl-turbo"):
    return [
        {
            "job_id": f"job-{i}",
            "row": i,
            "model": model,
            "niche": "corporate-headshots",
            "prompt": "p",
            "width": None,
            "height": None,
            "steps": None,
            "seed": None,
            "tenant": None,
            "reference_image": None,
            "arrival_s": i / rate,
        }
        for i in range(n)
    ]


async def _run(url, rows, limit):
    d = Dispatcher(0, endpoint_url(url, "easel"), "easel", limit, 10.0, None)
    await d.start(time.time() + 0.1)
    await d.schedule(rows[: len(rows) // 2])
    await d.schedule(rows[len(rows) // 2 :])
    await d.finish()
    return (await d.drain())["records"]


async def test_sends_follow_the_schedule_and_every_row_has_a_record():
    rows = _rows(40, 40.0)
    with EchoServer(service_ms=100) as srv:
        recs = await _run(srv.url, rows, limit=100)
    assert sorted(r["row"] for r in recs) == list(range(40))
    assert all(r["ok"] for r in recs)
    lags = [r["sent_s"] - r["scheduled_s"] for r in recs]
    assert min(lags) >= 0  # never early
    # Service (100 ms) is 4 arrivals long: a closed-loop client would fall ~3 gaps behind per
    # request; open loop, sends stay on time.
    assert sorted(lags)[len(lags) // 2] < 0.01


async def test_the_in_flight_bound_is_recorded_per_request():
    rows = _rows(20, 20.0)
    with EchoServer(service_ms=300) as srv:
        recs = await _run(srv.url, rows, limit=2)
    assert sorted(r["row"] for r in recs) == list(range(20))
    over = [r for r in recs if r["error_class"] == "client_overload"]
    sent = [r for r in recs if r["sent_s"] is not None]
    assert over and len(over) + len(sent) == 20
    for r in over:
        assert not r["ok"] and r["sent_s"] is None and "bound (2)" in r["error"]
    # Never more than 2 in flight: at every send, at most one other request is still open.
    for r in sent:
        overlapping = [o for o in sent if o["sent_s"] < r["sent_s"] < o["done_s"]]
        assert len(overlapping) <= 1
