"""The post's Models table: each model's version, type, where it runs, and its price."""

from __future__ import annotations

from typing import Any

from config import EaselConfig, ModelConfig
from easel.report.cells import Summary, Table, fmt_usd

__all__ = ["model_listing", "models_table"]


def _price(cfg: EaselConfig, m: ModelConfig) -> str:
    if m.backend == "http_api":
        return f"{fmt_usd(m.price_per_image)} per image (API list price)"
    provs = [cfg.provider(p) for p in m.providers]
    prices = sorted({p.price_per_gpu_hour for p in provs})
    gpus = sorted({p.gpu for p in provs})
    span = fmt_usd(prices[0]) if len(prices) == 1 else f"{fmt_usd(prices[0])}-{prices[-1]:.2f}"
    return f"{span} per GPU-hour ({', '.join(gpus)})"


def model_listing(cfg: EaselConfig, m: ModelConfig) -> dict[str, Any]:
    """The Models-table fields of one model, for summary.json's `models[]`."""
    if m.backend == "http_api":
        api = m.api
        version = m.version or (api.vendor_model if api and api.vendor_model else "-")
        where = "API" + (" (simulated vendor)" if api and api.simulated is not None else "")
    else:
        version = m.version or m.weights or "-"
        where = "Self-hosted (" + ", ".join(m.providers) + ")"
    return {
        "version": version,
        "type": "Open Source" if m.kind == "open" else "Closed Source",
        "provider_label": where,
        "price_label": _price(cfg, m),
    }


def models_table(s: Summary) -> Table:
    """Model | Version | Type | Provider | Price, in config order (the post's first table)."""
    t = Table("models", "The models", ["Model", "Version", "Type", "Provider", "Price"])
    for m in s.get("models", []):
        t.rows.append(
            [
                m["display_name"],
                m.get("version") or "-",
                m.get("type") or "-",
                m.get("provider_label") or "-",
                m.get("price_label") or "-",
            ]
        )
    t.notes.append(
        "Version: the config's `version`, else the weights id (open models) or the vendor's model "
        "name (APIs). Prices are the configured list prices, dated in the Prices table."
    )
    return t
