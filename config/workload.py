"""The workload: niches with their prompt banks, the traffic pattern, SLOs."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from config._base import Name, Strict

__all__ = [
    "NicheConfig",
    "SloConfig",
    "TrafficConfig",
]


class NicheConfig(Strict):
    """A use case with its prompt bank and reference images."""

    name: Name
    display_name: str = Field(min_length=1)
    prompts: list[Annotated[str, Field(min_length=1, max_length=4_000)]] = Field(min_length=1)
    reference_dir: str | None = Field(
        default=None,
        description="Folder of reference images. Left out: a synthetic set is generated locally "
        "and labelled synthetic in the report.",
    )
    weight: float = Field(default=1.0, gt=0, le=1_000, description="Share of traffic.")


class TrafficConfig(Strict):
    """The open-loop arrival process of a benchmark run."""

    pattern: Literal["poisson", "gamma", "diurnal", "burst", "ramp", "replay"] = "poisson"
    jobs: int = Field(default=300, ge=1, le=10_000_000, description="Requests in the manifest.")
    rate: float = Field(default=5.0, gt=0, le=100_000, description="Mean requests per second.")
    burstiness: float = Field(
        default=1.0, gt=0, le=100, description="Gamma shape; 1 is Poisson, below 1 is burstier."
    )
    peak_ratio: float = Field(
        default=3.0, ge=1, le=1_000, description="Diurnal peak / trough, or burst rate / base."
    )
    burst_every_s: float = Field(default=20, gt=0, le=86_400)
    burst_length_s: float = Field(default=3, gt=0, le=86_400)
    ramp_to: float | None = Field(default=None, gt=0, le=100_000, description="Ramp's end rate.")
    replay_path: str | None = Field(default=None, description="Production log for 'replay'.")
    speedup: float = Field(default=1.0, gt=0, le=100_000, description="Replay speed-up factor.")
    model_mix: dict[str, float] = Field(
        default_factory=dict, description="Share of traffic per model; empty means even."
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Load-test client bound on open requests; None: memory decides.",
    )
    warmup_requests: int = Field(
        default=1, ge=0, le=10_000, description="Requests per model sent before the clock starts."
    )
    dispatchers: int = Field(
        default=2, ge=1, le=256, description="Load-test dispatcher actors sending on the schedule."
    )
    request_timeout_s: float = Field(
        default=120, gt=0, le=3_600, description="Load-test client timeout per request, seconds."
    )
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _replay(self) -> Self:
        if self.pattern == "replay" and not self.replay_path:
            raise ValueError("pattern 'replay' needs replay_path")
        for share in self.model_mix.values():
            if share < 0:
                raise ValueError("model_mix shares must be >= 0")
        return self


class SloConfig(Strict):
    error_budget: float = Field(
        default=0.01, ge=0, le=1, description="Share of requests allowed to fail."
    )
    percentile: float = Field(default=95, gt=0, lt=100, description="Percentile the SLO is on.")
