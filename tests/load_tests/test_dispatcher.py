"""The dispatcher on its own (no Ray): schedule order, the open-request bound, its records."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from load_tests.client import endpoint_url
from load_tests.dispatcher import Dispatcher
from load_tests.echo_server import EchoServer
from load_tests.generators import build_table
from load_tests.manifest import validated_table
from load_tests.validation import ManifestRules


def _blocks(cfg, n, rate, per_block=16, bad=()):
    table = build_table(cfg, np.arange(n) / rate, np.random.default_rng(0))
    if bad:
        rows = table.to_pylist()
        for i in bad:
            rows[i]["model"] = "dall-e-9"
        table = type(table).from_pylist(rows, schema=table.schema)
    rules = ManifestRules.from_config(cfg)
    out = []
    for i in range(0, n, per_block):
        part = table.slice(i, per_block)
        numbers = np.arange(i, i + part.num_rows)
        out.append(validated_table(part, rules, numbers, np.zeros(part.num_rows, bool)))
    return out


async def _run(url, blocks, tmp_path, **kw):
    # priority="ray": leave this (the test) process's scheduling alone.
    kw.setdefault("priority", "ray")
    d = Dispatcher(0, endpoint_url(url, "easel"), "easel", 10.0, None, str(tmp_path / "r"), **kw)
    await d.schedule(blocks)
    await d.start(time.time() + 0.1)
    stats = await d.finish()
    return pq.read_table(tmp_path / "r").to_pylist(), stats


async def test_sends_follow_the_schedule_and_every_row_has_a_record(cfg, tmp_path):
    with EchoServer(service_ms=100) as srv:
        recs, stats = await _run(srv.url, _blocks(cfg, 40, 40.0, bad=(7,)), tmp_path)
    assert sorted(r["row"] for r in recs) == list(range(40))
    assert stats["records"] == 40 and stats["sent"] == 39
    [rej] = [r for r in recs if r["error_class"] == "rejected"]
    assert rej["row"] == 7 and "unknown model 'dall-e-9'" in rej["error"]
    assert rej["reject_codes"] == ["unknown_model"] and rej["attempt"] == 0
    sent = [r for r in recs if r["sent_s"] is not None]
    assert all(r["ok"] for r in sent)
    lags = [r["sent_s"] - r["scheduled_s"] for r in sent]
    assert min(lags) >= 0  # never early
    # Service (100 ms) is 4 arrivals long: a closed-loop client would fall ~3 gaps behind per
    # request; open loop, sends stay on time.
    assert sorted(lags)[len(lags) // 2] < 0.01


async def test_the_open_request_bound_is_recorded_per_request(cfg, tmp_path):
    with EchoServer(service_ms=300) as srv:
        recs, stats = await _run(srv.url, _blocks(cfg, 20, 20.0), tmp_path, max_in_flight=2)
    assert stats["bound"] == 2 and stats["bound_by"] == "--max-in-flight"
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


async def test_rows_are_taken_no_further_ahead_than_the_horizon(cfg, tmp_path):
    # 3 s of rows at 40/s in blocks of 8: with a 0.5 s horizon the dispatcher never holds more
    # than the horizon's rows plus a block, however long the manifest.
    rate, horizon = 40.0, 0.5
    blocks = _blocks(cfg, 120, rate, per_block=8)
    with EchoServer() as srv:
        _recs, stats = await _run(srv.url, blocks, tmp_path, horizon_s=horizon)
    assert stats["records"] == 120
    assert stats["max_queued"] <= horizon * rate + 2 * 8 < 120


def test_a_bad_priority_is_refused(tmp_path):
    from load_tests.process import protect_process

    with pytest.raises(ValueError, match="priority must be one of"):
        protect_process("urgent")
