"""How images are scored (metrics, composite anchors) and priced."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from config._base import Strict

__all__ = [
    "CompositeAnchors",
    "CostConfig",
    "EvaluationConfig",
]


class CompositeAnchors(Strict):
    """Anchored 0-100 mappings, fixed in the config so scores compare across runs."""

    fid_best: float = Field(default=0.0, ge=0, description="FID that maps to 100.")
    fid_worst: float = Field(default=300.0, gt=0, description="FID that maps to 0.")
    clip_worst: float = Field(default=0.0, ge=-1, le=1, description="Cosine that maps to 0.")
    clip_best: float = Field(default=0.35, ge=-1, le=1, description="Cosine that maps to 100.")
    human_elo_span: float = Field(
        default=400.0, gt=0, description="Elo gap between a 0 and a 100 human score."
    )
    clip_ref_worst: float = Field(
        default=0.5,
        ge=-1,
        le=1,
        description="Image-to-reference-image cosine that maps to 0 (image pairs sit higher "
        "than image-text pairs, hence anchors of their own).",
    )
    clip_ref_best: float = Field(
        default=0.95, ge=-1, le=1, description="Image-to-reference-image cosine that maps to 100."
    )
    human_anchor_model: str | None = Field(
        default=None,
        description="Model whose Bradley-Terry strength maps to a human score of 50. Required "
        "for the human score to enter the composite: without it (or in a scope where the anchor "
        "has no votes) scores are relative to the run's mean model, so adding a weak model would "
        "raise everyone's; they are still reported, flagged, but left out of the composite.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.fid_best >= self.fid_worst:
            raise ValueError("fid_best must be below fid_worst")
        if self.clip_worst >= self.clip_best:
            raise ValueError("clip_worst must be below clip_best")
        if self.clip_ref_worst >= self.clip_ref_best:
            raise ValueError("clip_ref_worst must be below clip_ref_best")
        return self


class EvaluationConfig(Strict):
    feature_weights: str | None = Field(
        default=None,
        description="Local Inception-v3 FID weights file. Left out: a small local network, "
        "labelled 'not comparable to published FID'.",
    )
    clip_weights: str | None = Field(
        default=None,
        description="Local open_clip checkpoint. Left out: a small local CLIP, labelled as such.",
    )
    clip_model: str = Field(default="ViT-B-32", description="open_clip architecture name.")
    image_size: int = Field(default=64, ge=16, le=1024, description="Resize before features.")
    min_fid_n: int = Field(
        default=2_000, ge=2, le=10_000_000, description="Below this N, FID is flagged (use KID)."
    )
    batch_size: int = Field(default=32, ge=1, le=4_096)
    actors: int = Field(default=2, ge=1, le=1_024)
    num_gpus: float = Field(default=0, ge=0, le=16, description="GPUs per scorer actor.")
    human_pairs_per_model_pair: int = Field(default=500, ge=1, le=1_000_000)
    reference_images_per_niche: int = Field(
        default=10_000,
        ge=2,
        le=1_000_000,
        description="Most reference images per niche (a folder's first, by name; a synthetic "
        "set's size). FID needs more than the feature network's dimension (128 tiny, 2048 "
        "Inception) in both sets; below that FID is n/a and KID is shown.",
    )
    bootstrap: int = Field(default=200, ge=10, le=100_000, description="Bootstrap resamples.")
    weights: dict[Literal["fid", "clip", "human"], float] = Field(
        default_factory=lambda: {"fid": 0.4, "clip": 0.3, "human": 0.3}
    )
    anchors: CompositeAnchors = Field(default_factory=CompositeAnchors)
    images_saved_per_model: int = Field(default=16, ge=0, le=1_000_000)
    actor_num_cpus: float = Field(
        default=1, gt=0, le=256, description="CPUs per scorer actor (also its torch threads)."
    )
    clip_ref_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the CLIP score taken by image-to-reference similarity for jobs "
        "that carry a reference image; the rest is image-to-prompt.",
    )
    kid_subsets: int = Field(default=100, ge=1, le=10_000, description="KID subsets drawn.")
    kid_subset_size: int = Field(
        default=1_000,
        ge=2,
        le=1_000_000,
        description="Images per KID subset. A smaller set caps it; the size used is recorded "
        "(scores.parquet kid_subset_size) and a capped row is flagged.",
    )
    face_embedder: Literal["dlib", "arcface-onnx"] = Field(
        default="dlib",
        description="Identity preservation's face embedding: 'dlib' (the pretrained 128-d ResNet "
        "of face-recognition-models, weights inside the package) or 'arcface-onnx' (a local "
        "ArcFace ONNX file in face_weights; needs onnxruntime).",
    )
    face_weights: str | None = Field(
        default=None, description="Local ArcFace ONNX weights, for face_embedder 'arcface-onnx'."
    )
    face_min_side: int = Field(
        default=160,
        ge=32,
        le=2_048,
        description="Images whose short side is below this are upscaled before face detection "
        "(dlib's detector misses faces under ~40 px).",
    )
    sensitivity_delta: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description="Weight-sensitivity check: each composite weight moved by +/- this much "
        "(others rescaled to keep the sum at 1); reports whether the model ranking survives.",
    )

    @model_validator(mode="after")
    def _weights(self) -> Self:
        if self.face_embedder == "arcface-onnx" and not self.face_weights:
            raise ValueError("face_embedder 'arcface-onnx' needs face_weights (a local .onnx file)")
        if self.face_weights and self.face_embedder != "arcface-onnx":
            raise ValueError("face_weights is read only with face_embedder 'arcface-onnx'")
        if set(self.weights) != {"fid", "clip", "human"}:
            raise ValueError("weights needs exactly the keys fid, clip, human")
        if any(w < 0 for w in self.weights.values()) or abs(sum(self.weights.values()) - 1) > 1e-6:
            raise ValueError(f"weights must be >= 0 and sum to 1, got {self.weights}")
        return self


class CostConfig(Strict):
    orchestration_overhead_per_image: float = Field(
        default=0.0005, ge=0, le=100, description="USD added per image for orchestration."
    )
    platform_fee_pct: float = Field(
        default=10.0, ge=0, le=1_000, description="Percent added on top of compute."
    )
