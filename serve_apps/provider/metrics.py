"""The model replicas' own Prometheus metrics, beside Ray Serve's, on each node's Ray endpoint.

They are `ray.serve.metrics` objects (`ray.util.metrics` with Serve's deployment/replica/app
tags added), so they appear on each node's Ray metrics endpoint (the Prometheus port Ray prints
at start, `metrics_export_port`) together with Serve's `ray_serve_*` series, all prefixed `ray_`.
The gateway's metrics (requests, failovers, health per provider) are on the gateway's own
`/metrics` (`serve_apps.gateway.metrics`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["replica_metrics"]

_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
_BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 32, 64]
_TAGS = ("model", "provider")


def _histogram(name: str, description: str, boundaries: list[float] = _MS_BOUNDARIES) -> Any:
    from ray.serve import metrics

    return metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=_TAGS)


@cache
def replica_metrics() -> dict[str, Any]:
    """Queue and inference time, batch size and cold starts of a model replica."""
    from ray.serve import metrics

    return {
        "queue": _histogram(
            "easel_queue_ms",
            "Time a request waited in the model replica before its batch started.",
        ),
        "inference": _histogram("easel_inference_ms", "Forward-pass time per batch."),
        "batch_size": _histogram(
            "easel_batch_size", "Images per forward pass.", boundaries=_BATCH_BOUNDARIES
        ),
        "cold_starts": metrics.Counter(
            "easel_cold_starts_total",
            description="Requests served by a replica's first batch (the cold start).",
            tag_keys=_TAGS,
        ),
    }
