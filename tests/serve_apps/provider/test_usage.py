"""The usage ledger's bookkeeping (the Ray actor around it runs in tests/serve_apps/local)."""

from __future__ import annotations

import pickle

import pytest

from serve_apps.provider.usage import HEARTBEAT_S, UsageLedger, ledger_name, replica_gpus


def test_register_report_heartbeat_goodbye():
    now = [100.0]
    ledger = UsageLedger(clock=lambda: now[0])
    ledger.register("r1", "m", "p", 1.0, 90.0, 4.5)
    ledger.report_batch("r1", 0.25, 4)
    ledger.report_batch("r1", 0.5, 2)
    ledger.report_batch("unknown", 1.0, 1)  # a replica the ledger never saw is ignored
    now[0] = 101.0
    ledger.heartbeat("r1")
    (row,) = ledger.rows()
    assert row == {
        "replica": "r1",
        "model": "m",
        "provider": "p",
        "gpus": 1.0,
        "started_s": 90.0,
        "load_s": 4.5,
        "last_seen_s": 101.0,
        "busy_s": 0.75,
        "batches": 2,
        "images": 6,
        "alive": True,
    }
    now[0] = 101.0 + HEARTBEAT_S * 4  # missed heartbeats: presumed dead, last_seen frozen
    assert ledger.rows()[0]["alive"] is False
    assert ledger.rows()[0]["last_seen_s"] == 101.0
    ledger.goodbye("r1")
    ledger.heartbeat("r1")
    assert ledger.rows()[0]["alive"] is False
    assert pickle.loads(pickle.dumps(ledger.rows())) == ledger.rows()


@pytest.mark.parametrize(
    ("num_gpus", "simulated", "per_replica", "expected"),
    [
        (1.0, False, 1, 1.0),
        (0.0, True, 1, 1.0),  # a CPU stand-in on a simulated GPU provider
        (0.0, True, 2, 2.0),
        (0.0, False, 1, 0.0),
    ],
)
def test_replica_gpus(num_gpus, simulated, per_replica, expected):
    got = replica_gpus(num_gpus, simulated_provider=simulated, gpus_per_replica=per_replica)
    assert got == expected


def test_one_ledger_per_provider():
    assert ledger_name("lambda-sim") != ledger_name("runpod-sim")
