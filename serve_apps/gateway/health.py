"""Active health: each gateway process probes each provider's `/v1/stats`, off the request path.

Every `routing.probe_interval_s` the prober asks every provider endpoint, at once and with a
`probe_timeout_s` deadline, for its per-model replicas and capacity (`/v1/stats?usage=false`), and
hands the answer to the routing table (`RoutingTable.probe_result`): a provider that refuses the
connection is down at once, one that answers late or wrongly several times in a row is sick, a
model without a running replica too, and `least_outstanding` learns each provider's capacity.
Closed models' vendors are not probed (a vendor API has no health route to trust): their health
is passive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from serve_apps.gateway.routing import RoutingTable

__all__ = ["Prober", "parse_stats"]

_log = logging.getLogger(__name__)


def parse_stats(data: Any) -> tuple[dict[str, bool], dict[str, float]] | None:
    """({model: has a running replica}, {model: capacity}) from a `/v1/stats` body; None if bad."""
    try:
        rows = data["models"]
        up = {str(r["model"]): bool(r["healthy"]) for r in rows}
        capacity = {str(r["model"]): float(r["capacity"]) for r in rows if r["capacity"] > 0}
    except (KeyError, TypeError, ValueError):
        return None
    return up, capacity


class Prober:
    """Probes `endpoints` ({provider: base URL}) for `table`, until `stop()`."""

    def __init__(
        self,
        table: RoutingTable,
        endpoints: dict[str, str],
        session: aiohttp.ClientSession,
        *,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self.table = table
        self.endpoints = endpoints
        self._session = session
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def start(self) -> None:
        if self._task is None and self.endpoints:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="easel-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def probe_all(self) -> None:
        """One round: every provider at once."""
        await asyncio.gather(*(self._probe(p, url) for p, url in self.endpoints.items()))
        self.rounds += 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.probe_all()
            except Exception:  # a probe bug must not stop probing
                _log.exception("probe round failed")
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started)))

    async def _probe(self, provider: str, url: str) -> None:
        parsed, unreachable = None, False
        try:
            async with self._session.get(
                f"{url}/v1/stats", params={"usage": "false"}, timeout=self._timeout
            ) as resp:
                if resp.status == 200:
                    parsed = parse_stats(await resp.json())
                else:
                    _log.info("probe of %s answered %d", provider, resp.status)
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            unreachable = True
            _log.info("probe of %s: unreachable (%r)", provider, exc)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            _log.info("probe of %s failed: %r", provider, exc)
        if parsed is None:
            self.table.probe_result(provider, None, {}, unreachable=unreachable)
        else:
            self.table.probe_result(provider, *parsed)
