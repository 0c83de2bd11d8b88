"""The live progress line."""

from __future__ import annotations

import io

import pytest

from load_tests.progress import ProgressLine


def test_counts_and_current_p95_on_a_log_stream():
    out = io.StringIO()
    line = ProgressLine(30, stream=out, log_every_s=0.0)
    line.add(
        [
            {"error_class": "ok", "ok": True, "sent_s": 0.1, "latency_ms": 100.0 + i}
            for i in range(19)
        ]
    )
    line.add([{"error_class": "ok", "ok": True, "sent_s": 0.2, "latency_ms": 900.0}])
    line.add([{"error_class": "timeout", "ok": False, "sent_s": 0.3}])
    line.add([{"error_class": "rejected", "ok": False}])
    line.update(in_flight=3, force=True)
    text = out.getvalue()
    assert text.endswith("\n") and "\r" not in text  # not a terminal: whole lines
    assert "sent 24/30" in text and "done 21" in text and "failed 1" in text
    assert "rejected 1" in text and "in flight 3" in text
    # 21 attempted: the timeout ranks last, so the p95 (rank 20 of 21) is the 900 ms success.
    assert line.p95_ms() == pytest.approx(900.0, rel=1e-3) and "p95 (all) 900 ms" in text
    line.add([{"error_class": "http_503", "ok": False, "sent_s": 0.4} for _ in range(3)])
    line.update(force=True)
    assert line.p95_ms() == float("inf") and "p95 (all) beyond deadline" in out.getvalue()


def test_disabled_writes_nothing():
    out = io.StringIO()
    line = ProgressLine(5, enabled=False, stream=out)
    line.update(force=True)
    line.close()
    assert out.getvalue() == ""
