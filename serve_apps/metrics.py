"""easel's own Prometheus metrics, beside Ray Serve's.

They are `ray.serve.metrics` objects (`ray.util.metrics` with Serve's deployment/replica/app
tags added), so they appear on each node's Ray metrics endpoint (the Prometheus port Ray
prints at start, `metrics_export_port`) together with Serve's `ray_serve_*` series, all prefixed
`ray_`. Created lazily inside the Serve replica that records them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["ingress_metrics", "replica_metrics"]

_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
_BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 32, 64]


@cache
def ingress_metrics() -> dict[str, Any]:
    """Request counts and end-to-end latency, by model, provider and HTTP status."""
    from ray.serve import metrics

    return {
        "requests": metrics.Counter(
            "easel_requests_total",
            description="Requests answered by the easel ingress, by model, provider and status.",
            tag_keys=("model", "provider", "status"),
        ),
        "latency": metrics.Histogram(
            "easel_request_latency_ms",
            description="End-to-end latency inside the ingress, in milliseconds.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("model", "provider"),
        ),
        "failovers": metrics.Counter(
            "easel_failovers_total",
            description="Attempts moved to another provider, by model and the provider left.",
            tag_keys=("model", "provider", "reason"),
        ),
    }


@cache
def replica_metrics() -> dict[str, Any]:
    """Queue and inference time, batch size and cold starts of a model replica."""
    from ray.serve import metrics

    return {
        "queue": metrics.Histogram(
            "easel_queue_ms",
            description="Time a request waited in the model replica before its batch started.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("model", "provider"),
        ),
        "inference": metrics.Histogram(
            "easel_inference_ms",
            description="Forward-pass (or vendor) time per batch.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("model", "provider"),
        ),
        "batch_size": metrics.Histogram(
            "easel_batch_size",
            description="Images per forward pass.",
            boundaries=_BATCH_BOUNDARIES,
            tag_keys=("model", "provider"),
        ),
        "cold_starts": metrics.Counter(
            "easel_cold_starts_total",
            description="Requests served by a replica's first batch (the cold start).",
            tag_keys=("model", "provider"),
        ),
    }
