"""A failover drill: steady traffic through the gateway, one provider's processes killed mid-run.

`failover_drill(...)` sends open-loop traffic (a fixed rate, each request at its scheduled time
whatever the others do) for one model to the gateway, SIGKILLs every process of the victim
provider's cluster after `kill_after_s`, keeps sending for `after_s`, and reports what the
clients saw: requests and failures, failovers, and three times measured from the kill:

- `detected_s`: until the gateway's routing view shows the victim unhealthy (polled every 20 ms);
- `gateway_detect_s`: the gateway's own episode figure, from the first failed attempt or probe to
  the mark (what the report's availability table shows);
- `recovered_s`: until the last request that was slowed by the outage (done after the kill and
  slower than 3 × the p95 before it) completed; 0 when none was slowed.

Used by the `chaos` test (tests/serve_apps/local/test_isolated.py) and by
`benchmarks/failover.py`, which commits the figures.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

__all__ = ["DrillResult", "failover_drill"]


@dataclass
class _Sent:
    scheduled: float
    done: float = 0.0
    status: int = 0
    provider: str | None = None
    attempts: int = 0
    error: str = ""


@dataclass
class DrillResult:
    """What the clients and the gateway saw around the kill (seconds from the kill)."""

    model: str
    victim: str
    rate: float
    requests: int
    failed: int
    statuses: dict[str, int]
    failed_over: int
    killed_pids: int
    detected_s: float | None
    gateway_detect_s: float | None
    recovered_s: float
    p50_before_ms: float | None
    p95_before_ms: float | None
    p95_after_ms: float | None
    served_after_by: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    return data[max(0, -(-int(q * len(data)) // 100) - 1)]


async def _drill(
    url: str,
    model: str,
    victim: str,
    kill: Callable[[], list[int]],
    admin_key: str | None,
    rate: float,
    kill_after_s: float,
    after_s: float,
) -> DrillResult:
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2
    n = int((kill_after_s + after_s) * rate)
    sent = [_Sent(scheduled=t0 + i / rate) for i in range(n)]
    killed_at: float | None = None
    detected_at: float | None = None
    killed_pids = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int, rec: _Sent) -> None:
            await asyncio.sleep(max(0.0, rec.scheduled - loop.time()))
            body = {"model": model, "prompt": f"drill {i}", "seed": i}
            try:
                async with session.post(f"{url}/v1/generate", json=body) as r:
                    data = await r.read()
                    rec.status = r.status
                    rec.provider = r.headers.get("X-Easel-Provider")
                    rec.attempts = int(r.headers.get("X-Easel-Attempts", "0") or 0)
                    if r.status != 200:
                        rec.error = data[:300].decode(errors="replace")
            except (aiohttp.ClientError, TimeoutError) as exc:
                rec.error = repr(exc)
            rec.done = loop.time()

        async def watch() -> None:
            nonlocal killed_at, detected_at, killed_pids
            await asyncio.sleep(max(0.0, t0 + kill_after_s - loop.time()))
            killed_at = loop.time()
            killed_pids = len(await asyncio.to_thread(kill))
            while detected_at is None and loop.time() < killed_at + after_s:
                try:
                    async with session.get(f"{url}/v1/admin/routing", headers=headers) as r:
                        rows = (await r.json())["providers"]
                    row = next(x for x in rows if (x["model"], x["provider"]) == (model, victim))
                    if not row["healthy"]:
                        detected_at = loop.time()
                except (aiohttp.ClientError, KeyError, StopIteration, ValueError):
                    pass
                await asyncio.sleep(0.02)

        await asyncio.gather(watch(), *(one(i, r) for i, r in enumerate(sent)))
        gateway_detect = None
        try:
            async with session.get(f"{url}/v1/admin/availability", headers=headers) as r:
                rows = (await r.json())["stats"]
            (stats,) = [s for s in rows if (s["model"], s["provider"]) == (model, victim)]
            eps = [e for e in stats["episodes"] if e["marked_s"] >= time.time() - after_s - 5]
            if eps:
                gateway_detect = eps[0]["marked_s"] - eps[0]["first_failure_s"]
        except (aiohttp.ClientError, KeyError, ValueError):
            pass
    assert killed_at is not None
    before = [(r.done - r.scheduled) * 1000 for r in sent if r.done < killed_at and r.status == 200]
    after = [r for r in sent if r.scheduled >= killed_at]
    p95_before = _pct(before, 95)
    slow = [
        r for r in sent
        if r.done >= killed_at and p95_before and (r.done - r.scheduled) * 1000 > 3 * p95_before
    ]  # fmt: skip
    failed = [r for r in sent if r.status != 200]
    return DrillResult(
        model=model,
        victim=victim,
        rate=rate,
        requests=len(sent),
        failed=len(failed),
        statuses={str(k): v for k, v in Counter(r.status for r in sent).items()},
        failed_over=sum(1 for r in sent if r.attempts > 1),
        killed_pids=killed_pids,
        detected_s=None if detected_at is None else round(detected_at - killed_at, 3),
        gateway_detect_s=None if gateway_detect is None else round(gateway_detect, 3),
        recovered_s=round(max((r.done for r in slow), default=killed_at) - killed_at, 3),
        p50_before_ms=None if not before else round(statistics.median(before), 1),
        p95_before_ms=None if p95_before is None else round(p95_before, 1),
        p95_after_ms=_pct([(r.done - r.scheduled) * 1000 for r in after if r.status == 200], 95),
        served_after_by=dict(Counter(r.provider or "-" for r in after)),
        errors=[r.error for r in failed][:10],
    )


def failover_drill(
    url: str,
    model: str,
    victim: str,
    kill: Callable[[], list[int]],
    *,
    admin_key: str | None = None,
    rate: float = 4.0,
    kill_after_s: float = 10.0,
    after_s: float = 15.0,
) -> DrillResult:
    """Run the drill against the gateway at `url`; `kill()` takes the victim down (its pids)."""
    return asyncio.run(_drill(url, model, victim, kill, admin_key, rate, kill_after_s, after_s))
