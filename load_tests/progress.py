"""The live progress line of a load test: sent, done, failed, in flight and the current p95."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram

from load_tests.intervals import nearest_rank

__all__ = ["ProgressLine"]

_WINDOW_S = 10.0  # "current" p95: the records of the last one to two windows


class ProgressLine:
    """Counts records as they come back and redraws one status line.

    On a terminal the line is redrawn in place (at most every `every_s`); otherwise a full line
    is printed every `log_every_s`, so CI logs stay short.
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float = 0.5,
        log_every_s: float = 10.0,
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s if self.tty else log_every_s
        self.sent = self.done = self.failed = self.rejected = self.in_flight = 0
        self._hists = [HdrHistogram(1, 3_600_000_000, 3), HdrHistogram(1, 3_600_000_000, 3)]
        self._fails = [0, 0]  # failures in the same two windows: they rank beyond the deadline
        self._rotated = time.monotonic()
        self._drawn = 0.0
        self._t0 = time.monotonic()

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Count finished records (ok, failed, rejected, never sent)."""
        for r in records:
            if r.get("error_class") == "rejected":
                self.rejected += 1
                continue
            self.done += 1
            if r.get("sent_s") is not None:
                self.sent += 1
            if r.get("ok"):
                us = round(r["latency_ms"] * 1000)
                self._hists[0].record_value(min(max(us, 1), 3_600_000_000))
            else:
                self.failed += 1
                self._fails[0] += 1

    def p95_ms(self) -> float | None:
        """p95 latency of the records of the last ~10-20 s (two rotating histograms, merged),
        over all of them: failures rank above every success, so the p95 is infinite (beyond
        the deadline) when more than 5 % of them failed. None when there is none yet."""
        merged = HdrHistogram(1, 3_600_000_000, 3)
        for h in self._hists:
            merged.add(h)
        ok, fails = merged.get_total_count(), sum(self._fails)
        if not ok + fails:
            return None
        rank = nearest_rank(ok + fails, 95)
        if rank > ok:
            return math.inf
        return merged.get_value_at_percentile(100.0 * rank / ok) / 1000.0

    def text(self) -> str:
        p95 = self.p95_ms()
        shown = "-" if p95 is None else ("beyond deadline" if math.isinf(p95) else f"{p95:.0f} ms")
        return (
            f"[{time.monotonic() - self._t0:6.1f}s] sent {self.sent + self.in_flight}/{self.total}"
            f"  done {self.done}  failed {self.failed}  rejected {self.rejected}"
            f"  in flight {self.in_flight}  p95 (all) {shown}"
        )

    def update(self, in_flight: int | None = None, force: bool = False) -> None:
        """Redraw when due (or `force`); `in_flight` is what the dispatchers hold right now."""
        now = time.monotonic()
        if now - self._rotated > _WINDOW_S:
            self._hists = [HdrHistogram(1, 3_600_000_000, 3), self._hists[0]]
            self._fails = [0, self._fails[0]]
            self._rotated = now
        if in_flight is not None:
            self.in_flight = in_flight
        if not self.enabled or (not force and now - self._drawn < self.every_s):
            return
        self._drawn = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.text())
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
