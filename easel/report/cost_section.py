"""summary.json's `cost` section: prices, per-model and per-deployment costs, per niche."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from config import EaselConfig
from easel.cost import (
    COST_FORMULA,
    deployment_costs,
    model_busy_costs,
    model_costs,
    niche_costs,
    spent_usd,
)

__all__ = ["cost_section"]


def cost_section(
    cfg: EaselConfig, usage: list[dict[str, Any]] | None, req: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The cost section from usage.parquet's rows and the request records ({} without usage)."""
    if usage is None:
        return {}
    deps = deployment_costs(cfg, usage)
    per_model = model_costs(deps)
    busy = model_busy_costs(deps)
    niche_images: dict[tuple[str, str, str], int] = {}
    for r in req or []:
        if r.get("ok"):
            key = (r["model"], r["niche"], r.get("provider") or "")
            niche_images[key] = niche_images.get(key, 0) + 1
    images: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    for d in deps:
        images[d.model] += d.images
        spent[d.model] += spent_usd(d)
    return {
        "formula": COST_FORMULA,
        "overhead_per_image": cfg.cost.orchestration_overhead_per_image,
        "platform_fee_pct": cfg.cost.platform_fee_pct,
        "prices": [
            {
                "provider": p.name,
                "cloud": p.cloud,
                "region": p.region,
                "gpu": p.gpu,
                "gpus_per_replica": p.gpus_per_replica,
                "price_per_gpu_hour": p.price_per_gpu_hour,
                "price_date": p.price_date.isoformat(),
                "price_source": p.price_source,
                "simulated": p.simulated,
            }
            for p in cfg.providers
        ],
        "api_prices": [
            {"model": m.name, "display_name": m.display_name, "price_per_image": m.price_per_image}
            for m in cfg.models
            if m.backend == "http_api"
        ],
        "models": [
            {
                "model": m.name,
                "pricing": "api" if m.backend == "http_api" else "gpu",
                "images": images[m.name],
                "spent_usd": spent[m.name],
                "cost_per_image": per_model.get(m.name),
                **busy.get(m.name, {"busy_cost_per_image": None, "idle_share": None}),
            }
            for m in cfg.models
        ],
        "deployments": [{**d.to_dict(), "spent_usd": spent_usd(d)} for d in deps],
        "by_niche": [c.to_dict() for c in niche_costs(deps, niche_images)],
        "notes": [
            "A model's cost per image is everything its deployments cost (idle ones included) "
            "over every image they made: what this run paid. Busy-only counts only the GPU time "
            "spent making images: what the model costs on replicas kept busy, without this "
            "run's standby and idle capacity (the idle share says how much of the bill that was).",
            "Images (N) are the images the replicas made, warm-up requests included.",
        ],
    }
