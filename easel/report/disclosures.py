"""The statements at the top of the report: everything simulated, tiny or flagged in the run."""

from __future__ import annotations

from typing import Any

from config import EaselConfig

__all__ = ["disclosures"]


def disclosures(cfg: EaselConfig, scores: list[dict[str, Any]] | None = None) -> list[str]:
    """Plain statements, for the top of the report, of everything simulated, tiny or flagged."""
    out: list[str] = []
    sim = [p.name for p in cfg.providers if p.simulated]
    if sim:
        every = "All" if len(sim) == len(cfg.providers) else f"{len(sim)} of {len(cfg.providers)}"
        out.append(
            f"{every} providers are SIMULATED ({', '.join(sim)}): Ray resources on the machine "
            "that ran the benchmark, not cloud GPUs. Their prices are the configured per-GPU-hour "
            "list prices (dated below), applied to the local replicas' wall time."
        )
    tiny = [m for m in cfg.models if m.tiny_recipe is not None]
    if tiny:
        out.append(
            f"{len(tiny)} open model(s) are TINY random-weight builds of the real diffusers "
            f"pipeline classes ({', '.join(m.display_name for m in tiny)}): their images are "
            "noise, so their quality scores say nothing about the real models, and their latency "
            "and cost are those of the tiny builds, not comparable to published figures."
        )
    cpu = [m for m in cfg.models if m.backend == "diffusers" and m.num_gpus == 0]
    if cpu:
        out.append(
            f"{len(cpu)} self-hosted model(s) ran on CPU (num_gpus = 0) and are priced as if each "
            "replica held its provider's GPUs for the same wall time."
        )
    api = [m for m in cfg.models if m.api is not None and m.api.simulated is not None]
    if api:
        out.append(
            f"{len(api)} closed model(s) are SIMULATED vendor APIs "
            f"({', '.join(m.display_name for m in api)}): local HTTP servers with configured "
            "latency and failure rates; the real client code calls them. Their cost is the "
            "configured price per image."
        )
    synth = [n.display_name for n in cfg.niches if n.reference_dir is None]
    if synth:
        out.append(
            f"Reference images are SYNTHETIC for {len(synth)} niche(s) ({', '.join(synth)}): "
            "generated locally, not curated photographs."
        )
    if cfg.evaluation.feature_weights is None:
        out.append(
            "FID/KID use a small local feature network, not Inception-v3: not comparable to "
            "published FID."
        )
    elif cfg.evaluation.image_size != 299:
        out.append(
            f"FID uses Inception-v3 at image_size {cfg.evaluation.image_size}: not comparable to "
            "published FID, which needs 299 px with clean-fid's resize."
        )
    if cfg.evaluation.clip_weights is None:
        out.append("CLIP scores use a small local CLIP, not a pretrained one.")
    if scores is not None:
        if scores and all(r.get("human_score") is None for r in scores):
            out.append(
                "No human votes: the composite is computed over FID and CLIP only (CLIP alone "
                "where FID is n/a) and flagged."
            )
        if any(r.get("fid_na") for r in scores):
            out.append(
                "FID is n/a where the images or the references do not outnumber the feature "
                "network's dimensions (their covariance would be rank-deficient and FID mostly "
                "bias); KID is shown there instead, and the composite leaves FID out."
            )
        if any(r.get("human_score") is not None and not r.get("human_anchored") for r in scores):
            out.append(
                "Some human scores are relative to this run's mean model (no anchor model with "
                "votes): they are reported but left out of the composite."
            )
        if any(r.get("fid_flag") for r in scores):
            out.append(
                f"FID at N < {cfg.evaluation.min_fid_n} images is biased upwards; KID is shown "
                "beside it and such figures are flagged."
            )
    return out
