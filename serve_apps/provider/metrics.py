"""The model replicas' Prometheus metrics, on each node's Ray endpoint beside Serve's own.

Batches are reported under **Ray Serve's own batch metrics** (`serve_actual_batch_size`,
`serve_batch_wait_time_ms`, `serve_batch_execution_time_ms`, `serve_batch_queue_length`,
`serve_batch_utilization_percent`, `serve_batches_processed`), with Serve's buckets and its
`function_name` tag, exactly as `@serve.batch` reports them: the replica's shape batcher
(`batcher.ShapeBatcher`) replaces `@serve.batch`, not its metrics, so Serve's dashboards and
alerts read an easel replica like any batched deployment (the deployment tag,
`<model>--<provider>`, says which). easel adds only what Serve has no series for: per-request
queue time and cold starts.

They are `ray.serve.metrics` objects (Serve's deployment/replica/application tags added), all
prefixed `ray_` on the Ray metrics endpoint (`metrics_export_port`). The gateway's metrics are
on its own `/metrics` (`serve_apps.gateway.metrics`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serve_apps.provider.batcher import BatchStats

__all__ = ["BATCH_FUNCTION", "record_batch", "replica_metrics"]

# `function_name` of Serve's batch metrics: the deployment method that batches.
BATCH_FUNCTION = "generate"
_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
_TAGS = ("model", "provider")


@cache
def replica_metrics() -> dict[str, Any]:
    """easel's own series: per-request queue time and cold starts of a model replica."""
    from ray.serve import metrics

    return {
        "queue": metrics.Histogram(
            "easel_queue_ms",
            description="Time a request waited in the model replica before its batch started.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=_TAGS,
        ),
        "cold_starts": metrics.Counter(
            "easel_cold_starts_total",
            description="Requests served by a replica's first batch (the cold start).",
            tag_keys=_TAGS,
        ),
    }


@cache
def _serve_batch_metrics() -> dict[str, Any]:
    """Serve's batch metrics, as `ray.serve.batching._BatchQueue` declares them."""
    from ray.serve._private import constants as c
    from ray.serve.metrics import Counter, Gauge, Histogram

    tags = ("function_name",)
    return {
        "wait": Histogram(
            "serve_batch_wait_time_ms",
            description="Time requests waited for batch to fill (in milliseconds).",
            boundaries=c.BATCH_WAIT_TIME_BUCKETS_MS,
            tag_keys=tags,
        ),
        "execution": Histogram(
            "serve_batch_execution_time_ms",
            description="Time to execute the batch function (in milliseconds).",
            boundaries=c.BATCH_EXECUTION_TIME_BUCKETS_MS,
            tag_keys=tags,
        ),
        "queue_length": Gauge(
            "serve_batch_queue_length",
            description="Number of requests waiting in the batch queue.",
            tag_keys=tags,
        ),
        "utilization": Histogram(
            "serve_batch_utilization_percent",
            description="Batch utilization as percentage "
            "(actual_batch_size / max_batch_size * 100).",
            boundaries=c.BATCH_UTILIZATION_BUCKETS_PERCENT,
            tag_keys=tags,
        ),
        "size": Histogram(
            "serve_actual_batch_size",
            description="The actual number of requests in each batch.",
            boundaries=c.BATCH_SIZE_BUCKETS,
            tag_keys=tags,
        ),
        "processed": Counter(
            "serve_batches_processed",
            description="Counter of batches executed.",
            tag_keys=tags,
        ),
    }


def record_batch(stats: BatchStats, max_batch_size: int, tags: dict[str, str]) -> None:
    """One forward pass into Serve's batch metrics; its requests' queue times into easel's."""
    m = _serve_batch_metrics()
    t = {"function_name": BATCH_FUNCTION}
    m["wait"].observe(stats.wait_ms, tags=t)
    m["execution"].observe(stats.execution_ms, tags=t)
    m["queue_length"].set(stats.queued_after, tags=t)
    m["utilization"].observe(stats.size / max_batch_size * 100, tags=t)
    m["size"].observe(stats.size, tags=t)
    m["processed"].inc(tags=t)
    queue = replica_metrics()["queue"]
    for q in stats.queue_ms:
        queue.observe(q, tags=tags)
