"""The physical floor: the least time a model's FLOPs can take on its GPU at 100 % utilisation.

A latency below it cannot be real for that model on that hardware (a benchmark that reports one
measured something else), so the report prints every latency beside its floor and flags it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from config import EaselConfig, ModelConfig

__all__ = ["FLOOR_FORMULA", "FloorRow", "floor_rows", "floor_seconds"]

FLOOR_FORMULA = (
    "floor = steps × TFLOP per step ÷ the GPU's peak TFLOP/s: the time the denoising compute "
    "alone takes at 100 % utilisation, for one image at the default resolution, with no text "
    "encoder, VAE, batching, queueing or network time. A measured latency below it is flagged."
)


@dataclass(frozen=True)
class FloorRow:
    """One (model, provider): its floor on the provider's GPU beside the measured latencies."""

    model: str
    provider: str
    gpu: str
    peak_tflops: float
    steps: int
    tflop_per_step: float | None
    floor_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    below: list[str] = field(default_factory=list)
    note: str = ""
    # The share of requests that succeeded: p50/p95 here are of successes (the floor bounds the
    # compute of an image made), so the share that failed is printed beside them.
    success_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def floor_seconds(steps: int, tflop_per_step: float | None, peak_tflops: float) -> float | None:
    """steps × tflop_per_step / peak_tflops; None when the FLOPs per step are not known."""
    if tflop_per_step is None:
        return None
    if steps < 0 or peak_tflops <= 0:
        raise ValueError("steps must be >= 0 and peak_tflops > 0")
    return steps * tflop_per_step / peak_tflops


def _note(model: ModelConfig) -> str:
    if model.backend == "http_api":
        return "closed API: the vendor's hardware is unknown"
    if model.tflop_per_step is None:
        return "tflop_per_step not in the config"
    if model.tiny_recipe is not None:
        return "floor of the real model; the measured figure is of a tiny build"
    return ""


def floor_rows(
    cfg: EaselConfig,
    latency: Mapping[tuple[str, str], Mapping[str, float | None]],
) -> list[FloorRow]:
    """A floor row per (model, provider) of the config.

    Args:
        cfg: the run's config (FLOPs per step, default steps, the providers' GPUs).
        latency: measured `p50_ms`/`p95_ms` (successful requests) and `success_rate` per
            (model, provider); missing pairs show None.
    """
    rows = []
    for model in cfg.models:
        for prov_name in model.providers:
            gpu = cfg.gpu(cfg.provider(prov_name).gpu)
            steps = model.steps.default
            floor = None
            if model.backend == "diffusers":
                floor = floor_seconds(steps, model.tflop_per_step, gpu.peak_tflops)
            floor_ms = None if floor is None else floor * 1000.0
            lat = latency.get((model.name, prov_name), {})
            p50, p95 = lat.get("p50_ms"), lat.get("p95_ms")
            below = [
                name
                for name, v in (("p50", p50), ("p95", p95))
                if floor_ms is not None and v is not None and v < floor_ms
            ]
            rows.append(
                FloorRow(
                    model=model.name,
                    provider=prov_name,
                    gpu=gpu.name,
                    peak_tflops=gpu.peak_tflops,
                    steps=steps,
                    tflop_per_step=model.tflop_per_step,
                    floor_ms=floor_ms,
                    p50_ms=p50,
                    p95_ms=p95,
                    below=below,
                    note=_note(model),
                    success_rate=lat.get("success_rate"),
                )
            )
    return rows
