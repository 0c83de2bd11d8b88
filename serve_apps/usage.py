"""The usage ledger: what every model replica held and did, for GPU-second costing.

A named, detached Ray actor (`easel-usage` in namespace `easel`, pinned to the head node) that
every model replica registers with when it starts and reports each batch to. The cost stage reads
it (`read_usage()` in-process, or `GET /v1/admin/usage`) and charges a replica's GPUs for its
whole life, idle and cold-start time included: `gpus * (last_seen_s - started_s)`.

Fields per replica: `replica, model, provider, gpus, started_s, load_s, last_seen_s, busy_s,
batches, images, alive`. `gpus` is the model's `num_gpus`; on a *simulated* provider a model that
runs on CPU is charged as if it held the provider's `gpus_per_replica` GPUs (1 by default), so
local runs price like the GPU deployment they stand in for; API models hold no GPU (`gpus` 0,
priced per image instead). `started_s` is wall-clock (`time.time()`) when the replica began
loading; `load_s` is the load duration (the cold start). Replicas send a heartbeat every
`HEARTBEAT_S`; `alive` is false once a replica said goodbye (graceful shutdown) or missed
`_DEAD_AFTER_BEATS` heartbeats (a crash or a lost node), and `last_seen_s` then stops growing.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "HEARTBEAT_S",
    "USAGE_NAME",
    "UsageLedger",
    "get_ledger",
    "read_usage",
    "read_usage_async",
    "replica_gpus",
]

USAGE_NAME = "easel-usage"
NAMESPACE = "easel"
HEARTBEAT_S = 2.0
_DEAD_AFTER_BEATS = 3


def replica_gpus(
    num_gpus: float, *, simulated_provider: bool, gpus_per_replica: int, api: bool
) -> float:
    """GPUs a replica is charged for (see the module docstring)."""
    if api:
        return 0.0
    if num_gpus > 0:
        return float(num_gpus)
    return float(gpus_per_replica) if simulated_provider else 0.0


class UsageLedger:
    """Per-replica usage records (plain Python; wrapped as a Ray actor by `get_ledger`)."""

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._rows: dict[str, dict[str, Any]] = {}

    def register(
        self,
        replica: str,
        model: str,
        provider: str,
        gpus: float,
        started_s: float,
        load_s: float,
    ) -> None:
        self._rows[replica] = {
            "replica": replica,
            "model": model,
            "provider": provider,
            "gpus": float(gpus),
            "started_s": float(started_s),
            "load_s": float(load_s),
            "last_seen_s": self._clock(),
            "busy_s": 0.0,
            "batches": 0,
            "images": 0,
            "stopped": False,
        }

    def report_batch(self, replica: str, busy_s: float, images: int) -> None:
        row = self._rows.get(replica)
        if row is None:
            return
        row["busy_s"] += float(busy_s)
        row["batches"] += 1
        row["images"] += int(images)
        row["last_seen_s"] = self._clock()

    def heartbeat(self, replica: str) -> None:
        row = self._rows.get(replica)
        if row is not None and not row["stopped"]:
            row["last_seen_s"] = self._clock()

    def goodbye(self, replica: str) -> None:
        row = self._rows.get(replica)
        if row is not None:
            row["last_seen_s"] = self._clock()
            row["stopped"] = True

    def rows(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for row in self._rows.values():
            alive = (
                not row["stopped"] and now - row["last_seen_s"] <= HEARTBEAT_S * _DEAD_AFTER_BEATS
            )
            r = {k: v for k, v in row.items() if k != "stopped"}
            r["alive"] = alive
            out.append(r)
        return out


def get_ledger() -> Any:
    """The ledger actor's handle, created on first use (detached, on the head node)."""
    import ray

    return (
        ray.remote(UsageLedger)
        .options(
            name=USAGE_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources={"node:__internal_head__": 0.001},
        )
        .remote()
    )


def read_usage() -> list[dict[str, Any]]:
    """Every replica's usage row (needs a connected Ray; [] when no replica registered yet)."""
    import ray

    try:
        ledger = ray.get_actor(USAGE_NAME, namespace=NAMESPACE)
    except ValueError:
        return []
    return ray.get(ledger.rows.remote())


async def read_usage_async() -> list[dict[str, Any]]:
    """`read_usage` for code running on an event loop (the ingress)."""
    import ray

    try:
        ledger = ray.get_actor(USAGE_NAME, namespace=NAMESPACE)
    except ValueError:
        return []
    return await ledger.rows.remote()
