"""Cost per image: the GPU time each deployment held, priced at its provider's dated rate.

Per (model, provider) deployment of a self-hosted model::

    GPU-seconds    = Σ over its replicas of alive_s × gpus     (alive_s counts the cold-start
                                                               load, busy and idle time)
    cost per image = (GPU-seconds × price_per_gpu_hour / 3600 / images made
                      + orchestration_overhead_per_image) × (1 + platform_fee_pct / 100)

API models: (price_per_image + orchestration_overhead_per_image) × (1 + platform_fee_pct / 100).

A deployment's unit cost applies to every niche it served: GPU time is shared, so it is amortised
evenly over the images the deployment made, whatever their niche.

Beside it, the **busy-only** cost counts only the GPU time replicas spent making images
(Σ busy_s × gpus), and the **idle share** is the part of the held GPU time that was not: idle
replicas and cold-start loading. The all-held figure is what the run paid; the busy-only figure
is what the model costs when its replicas are kept busy, so it does not charge a model for a run's
design (a standby replica on a route the routing policy never used, say).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from config import EaselConfig

__all__ = [
    "COST_FORMULA",
    "DeploymentCost",
    "NicheCost",
    "api_cost_per_image",
    "busy_spent_usd",
    "deployment_costs",
    "gpu_cost_per_image",
    "model_busy_costs",
    "model_costs",
    "niche_costs",
    "spent_usd",
]

COST_FORMULA = (
    "Self-hosted, per (model, provider) deployment: GPU-seconds = Σ over its replicas of "
    "(alive time, counting cold-start load, busy and idle time) × GPUs per replica; "
    "cost per image = (GPU-seconds × price per GPU-hour / 3600 / images made + orchestration "
    "overhead per image) × (1 + platform fee % / 100). "
    "API models: (price per image + orchestration overhead per image) "
    "× (1 + platform fee % / 100). "
    "A deployment's unit cost applies to every niche it served (its GPU time is amortised evenly "
    "over all the images it made). "
    "Busy-only: the same with GPU-seconds = Σ busy time × GPUs per replica (inference only); "
    "idle share = 1 − busy GPU-seconds / held GPU-seconds."
)

Pricing = Literal["gpu", "api"]


@dataclass(frozen=True)
class DeploymentCost:
    """What one (model, provider) deployment cost, and how that figure was reached."""

    model: str
    provider: str
    pricing: Pricing
    replicas: int
    alive_s: float
    load_s: float
    busy_s: float
    idle_s: float
    gpu_seconds: float
    busy_gpu_seconds: float
    images: int
    price_per_gpu_hour: float | None
    price_per_image: float | None
    compute_per_image: float | None
    overhead_per_image: float
    platform_fee_pct: float
    cost_per_image: float | None
    price_date: str
    price_source: str
    simulated: bool
    note: str = ""
    busy_cost_per_image: float | None = None

    @property
    def idle_share(self) -> float | None:
        """Share of the held GPU time not spent making images (idle and cold-start load)."""
        if self.pricing == "api" or self.gpu_seconds <= 0:
            return None
        return max(0.0, 1.0 - self.busy_gpu_seconds / self.gpu_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "idle_share": self.idle_share}


@dataclass(frozen=True)
class NicheCost:
    """A deployment's unit cost applied to the images it made for one niche."""

    model: str
    niche: str
    provider: str
    images: int
    cost_per_image: float | None
    total_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpu_cost_per_image(
    gpu_seconds: float,
    images: int,
    price_per_gpu_hour: float,
    overhead_per_image: float,
    platform_fee_pct: float,
) -> float:
    """Unit cost of a self-hosted deployment; ValueError when it made no images."""
    if images <= 0:
        raise ValueError("a deployment that made no images has no cost per image")
    if gpu_seconds < 0 or price_per_gpu_hour < 0:
        raise ValueError("gpu_seconds and price_per_gpu_hour must be >= 0")
    compute = gpu_seconds * price_per_gpu_hour / 3600.0 / images
    return (compute + overhead_per_image) * (1.0 + platform_fee_pct / 100.0)


def api_cost_per_image(
    price_per_image: float, overhead_per_image: float, platform_fee_pct: float
) -> float:
    """Unit cost of a closed API model: its list price, overhead and fee."""
    return (price_per_image + overhead_per_image) * (1.0 + platform_fee_pct / 100.0)


def _num(row: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = row.get(key)
    return default if value is None else float(value)


def deployment_costs(
    cfg: EaselConfig,
    usage: Iterable[Mapping[str, Any]],
    images: Mapping[tuple[str, str], int] | None = None,
) -> list[DeploymentCost]:
    """Price every (model, provider) deployment of `cfg`.

    Args:
        cfg: the run's config (prices, overhead, fee, which models are APIs).
        usage: per-replica records (the gateway's `/v1/admin/usage` rows / usage.parquet): model,
            provider, gpus, started_s, load_s, last_seen_s, busy_s, images.
        images: images made per (model, provider), overriding the replicas' own counts (e.g. the
            successful requests); None counts what the replicas report.

    Returns:
        One DeploymentCost per (model, provider) the config declares, in config order. A
        self-hosted deployment without usage or images gets `cost_per_image=None` and a note.
    """
    fee = cfg.cost.platform_fee_pct
    overhead = cfg.cost.orchestration_overhead_per_image
    per_dep: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in usage:
        per_dep[(str(row["model"]), str(row["provider"]))].append(row)

    out: list[DeploymentCost] = []
    for model in cfg.models:
        for prov_name in model.providers:
            prov = cfg.provider(prov_name)
            rows = per_dep.get((model.name, prov_name), [])
            alive = load = busy = gpu_s = busy_gpu_s = 0.0
            made = 0
            for r in rows:
                # A replica pays from its start (the cold-start load included) to the last time
                # it was seen alive, busy or not.
                a = max(0.0, _num(r, "last_seen_s") - _num(r, "started_s"))
                # `gpus` is what the replica is charged for
                # (serve_apps.provider.usage.replica_gpus); a record without it is charged the
                # provider's GPUs per replica.
                gpus = r.get("gpus")
                gpus = float(prov.gpus_per_replica if gpus is None else gpus)
                alive += a
                load += min(a, _num(r, "load_s"))
                busy += min(a, _num(r, "busy_s"))
                gpu_s += a * gpus
                busy_gpu_s += min(a, _num(r, "busy_s")) * gpus
                made += int(_num(r, "images"))
            if images is not None:
                made = int(images.get((model.name, prov_name), 0))
            idle = max(0.0, alive - load - busy)
            common = dict(
                model=model.name,
                provider=prov_name,
                replicas=len(rows),
                alive_s=alive,
                load_s=load,
                busy_s=busy,
                idle_s=idle,
                images=made,
                overhead_per_image=overhead,
                platform_fee_pct=fee,
                price_date=prov.price_date.isoformat(),
                price_source=prov.price_source,
                simulated=prov.simulated,
            )
            if model.backend == "http_api":
                price = float(model.price_per_image or 0.0)
                out.append(
                    DeploymentCost(
                        pricing="api",
                        gpu_seconds=0.0,
                        busy_gpu_seconds=0.0,
                        busy_cost_per_image=api_cost_per_image(price, overhead, fee),
                        price_per_gpu_hour=None,
                        price_per_image=price,
                        compute_per_image=price,
                        cost_per_image=api_cost_per_image(price, overhead, fee),
                        **common,
                    )
                )
                continue
            note = ""
            unit = compute = busy_unit = None
            if not rows:
                note = "no replica usage recorded"
            elif made <= 0:
                note = "made no images"
            else:
                unit = gpu_cost_per_image(gpu_s, made, prov.price_per_gpu_hour, overhead, fee)
                busy_unit = gpu_cost_per_image(
                    busy_gpu_s, made, prov.price_per_gpu_hour, overhead, fee
                )
                compute = gpu_s * prov.price_per_gpu_hour / 3600.0 / made
                if gpu_s == 0:
                    note = "its replicas held no GPU (charged 0 GPUs)"
            out.append(
                DeploymentCost(
                    pricing="gpu",
                    gpu_seconds=gpu_s,
                    busy_gpu_seconds=busy_gpu_s,
                    price_per_gpu_hour=prov.price_per_gpu_hour,
                    price_per_image=None,
                    compute_per_image=compute,
                    cost_per_image=unit,
                    busy_cost_per_image=busy_unit,
                    note=note,
                    **common,
                )
            )
    return out


def niche_costs(
    costs: Iterable[DeploymentCost], images: Mapping[tuple[str, str, str], int]
) -> list[NicheCost]:
    """Per (model, niche, provider): the deployment's unit cost times the images for that niche.

    Args:
        costs: from `deployment_costs`.
        images: successful images per (model, niche, provider).
    """
    unit = {(c.model, c.provider): c.cost_per_image for c in costs}
    out = []
    for (model, niche, provider), n in sorted(images.items()):
        cpi = unit.get((model, provider))
        out.append(
            NicheCost(
                model=model,
                niche=niche,
                provider=provider,
                images=int(n),
                cost_per_image=cpi,
                total_usd=None if cpi is None else cpi * int(n),
            )
        )
    return out


def spent_usd(c: DeploymentCost) -> float:
    """What a deployment cost in total: its GPU time (or API images), overhead and fee."""
    if c.pricing == "api":
        return (c.cost_per_image or 0.0) * c.images
    compute = c.gpu_seconds * (c.price_per_gpu_hour or 0.0) / 3600.0
    return (compute + c.overhead_per_image * c.images) * (1.0 + c.platform_fee_pct / 100.0)


def model_costs(costs: Iterable[DeploymentCost]) -> dict[str, float | None]:
    """Per model: everything its deployments cost, over every image they made.

    A deployment that made no image still counts: its idle GPU time is paid for by the model's
    images on the other providers. None for a self-hosted model that made no image at all.
    """
    spent: dict[str, float] = defaultdict(float)
    made: dict[str, int] = defaultdict(int)
    listed: dict[str, float | None] = {}
    for c in costs:
        # An API's price holds even when the run made no images with it.
        listed.setdefault(c.model, c.cost_per_image if c.pricing == "api" else None)
        spent[c.model] += spent_usd(c)
        made[c.model] += c.images
    return {m: (spent[m] / made[m] if made[m] else listed[m]) for m in listed}


def busy_spent_usd(c: DeploymentCost) -> float:
    """What a deployment's images cost counting only the GPU time spent making them."""
    if c.pricing == "api":
        return (c.cost_per_image or 0.0) * c.images
    compute = c.busy_gpu_seconds * (c.price_per_gpu_hour or 0.0) / 3600.0
    return (compute + c.overhead_per_image * c.images) * (1.0 + c.platform_fee_pct / 100.0)


def model_busy_costs(costs: Iterable[DeploymentCost]) -> dict[str, dict[str, float | None]]:
    """Per model: busy-only cost per image and the idle share of its held GPU time.

    Busy-only charges a model only for inference: a standby deployment that made no image adds
    nothing here (it does in `model_costs`). The idle share is over all its deployments' held
    GPU-seconds; None for API models.
    """
    costs = list(costs)
    out: dict[str, dict[str, float | None]] = {}
    for model in dict.fromkeys(c.model for c in costs):
        deps = [c for c in costs if c.model == model]
        made = sum(c.images for c in deps)
        held = sum(c.gpu_seconds for c in deps)
        busy = sum(c.busy_gpu_seconds for c in deps)
        api = all(c.pricing == "api" for c in deps)
        listed = deps[0].cost_per_image if api else None
        out[model] = {
            "busy_cost_per_image": sum(busy_spent_usd(c) for c in deps) / made if made else listed,
            "idle_share": None if api or held <= 0 else max(0.0, 1.0 - busy / held),
        }
    return out
