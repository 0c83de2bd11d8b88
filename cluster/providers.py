"""The provider catalogue: where replicas can run, on which GPU, at what dated price.

Everything here is read from the config (`providers`, `gpus`, `models`); the catalogue adds what
operators ask next: the price of one replica, how many replicas the provider's capacity allows,
which models it hosts, and how old its price is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cluster._table import format_table
from config import EaselConfig, ProviderConfig

__all__ = ["ProviderEntry", "catalogue", "format_catalogue", "replica_bounds"]


@dataclass(frozen=True)
class ProviderEntry:
    """One provider as operators see it."""

    name: str
    cloud: str
    region: str
    gpu: str
    gpu_memory_gb: float
    gpus_per_replica: int
    price_per_gpu_hour: float
    price_per_replica_hour: float
    price_date: dt.date
    price_age_days: int
    price_source: str
    capacity_gpus: int
    min_replicas: int
    max_replicas: int
    simulated: bool
    resource: str
    models: tuple[str, ...]


def replica_bounds(provider: ProviderConfig) -> tuple[int, int]:
    """(lowest, highest) worker replicas: the config's bounds, the top capped by GPU capacity."""
    by_capacity = provider.capacity // provider.gpus_per_replica
    high = min(provider.max_replicas, by_capacity)
    return min(provider.min_replicas, high), high


def catalogue(cfg: EaselConfig, today: dt.date | None = None) -> list[ProviderEntry]:
    """The providers of `cfg` in config order; `today` (default: now) dates the prices."""
    today = today or dt.date.today()
    entries = []
    for p in cfg.providers:
        gpu = cfg.gpu(p.gpu)
        low, high = replica_bounds(p)
        entries.append(
            ProviderEntry(
                name=p.name,
                cloud=p.cloud,
                region=p.region,
                gpu=gpu.name,
                gpu_memory_gb=gpu.memory_gb,
                gpus_per_replica=p.gpus_per_replica,
                price_per_gpu_hour=p.price_per_gpu_hour,
                price_per_replica_hour=p.price_per_gpu_hour * p.gpus_per_replica,
                price_date=p.price_date,
                price_age_days=(today - p.price_date).days,
                price_source=p.price_source,
                capacity_gpus=p.capacity,
                min_replicas=low,
                max_replicas=high,
                simulated=p.simulated,
                resource=p.resource,
                models=tuple(m.name for m in cfg.models if p.name in m.providers),
            )
        )
    return entries


def format_catalogue(entries: list[ProviderEntry]) -> str:
    """A plain-text table, one provider a line, then each price's source."""
    header = (
        "provider",
        "cloud",
        "region",
        "gpu",
        "$/gpu-h",
        "$/replica-h",
        "price date",
        "capacity",
        "replicas",
        "simulated",
        "models",
    )
    rows = [
        (
            e.name,
            e.cloud,
            e.region,
            f"{e.gpu} x{e.gpus_per_replica}",
            f"{e.price_per_gpu_hour:.2f}",
            f"{e.price_per_replica_hour:.2f}",
            f"{e.price_date.isoformat()} ({e.price_age_days}d)",
            f"{e.capacity_gpus} gpu",
            f"{e.min_replicas}-{e.max_replicas}",
            "yes" if e.simulated else "no",
            ",".join(e.models) or "-",
        )
        for e in entries
    ]
    sources = [f"{e.name}: price from {e.price_source or '(no source given)'}" for e in entries]
    return "\n".join([format_table(header, rows), "", *sources])
