"""`easel compare`: how far a metric may move between two runs before it is a regression."""

from __future__ import annotations

from pydantic import Field

from config._base import Strict

__all__ = ["CompareConfig"]


class CompareConfig(Strict):
    """Tolerances of the regression gate; a metric regresses when it moves the wrong way by more
    than its tolerance and the interval of the difference excludes zero."""

    latency_rel: float = Field(
        default=0.25,
        ge=0,
        le=100,
        description="Relative rise of a latency percentile (p50, p95, p99 over all requests) "
        "tolerated, e.g. 0.25 = +25 %.",
    )
    goodput_abs: float = Field(
        default=0.05, ge=0, le=1, description="Drop in the share of requests within the SLO."
    )
    error_rate_abs: float = Field(
        default=0.02, ge=0, le=1, description="Rise in the share of failed requests."
    )
    cost_rel: float = Field(
        default=0.25,
        ge=0,
        le=100,
        description="Relative rise of the busy-only cost per image (GPU time spent making "
        "images) tolerated.",
    )
    cost_held_rel: float = Field(
        default=0.5,
        ge=0,
        le=100,
        description="Relative rise of the all-held cost per image tolerated; looser, because "
        "it also counts start-up and idle time, which move with a run's length and the "
        "machine's load.",
    )
    composite_abs: float = Field(
        default=3.0, ge=0, le=100, description="Drop of the composite quality score, in points."
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Confidence of the difference intervals."
    )
