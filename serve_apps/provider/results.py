"""What a model replica answers: an image or a typed error, never an exception for bad input.

Only infrastructure failures (a dead replica, a full queue) reach the provider's ingress as
exceptions; everything the request or the model did wrong comes back as an `ErrorResult`.
Both are plain frozen dataclasses, so they cross Ray's process boundary by pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve_apps.api.outcomes import Outcome

__all__ = ["ErrorResult", "ImageResult", "ReplicaResult"]


@dataclass(frozen=True)
class ImageResult:
    """One image and how it was made."""

    png: bytes = field(repr=False)
    queue_ms: float  # waited in the replica before its forward pass began
    inference_ms: float  # the forward pass it shared
    batch_size: int  # images in that forward pass
    cold_start: bool  # made by the replica's first forward pass
    replica: str  # "<model>--<provider>#<replica id>"


@dataclass(frozen=True)
class ErrorResult:
    """A request the replica did not turn into an image, and whose fault that was."""

    status: int
    code: str
    message: str
    outcome: Outcome  # `client_error` (the request's fault) or `error` (the replica's)
    retry_after: float | None = None


ReplicaResult = ImageResult | ErrorResult
