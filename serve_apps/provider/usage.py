"""The usage ledger of one provider cluster: what each model replica held and did, for costing.

A named, detached Ray actor per provider (`easel-usage-<provider>` in namespace `easel`, pinned
to the head node) that every model replica of that provider registers with when it starts and
reports each batch to. The provider app serves its rows in `GET /v1/stats`; the cost stage reads
them there (through the gateway's `GET /v1/admin/usage`) and charges a replica's GPUs for its
whole life, idle and cold-start time included: `gpus * (last_seen_s - started_s)`. One ledger per
provider, whether the providers share one Ray (the default local mode) or not (`--isolated`,
production): a provider's costing never depends on another's cluster.

Fields per replica: `replica, model, provider, gpus, started_s, load_s, last_seen_s, busy_s,
batches, images, alive`. `gpus` is the model's `num_gpus`; on a *simulated* provider a model that
runs on CPU is charged as if it held the provider's `gpus_per_replica` GPUs (1 by default), so
local runs price like the GPU deployment they stand in for. `started_s` is wall-clock
(`time.time()`) when the replica began loading; `load_s` is the load duration (the cold start).
Replicas send a heartbeat every `HEARTBEAT_S`; `alive` is false once a replica said goodbye
(graceful shutdown) or missed `_DEAD_AFTER_BEATS` heartbeats (a crash or a lost node), and
`last_seen_s` then stops growing.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "HEARTBEAT_S",
    "UsageLedger",
    "get_ledger",
    "ledger_name",
    "read_usage_async",
    "replica_gpus",
]

NAMESPACE = "easel"
HEARTBEAT_S = 2.0
_DEAD_AFTER_BEATS = 3


def ledger_name(provider: str) -> str:
    """The ledger actor's name for `provider`."""
    return f"easel-usage-{provider}"


def replica_gpus(num_gpus: float, *, simulated_provider: bool, gpus_per_replica: int) -> float:
    """GPUs a replica is charged for (see the module docstring)."""
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


def get_ledger(provider: str) -> Any:
    """`provider`'s ledger actor handle, created on first use (detached, on the head node)."""
    import ray

    return (
        ray.remote(UsageLedger)
        .options(
            name=ledger_name(provider),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            # The head outlives worker nodes: the record of a lost replica must survive it.
            resources={"node:__internal_head__": 0.001},
        )
        .remote()
    )


async def read_usage_async(provider: str) -> list[dict[str, Any]]:
    """Every replica row of `provider`'s ledger ([] before any replica registered)."""
    import ray

    try:
        ledger = ray.get_actor(ledger_name(provider), namespace=NAMESPACE)
    except ValueError:
        return []
    return await ledger.rows.remote()
