"""A plausible run folder written from numbers, so cost and report are tested without Ray.

The files follow the stages' contracts: manifest (load_tests.manifest), requests
(load_tests.records.REQUEST_SCHEMA), usage (the gateway's /v1/admin/usage rows), scores
(evaluation's per-(model, niche) and per-model rows) and image_scores (per-image CLIP cosines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from config import EaselConfig, load_config, parse_config


def config_with(**model_updates: dict[str, Any]) -> EaselConfig:
    """The default config with per-model field updates, e.g. flux2-dev={"tflop_per_step": 280}."""
    data = load_config().model_dump(mode="json")
    for m in data["models"]:
        m.update(model_updates.get(m["name"], {}))
    return parse_config(data, "<test>")


def make_run(
    run_dir: Path,
    cfg: EaselConfig,
    *,
    jobs_per_pair: int = 8,
    latency_ms: dict[str, float] | None = None,
    failures_every: int = 0,
    seed: int = 0,
    with_scores: bool = True,
    with_usage: bool = True,
) -> Path:
    """Write config.yaml, manifest/requests/usage/scores Parquet files for `cfg` into `run_dir`.

    Args:
        jobs_per_pair: requests per (model, niche).
        latency_ms: median latency per model (default 200 ms each); latencies are log-normal.
        failures_every: every n-th request fails with a 503 (0: none fail).
    """
    from load_tests.manifest import write_manifest
    from load_tests.records import REQUEST_SCHEMA

    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    latency_ms = latency_ms or {}

    manifest, requests, image_scores = [], [], []
    images: dict[tuple[str, str], int] = {}
    i = 0
    for model in cfg.models:
        for niche in cfg.niches:
            for k in range(jobs_per_pair):
                job = f"job-{i:05d}"
                arrival = i * 0.25
                manifest.append(
                    {
                        "job_id": job,
                        "arrival_s": arrival,
                        "model": model.name,
                        "niche": niche.name,
                        "prompt": niche.prompts[k % len(niche.prompts)],
                        "width": 64,
                        "height": 64,
                        "steps": model.steps.default,
                        "seed": i,
                    }
                )
                provider = model.providers[k % len(model.providers)]
                ok = not (failures_every and (i + 1) % failures_every == 0)
                lat = float(latency_ms.get(model.name, 200.0) * rng.lognormal(0, 0.3))
                rec = {
                    "job_id": job,
                    "row": i,
                    "model": model.name,
                    "niche": niche.name,
                    "provider": provider,
                    "replica": f"{model.name}-{provider}-0",
                    "ok": ok,
                    "status": 200 if ok else 503,
                    "error": None if ok else "overloaded",
                    "error_class": "ok" if ok else "http_503",
                    "scheduled_s": arrival,
                    "sent_s": arrival + 0.001,
                    "first_byte_s": arrival + lat / 1000 - 0.001,
                    "done_s": arrival + lat / 1000,
                    "latency_ms": lat,
                    "service_ms": lat - 1,
                    "queue_ms": 1.0,
                    "inference_ms": lat - 5,
                    "batch_size": 1,
                    "cold_start": k == 0,
                    "image_sha256": "0" * 64 if ok else None,
                    "image_path": f"images/{job}.png" if ok else None,
                }
                requests.append(rec)
                if ok:
                    images[(model.name, provider)] = images.get((model.name, provider), 0) + 1
                    image_scores.append(
                        {
                            "job_id": job,
                            "model": model.name,
                            "niche": niche.name,
                            "prompt": niche.prompts[k % len(niche.prompts)],
                            "ok": True,
                            "error": None,
                            "clip_text": float(rng.normal(0.2, 0.05)),
                            "clip_ref": None,
                            "prompt_tokens": 20,
                            "prompt_truncated": False,
                        }
                    )
                i += 1
    write_manifest(pa.Table.from_pylist(manifest), run_dir / "manifest.parquet")
    pq.write_table(
        pa.Table.from_pylist(requests, schema=REQUEST_SCHEMA), run_dir / "requests.parquet"
    )

    if with_usage:
        usage = []
        for model in cfg.models:
            for provider in model.providers:
                usage.append(
                    {
                        "replica": f"{model.name}-{provider}-0",
                        "model": model.name,
                        "provider": provider,
                        "gpus": 0 if model.backend == "http_api" else 1,
                        "started_s": 0.0,
                        "load_s": 5.0,
                        "last_seen_s": 65.0,
                        "busy_s": 20.0,
                        "batches": images.get((model.name, provider), 0),
                        "images": images.get((model.name, provider), 0),
                        "alive": True,
                    }
                )
        pq.write_table(pa.Table.from_pylist(usage), run_dir / "usage.parquet")

    if with_scores:
        # Quality does not depend on the request seed: two runs of one config score alike.
        rng = np.random.default_rng(0)
        rows = []
        for j, model in enumerate(cfg.models):
            for niche in [*cfg.niches, None]:
                base = 40.0 + 8 * j + (0 if niche is None else rng.uniform(-3, 3))
                n = jobs_per_pair * (len(cfg.niches) if niche is None else 1)
                rows.append(
                    {
                        "model": model.name,
                        "niche": "all" if niche is None else niche.name,
                        "scope": "model" if niche is None else "niche",
                        "n": n,
                        "n_ref": 64,
                        "n_errors": 0,
                        "fid": 300 - 3 * base,
                        "fid_flag": f"N={n} below min_fid_n=2000: FID is biased at small N",
                        "kid_mean": 0.05,
                        "kid_std": 0.01,
                        "kid_subset_size": n,
                        "clipscore": 20.0,
                        "fid_na": None,
                        "human_anchored": False,
                        "clip_text": 0.2,
                        "clip_ref": None,
                        "fid_score_0_100": base,
                        "fid_score_lo": base - 2,
                        "fid_score_hi": base + 2,
                        "clip_score_0_100": base + 5,
                        "clip_score_lo": base + 3,
                        "clip_score_hi": base + 7,
                        "human_score_0_100": None,
                        "human_lo": None,
                        "human_hi": None,
                        "human_n_votes": 0,
                        "composite": base + 2,
                        "composite_lo": base - 1,
                        "composite_hi": base + 5,
                        "composite_components": "fid+clip",
                        "feature_net": "small local net (test)",
                        "clip_model": "small local CLIP (test)",
                        "reference": "synthetic",
                        "reference_synthetic": True,
                        "flags": "no human votes: composite over fid+clip (weights renormalised)"
                        + ("; only in niche rows" if niche is not None else ""),
                    }
                )
        pq.write_table(pa.Table.from_pylist(rows), run_dir / "scores.parquet")
        pq.write_table(pa.Table.from_pylist(image_scores), run_dir / "image_scores.parquet")
    return run_dir
