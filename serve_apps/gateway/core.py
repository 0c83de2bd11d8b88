"""One gateway process: its routing table, upstreams, prober, tenants and shared-state chores.

`Gateway(cfg)` holds everything the request path reads, in this process: nothing on that path
calls anything shared. Off the path, three background loops run: the prober (`health.py`), the
routing-document watcher (takes a newer document from the state folder, `document.py`) and the
snapshot writer (this process's figures into the state folder, so that any process can answer
for all of them, `snapshots.py`). `start()` opens the pooled HTTP session and starts the loops;
`stop()` ends them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from config import EaselConfig, ModelConfig, parse_config
from serve_apps.gateway.availability import UpstreamStats, merge
from serve_apps.gateway.dispatch import Dispatcher, Sender
from serve_apps.gateway.document import DocumentStore, RoutingDocument, updated
from serve_apps.gateway.health import Prober
from serve_apps.gateway.policies import POLICIES
from serve_apps.gateway.routing import RoutingTable
from serve_apps.gateway.snapshots import Snapshot, read_snapshots, write_snapshot
from serve_apps.gateway.tenants import RateLimiter, TenantAuth
from serve_apps.gateway.upstreams import ProviderUpstream, VendorUpstream

__all__ = ["Gateway", "GatewaySetupError", "endpoints_of", "with_upstreams"]

_log = logging.getLogger(__name__)
_WATCH_S = 0.1  # how often a process looks for a newer routing document
_SNAPSHOT_S = 1.0  # how often it writes its figures for the others


class GatewaySetupError(ValueError):
    """The config does not say where an upstream is (a provider endpoint, a vendor URL)."""


def with_upstreams(
    cfg: EaselConfig, endpoints: dict[str, str], vendors: dict[str, str]
) -> EaselConfig:
    """`cfg` with provider endpoints and closed models' vendor base URLs filled in (local modes)."""
    data = cfg.model_dump(mode="json")
    for p in data["providers"]:
        if p["name"] in endpoints:
            p["endpoint"] = endpoints[p["name"]]
    for m in data["models"]:
        if m["name"] in vendors:
            m["api"]["base_url"] = vendors[m["name"]]
    return parse_config(data, f"{cfg.name} with local upstreams")


def endpoints_of(cfg: EaselConfig) -> dict[str, str]:
    """{provider: endpoint} of every provider that serves a self-hosted model; error if unset."""
    needed = {p for m in cfg.models if m.backend == "diffusers" for p in m.providers}
    missing = sorted(p for p in needed if cfg.provider(p).endpoint is None)
    if missing:
        raise GatewaySetupError(
            f"providers {missing} have no endpoint: set providers[].endpoint to each provider "
            "cluster's URL, or let `easel cluster up --local` start them and fill it in"
        )
    return {p: str(cfg.provider(p).endpoint) for p in sorted(needed)}


def _check_vendors(cfg: EaselConfig) -> None:
    missing = [
        m.name for m in cfg.models if m.api is not None and m.api.base_url is None
    ]  # a simulated vendor not started yet
    if missing:
        raise GatewaySetupError(
            f"closed models {missing} have no api.base_url: their simulated vendors run as "
            "their own processes (`python -m simulators.vendor --model M`, or `easel cluster up "
            "--local`, which starts them and fills it in)"
        )


class Gateway:
    """The state and background work of one gateway process.

    Args:
        cfg: the config, with provider endpoints and vendor base URLs filled in.
        state_dir: the folder the processes of one `easel gateway --workers N` share (routing
            document, snapshots); None for a lone process.
        workers: processes sharing the tenants' rate limits and each upstream's admission
            limit (each enforces its share).
    """

    def __init__(
        self, cfg: EaselConfig, *, state_dir: str | Path | None = None, workers: int = 1
    ) -> None:
        self.cfg = cfg
        self.endpoints = endpoints_of(cfg)
        _check_vendors(cfg)
        self.models: dict[str, ModelConfig] = {m.name: m for m in cfg.models}
        self.table = RoutingTable(cfg, share=1.0 / workers)
        self.store = DocumentStore(state_dir)
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.workers = workers
        self.auth = TenantAuth(cfg.serve.tenants)
        if self.auth.missing_keys:
            _log.warning(
                "tenants without an API key in the environment: %s", self.auth.missing_keys
            )
        self.limiter = RateLimiter(cfg.serve.tenants, share=1.0 / workers)
        self.answers: Counter[tuple[str, int]] = Counter()  # (model, status) -> answers
        self.rejected: Counter[str] = Counter()  # error code -> answers before a model was known
        self.started_s = time.time()
        self.pid = os.getpid()
        self.session: aiohttp.ClientSession | None = None
        self.dispatcher: Dispatcher | None = None
        self.prober: Prober | None = None
        self._vendors: list[VendorUpstream] = []
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        r = self.cfg.routing
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=r.connect_timeout_s),
        )
        senders: dict[tuple[str, str], Sender] = {}
        vendors: dict[str, VendorUpstream] = {}
        for s in self.table.states():
            if s.kind == "provider":
                senders[(s.model, s.provider)] = ProviderUpstream(
                    self.endpoints[s.provider], s.model, self.session
                )
            else:
                # One client per closed model: its providers resell one vendor API.
                if s.model not in vendors:
                    vendors[s.model] = VendorUpstream(self.models[s.model])
                senders[(s.model, s.provider)] = vendors[s.model]
        self._vendors = list(vendors.values())
        self.dispatcher = Dispatcher(self.table, senders, r.request_timeout_s)
        newest = self.store.newer(-1)
        if newest is not None:
            self.table.apply(newest)
        self.prober = Prober(
            self.table, self.endpoints, self.session,
            interval_s=r.probe_interval_s, timeout_s=r.probe_timeout_s,
        )  # fmt: skip
        self.prober.start()
        loop = asyncio.get_running_loop()
        if self.state_dir is not None:
            self._tasks.append(loop.create_task(self._watch_document(), name="easel-document"))
            self._tasks.append(loop.create_task(self._write_snapshots(), name="easel-snapshots"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.prober is not None:
            await self.prober.stop()
        if self.state_dir is not None:
            await asyncio.to_thread(write_snapshot, self.state_dir, self.snapshot())
        for v in self._vendors:
            await v.aclose()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _watch_document(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_S)
            try:
                doc = self.store.newer(self.table.document.version)
                if doc is not None:
                    self.table.apply(doc)
                    _log.info("routing document v%d applied", doc.version)
            except Exception:
                _log.exception("reading the routing document failed")

    async def _write_snapshots(self) -> None:
        assert self.state_dir is not None
        while True:
            await asyncio.sleep(_SNAPSHOT_S)
            try:
                await asyncio.to_thread(write_snapshot, self.state_dir, self.snapshot())
            except Exception:
                _log.exception("writing the snapshot failed")

    # --- admin --------------------------------------------------------------------------------

    def change_routing(self, body: dict[str, Any]) -> RoutingDocument:
        """Apply an admin change everywhere: here at once, the other processes via the store."""
        known = {m: self.table.providers(m) for m in self.table.models}

        def make(base: RoutingDocument) -> RoutingDocument:
            return updated(base, known, policies=list(POLICIES), **body)

        doc = self.store.change(self.table.document, make)
        self.table.apply(doc)
        return doc

    def snapshot(self) -> Snapshot:
        """This process's figures, as the others read them."""
        return Snapshot(
            pid=self.pid,
            written_s=time.time(),
            routes=self.table.view_rows(),
            stats=[s.stats.to_json() for s in self.table.states()],
            answers=[[m, st, n] for (m, st), n in self.answers.items()],
            rejected=dict(self.rejected),
        )

    def snapshots(self) -> list[Snapshot]:
        """This process's live snapshot plus the others' latest (only its own when alone)."""
        mine = self.snapshot()
        if self.state_dir is None:
            return [mine]
        return [mine, *(s for s in read_snapshots(self.state_dir) if s.pid != self.pid)]

    def merged_stats(self, snaps: list[Snapshot] | None = None) -> list[UpstreamStats]:
        """Every process's stats of each (model, provider), merged."""
        snaps = self.snapshots() if snaps is None else snaps
        by: dict[tuple[str, str], list[UpstreamStats]] = {}
        for snap in snaps:
            for data in snap.stats:
                st = UpstreamStats.from_json(data)
                by.setdefault((st.model, st.provider), []).append(st)
        return [merge(parts) for parts in by.values()]
