"""Per-upstream availability: attempts by outcome, failovers, latency, and unhealthy episodes.

Every gateway process keeps one `UpstreamStats` per (model, provider) and writes them in its
snapshots; the figures of several processes merge exactly (`merge`): counts add, latency bucket
counts add, recent latencies pool (a percentile is read from the pooled values, never averaged
across processes), and unhealthy episodes are kept side by side. Times are wall-clock seconds
(`time.time()`) so that snapshots of different processes line up.

An *episode* is one stretch marked unhealthy: `first_failure_s` (the first failed attempt or
probe of the streak that led to it), `marked_s` (when this process marked it), `recovered_s`
(when it was healthy again; None while it lasts). Time to detect = marked - first failure; time
to recover = recovered - marked.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LATENCY_BUCKETS_MS",
    "Episode",
    "UpstreamStats",
    "availability_rows",
    "merge",
    "nearest_rank",
    "since",
]

# Upper bounds (ms) of the latency histogram; the last bucket is +Inf.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 120_000)
_RECENT = 512


def nearest_rank(values: Iterable[float], pct: float) -> float | None:
    """The nearest-rank percentile: an observed value, never an interpolation; None if empty."""
    data = sorted(values)
    if not data:
        return None
    return data[max(0, -(-int(pct * len(data)) // 100) - 1)]


@dataclass
class Episode:
    """One stretch of an upstream marked unhealthy by one gateway process."""

    first_failure_s: float
    marked_s: float
    reason: str
    recovered_s: float | None = None

    def unhealthy_s(self, start: float, end: float) -> float:
        """Seconds of this episode inside [start, end]."""
        stop = end if self.recovered_s is None else min(end, self.recovered_s)
        return max(0.0, stop - max(start, self.marked_s))


@dataclass
class UpstreamStats:
    """What one gateway process saw of one (model, provider) upstream."""

    model: str
    provider: str
    started_s: float
    attempts: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    episodes: list[Episode] = field(default_factory=list)
    # What a closed model's vendor did for this gateway (images, vendor time): its usage rows.
    vendor_images: int = 0
    vendor_busy_s: float = 0.0
    vendor_first_s: float | None = None
    vendor_last_s: float | None = None

    def record(self, outcome: str, latency_ms: float | None) -> None:
        """One attempt on this upstream ended with `outcome` (an ok one took `latency_ms`)."""
        self.attempts[outcome] += 1
        if outcome == "ok" and latency_ms is not None:
            self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
            self.latency_sum_ms += latency_ms
            self.recent_ms.append(latency_ms)

    def record_vendor_image(self, busy_s: float, now: float) -> None:
        self.vendor_images += 1
        self.vendor_busy_s += busy_s
        if self.vendor_first_s is None:
            self.vendor_first_s = now - busy_s
        self.vendor_last_s = now

    @property
    def requests(self) -> int:
        """Attempts that reached a verdict on this upstream (cancelled ones excluded)."""
        return sum(n for o, n in self.attempts.items() if o != "cancelled")

    @property
    def errors(self) -> int:
        """Attempts that were this upstream's fault (error, timeout, connect)."""
        return sum(self.attempts[o] for o in ("error", "timeout", "connect"))

    def p95_ms(self) -> float | None:
        return nearest_rank(self.recent_ms, 95)

    def unhealthy_s(self, start: float, end: float) -> float:
        """Seconds marked unhealthy inside [start, end], over the union of episodes."""
        spans = sorted(
            (max(start, e.marked_s), end if e.recovered_s is None else min(end, e.recovered_s))
            for e in self.episodes
        )
        total, reach = 0.0, start
        for lo, hi in spans:
            lo = max(lo, reach)
            if hi > lo:
                total += hi - lo
                reach = hi
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "started_s": self.started_s,
            "attempts": dict(self.attempts),
            "failovers": self.failovers,
            "buckets": list(self.buckets),
            "latency_sum_ms": self.latency_sum_ms,
            "recent_ms": list(self.recent_ms),
            "episodes": [vars(e) for e in self.episodes],
            "vendor_images": self.vendor_images,
            "vendor_busy_s": self.vendor_busy_s,
            "vendor_first_s": self.vendor_first_s,
            "vendor_last_s": self.vendor_last_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpstreamStats:
        out = cls(data["model"], data["provider"], float(data["started_s"]))
        out.attempts = Counter({str(k): int(v) for k, v in data["attempts"].items()})
        out.failovers = int(data["failovers"])
        out.buckets = [int(x) for x in data["buckets"]]
        out.latency_sum_ms = float(data["latency_sum_ms"])
        out.recent_ms = deque((float(x) for x in data["recent_ms"]), maxlen=None)
        out.episodes = [Episode(**e) for e in data["episodes"]]
        out.vendor_images = int(data.get("vendor_images", 0))
        out.vendor_busy_s = float(data.get("vendor_busy_s", 0.0))
        out.vendor_first_s = data.get("vendor_first_s")
        out.vendor_last_s = data.get("vendor_last_s")
        return out


def merge(parts: Iterable[UpstreamStats]) -> UpstreamStats:
    """Several processes' stats of one upstream as one (exact for counts and pooled values)."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to merge")
    out = UpstreamStats(parts[0].model, parts[0].provider, min(p.started_s for p in parts))
    out.recent_ms = deque(maxlen=None)
    firsts = [p.vendor_first_s for p in parts if p.vendor_first_s is not None]
    lasts = [p.vendor_last_s for p in parts if p.vendor_last_s is not None]
    for p in parts:
        if (p.model, p.provider) != (out.model, out.provider):
            raise ValueError(f"cannot merge {p.model}/{p.provider} into {out.model}/{out.provider}")
        out.attempts.update(p.attempts)
        out.failovers += p.failovers
        out.buckets = [a + b for a, b in zip(out.buckets, p.buckets, strict=True)]
        out.latency_sum_ms += p.latency_sum_ms
        out.recent_ms.extend(p.recent_ms)
        out.episodes.extend(p.episodes)
        out.vendor_images += p.vendor_images
        out.vendor_busy_s += p.vendor_busy_s
    out.vendor_first_s = min(firsts) if firsts else None
    out.vendor_last_s = max(lasts) if lasts else None
    return out


def availability_rows(stats: Iterable[UpstreamStats], start: float, end: float) -> list[dict]:
    """Per (model, provider), the figures of [start, end]: what the report's table shows.

    `uptime_pct` is the share of the window not marked unhealthy; `error_rate` the share of
    attempts that were the upstream's fault; detect/recover are the mean over the episodes that
    began in the window (recover over the ended ones).
    """
    window = max(1e-9, end - start)
    rows = []
    for s in stats:
        eps = [e for e in s.episodes if start <= e.marked_s <= end]
        detect = [e.marked_s - e.first_failure_s for e in eps]
        recover = [e.recovered_s - e.marked_s for e in eps if e.recovered_s is not None]
        rows.append(
            {
                "model": s.model,
                "provider": s.provider,
                "requests": s.requests,
                "ok": s.attempts["ok"],
                "errors": s.errors,
                "errors_by_class": {
                    o: s.attempts[o]
                    for o in ("error", "timeout", "connect", "shed")
                    if s.attempts[o]
                },
                "error_rate": (s.errors / s.requests) if s.requests else None,
                "failovers": s.failovers,
                "unhealthy_s": round(s.unhealthy_s(start, end), 3),
                "uptime_pct": round(100.0 * (1.0 - s.unhealthy_s(start, end) / window), 3),
                "episodes": len(eps),
                "detect_s": round(sum(detect) / len(detect), 3) if detect else None,
                "recover_s": round(sum(recover) / len(recover), 3) if recover else None,
                "window_s": round(window, 3),
            }
        )
    return rows


def since(after: UpstreamStats, before: UpstreamStats | None) -> UpstreamStats:
    """What happened between two snapshots of one upstream: counts subtract, episodes stay.

    For a window of a gateway that was already running (`easel bench --url`); `availability_rows`
    then keeps the episodes and unhealthy time inside the window. Recent latencies cannot be
    subtracted: the later snapshot's are kept.
    """
    if before is None:
        return after
    out = UpstreamStats.from_json(after.to_json())
    out.attempts = after.attempts - before.attempts  # Counter subtraction drops what is <= 0
    out.failovers = after.failovers - before.failovers
    out.buckets = [a - b for a, b in zip(after.buckets, before.buckets, strict=True)]
    out.latency_sum_ms = after.latency_sum_ms - before.latency_sum_ms
    out.vendor_images = after.vendor_images - before.vendor_images
    out.vendor_busy_s = after.vendor_busy_s - before.vendor_busy_s
    return out
