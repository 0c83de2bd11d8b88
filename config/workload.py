"""The workload: niches with their prompt banks, the traffic pattern, SLOs."""

from __future__ import annotations

from typing import Annotated, Literal, Self, get_args

from pydantic import Field, model_validator

from config._base import Name, Strict

__all__ = [
    "QUALITY_METRICS",
    "REPLAY_FILLABLE",
    "ConditioningConfig",
    "NicheConfig",
    "QualityMetric",
    "SloConfig",
    "TrafficConfig",
]

# Per-image scores a niche's quality floor may name. Each is a column of the scoring stage's
# image_scores.parquet (evaluation.goodput.METRICS maps them); a metric that does not
# apply to an image (clip_ref without a reference image, identity without a reference face,
# garment without a garment photo) is not checked for it. Add a metric here and there.
QualityMetric = Literal["clip_text", "clip_ref", "identity", "garment"]
QUALITY_METRICS: tuple[str, ...] = get_args(QualityMetric)

# Manifest fields a replay may draw from the config's mix when its log lacks them (`--fill`).
REPLAY_FILLABLE = ("model", "niche", "prompt")


class ConditioningConfig(Strict):
    """Per-job reference photos of an image-conditioned niche, and how its outputs are judged.

    `identity`: each job carries one or more photos of a person (a headshot made from the
    customer's own photos); outputs are scored by face-embedding similarity to them. `try-on`:
    each job carries a person and a garment photo; outputs are scored by the person's identity
    and by CLIP similarity to the garment.
    """

    kind: Literal["identity", "try-on"]
    subjects_dir: str | None = Field(
        default=None,
        description="Folder of photos of people that jobs are conditioned on. Left out: a set "
        "derived locally from the sample photos that ship inside scikit-image, labelled as such "
        "in the report.",
    )
    garments_dir: str | None = Field(
        default=None,
        description="try-on only: folder of garment photos. Left out: garments drawn locally, "
        "labelled synthetic.",
    )
    consent: str | None = Field(
        default=None,
        max_length=2_000,
        description="Consent and licence note for the photos in subjects_dir/garments_dir "
        "(who agreed to what, or the licence); required with either folder, recorded in the "
        "report.",
    )
    references_per_job: int = Field(
        default=1, ge=1, le=8, description="Subject photos a job carries (identity niches)."
    )
    local_set_size: int = Field(
        default=16, ge=2, le=64, description="Images in a locally built subject/garment set."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind != "try-on" and self.garments_dir is not None:
            raise ValueError(
                f"garments_dir is for kind 'try-on' only (this niche is {self.kind!r})"
            )
        folders = [k for k in ("subjects_dir", "garments_dir") if getattr(self, k)]
        if folders and not (self.consent or "").strip():
            raise ValueError(
                f"{' and '.join(folders)} set without a consent note: say whose photos these are "
                "and under what consent or licence they may be used (conditioning.consent)"
            )
        return self


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
    quality_floor: dict[QualityMetric, Annotated[float, Field(ge=-1, le=1)]] = Field(
        default_factory=dict,
        description="Least per-image score an image of this niche needs to count in "
        "quality-aware goodput, per named metric (cosines: clip_text to the prompt, clip_ref to "
        "the job's reference image where it has one, identity: the output face to the reference "
        "face, where the references hold one, an output with no face failing it; garment: CLIP "
        "of the garment photo to the output, try-on). Empty: no quality condition.",
    )
    conditioning: ConditioningConfig | None = Field(
        default=None,
        description="Image-conditioned niche: jobs carry reference photos (identity, try-on).",
    )

    @model_validator(mode="after")
    def _floor_applies(self) -> Self:
        # A floor on a metric the niche's jobs never have would never be checked: say so here
        # rather than report a goodput that silently ignored it.
        kind = self.conditioning.kind if self.conditioning else None
        if "identity" in self.quality_floor and kind is None:
            raise ValueError(
                "quality_floor.identity needs reference faces: set conditioning "
                "(kind 'identity' or 'try-on') on this niche"
            )
        if "garment" in self.quality_floor and kind != "try-on":
            raise ValueError(
                "quality_floor.garment is for try-on niches only (conditioning.kind 'try-on'; "
                f"this niche's is {kind!r})"
            )
        return self


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
    model_aliases: dict[str, Name] = Field(
        default_factory=dict,
        description="Replay: a log's model name -> the config's model name (e.g. 'flux-2-dev': "
        "flux2-dev). Names neither here nor in `models` are rejected row by row.",
    )
    niche_aliases: dict[str, Name] = Field(
        default_factory=dict,
        description="Replay: a log's niche name -> the config's niche name.",
    )
    replay_fill: list[Literal["model", "niche", "prompt"]] = Field(
        default_factory=list,
        description="Replay: fields drawn from the config's mix when the log lacks them. A "
        "field neither in the log nor listed here is an error, never silently invented.",
    )
    replay_jitter_s: float | Literal["auto"] | None = Field(
        default="auto",
        description="Replay: spread each row uniformly over this many seconds after its log "
        "time (log-time seconds, before the speed-up). 'auto': 1 s when every timestamp is a "
        "whole second and some seconds hold several rows (a 1-second log), else none. "
        "None or 0: never.",
    )
    max_in_flight: int = Field(default=256, ge=1, le=1_000_000, description="Client bound.")
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
        jitter = self.replay_jitter_s
        if isinstance(jitter, float) and not 0 <= jitter <= 3_600:
            raise ValueError(f"replay_jitter_s must be 'auto' or 0..3600 seconds, got {jitter}")
        for share in self.model_mix.values():
            if share < 0:
                raise ValueError("model_mix shares must be >= 0")
        return self


class SloConfig(Strict):
    error_budget: float = Field(
        default=0.01, ge=0, le=1, description="Share of requests allowed to fail."
    )
    percentile: float = Field(default=95, gt=0, lt=100, description="Percentile the SLO is on.")
    min_requests: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Fewest requests per model a saturation-sweep step needs before its verdict "
        "counts; the sweep sizes its steps to reach it.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Confidence of the percentile and proportion intervals (the sweep's verdict, "
        "the report's intervals).",
    )
