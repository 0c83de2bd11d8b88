"""What the benchmark scripts share: nearest-rank percentiles and cut-down default configs."""

from __future__ import annotations

import statistics

from config import EaselConfig, load_config, parse_config

__all__ = ["one_model_config", "pct", "summary"]


def pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile: an observed value, never an interpolation."""
    data = sorted(values)
    return data[max(0, -(-int(q * len(data)) // 100) - 1)]


def summary(ms: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), digits),
        "p95_ms": round(pct(ms, 95), digits),
        "p99_ms": round(pct(ms, 99), digits),
        "mean_ms": round(statistics.fmean(ms), digits),
    }


def one_model_config(
    model: str, providers: list[str] | None = None, max_batch_size: int | None = None
) -> EaselConfig:
    """The default config cut down to `model`, on `providers` (default: its first one)."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == model)
    m["providers"] = providers or m["providers"][:1]
    if max_batch_size is not None:
        m["batching"]["max_batch_size"] = max_batch_size
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    return parse_config(data, f"<default config, {model} on {m['providers']}>")
