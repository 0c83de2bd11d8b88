"""Score a run: every image through the actor pool, then per-(model, niche) and per-model tables.

`score_run` writes into the run folder:
- `scores.parquet`: one row per (model, niche) and one "all" row per model (columns in
  docs/evaluation.md),
- `image_scores.parquet`: one row per scored image (CLIP cosines, prompt tokens, identity and
  garment scores of image-conditioned jobs, errors; quality floors are checked from it by
  `evaluation.goodput`),
- `weight_sensitivity.parquet`: the ±delta weight check per niche and overall,
- `score_meta.json`: networks and their labels, reference sets (with content hashes), the face
  embedder, the photo sets of conditioned niches, cache hits, skipped rows, corrupt images,
  throughput.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from config import EaselConfig
from evaluation.clip_score import resolve_clip_spec
from evaluation.composite import weight_sensitivity
from evaluation.conditioned_scores import (
    GarmentStats,
    IdentityStats,
    conditioned_columns,
)
from evaluation.features import resolve_feature_spec
from evaluation.humaneval.fit import fit_human
from evaluation.identity import FaceSpec, resolve_face_spec
from evaluation.pool import (
    CONDITIONED_RECORD_KEYS,
    GroupStats,
    ImageItem,
    ProgressPrinter,
    ScorerPool,
    ScorerSpec,
)
from evaluation.references import (
    load_cached_stats,
    reference_key,
    reference_set,
    save_cached_stats,
)
from evaluation.run_folder import job_references, load_run_config, load_run_images
from evaluation.score_table import (
    FLAG_SEP,
    Reference,
    TableContext,
    empty_group,
    model_row,
    niche_row,
)
from evaluation.subject_sets import conditioning_sets, folder_sha256

__all__ = ["SCORES_FILE", "ScoreResult", "score_run"]

SCORES_FILE = "scores.parquet"


@dataclass
class ScoreResult:
    """What `score_run` wrote: per-(model, niche) rows, per-model rows, per-image rows."""

    table: pd.DataFrame
    per_model: pd.DataFrame
    images: pd.DataFrame
    sensitivity: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def scores(self) -> pd.DataFrame:
        """Both tables as written to scores.parquet."""
        return pd.concat([self.table, self.per_model], ignore_index=True)


def score_run(
    run_dir: str | Path,
    cfg: EaselConfig | None = None,
    *,
    progress: bool = True,
    address: str | None = None,
) -> ScoreResult:
    """Score a run folder's images and write the score files into it.

    Args:
        run_dir: run folder (manifest.parquet, requests.parquet, images/).
        cfg: config; None reads the run's own config.yaml.
        progress: print progress lines to stderr.
        address: Ray address to join when Ray is not initialised yet; None starts a local Ray
            for the duration of the call. An initialised Ray is always reused.
    """
    t0 = time.monotonic()
    run = Path(run_dir)
    cfg = cfg or load_run_config(run)
    ev = cfg.evaluation
    images = load_run_images(run)
    rows = images.rows
    feature = resolve_feature_spec(ev)
    clip = resolve_clip_spec(ev)

    refs: dict[str, Reference] = {}
    unknown_niches: list[str] = []
    known = {n.name: n for n in cfg.niches}
    for niche in sorted(rows["niche"].unique()):
        if niche not in known:
            unknown_niches.append(niche)
            continue
        refset = reference_set(known[niche], ev)
        key = reference_key(refset, feature)
        cached = load_cached_stats(niche, key)
        refs[niche] = Reference(refset, key, cached, cached is not None)
    conditioned = {n.name: n.conditioning for n in cfg.niches if n.conditioning is not None}
    kinds = {name: c.kind for name, c in conditioned.items()}
    photo_sets = [
        ps.to_dict()
        for name in sorted(set(rows["niche"]) & set(conditioned))
        for ps in conditioning_sets(known[name])
    ]
    face = _face_spec(cfg, rows, kinds)
    used: dict[str, dict[str, set[str]]] = {}

    records: list[dict[str, Any]] = []
    read_errors: list[dict[str, Any]] = []
    state_groups: dict[tuple[str, ...], GroupStats] = {}
    devices: list[str] = []
    # images are read lazily as the pool asks for batches: memory stays bounded
    n_items = len(rows) + sum(len(r.refset.files) for r in refs.values() if r.stats is None)
    start_s = score_s = 0.0
    if n_items:
        started = _ensure_ray(address)
        try:
            spec = ScorerSpec(feature=feature, clip=clip, face=face)
            t_start = time.monotonic()
            with ScorerPool(
                spec, actors=ev.actors, num_cpus=ev.actor_num_cpus, num_gpus=ev.num_gpus
            ) as pool:
                start_s = time.monotonic() - t_start
                t_score = time.monotonic()
                devices = pool.devices
                printer = ProgressPrinter(n_items) if progress else None
                items = _items(rows, refs, read_errors, run, kinds, used)
                records = pool.score(items, batch_size=ev.batch_size, progress=printer)
                score_s = time.monotonic() - t_score
                state_groups = pool.state().groups
        finally:
            if started:
                import ray

                ray.shutdown()

    for niche, ref in refs.items():
        if ref.stats is None:
            group = state_groups.get(("ref", niche))
            if group is None or group.features.n < 2:
                continue
            ref.stats = group.features
            save_cached_stats(niche, ref.key, ref.stats)

    image_df = _image_table(rows, records, read_errors)
    human = fit_human(run, cfg) if (run / "humaneval" / "votes.sqlite").is_file() else None
    dim = feature.dim
    ctx = TableContext(cfg, feature, clip, refs, human)
    pairs = sorted(set(zip(rows["model"], rows["niche"], strict=True)))
    face_label = face.label if face else None
    table = pd.DataFrame(
        [
            _with_conditioned(
                niche_row(ctx, m, n, state_groups.get(("gen", m, n)) or empty_group(dim), image_df),
                [state_groups[k] for k in [("gen", m, n)] if k in state_groups],
                image_df[(image_df["model"] == m) & (image_df["niche"] == n)],
                cfg,
                face_label,
            )
            for m, n in pairs
        ]
    )
    per_model = pd.DataFrame(
        [
            _with_conditioned(
                model_row(ctx, m, state_groups, image_df),
                [g for k, g in state_groups.items() if k[0] == "gen" and k[1] == m],
                image_df[image_df["model"] == m],
                cfg,
                face_label,
            )
            for m in sorted(rows["model"].unique())
        ]
    )
    for extra in unknown_niches:
        print(f"easel score: niche {extra!r} is not in the config: no reference set, no FID")
    scores = pd.concat([table, per_model], ignore_index=True)
    sens = (
        weight_sensitivity(scores[scores["composite"].notna()], ev.weights, ev.sensitivity_delta)
        if not scores.empty
        else pd.DataFrame()
    )
    meta = {
        "feature_net": {
            "label": feature.label,
            "key": feature.key,
            "comparable": feature.comparable,
            "not_comparable_because": feature.not_comparable_because,
            "resize_policy": feature.resize_policy,
            "dim": feature.dim,
        },
        "clip": {"label": clip.label, "key": clip.key, "comparable": clip.comparable},
        "references": {
            n: {
                "label": r.refset.label,
                "synthetic": r.refset.synthetic,
                "key": r.key,
                "cached": r.cached,
                "n": r.stats.n if r.stats else 0,
                "folder": r.refset.folder,
                "sha256": folder_sha256(r.refset.files),
            }
            for n, r in refs.items()
        },
        "face_embedder": (
            {"kind": face.kind, "label": face.label, "key": face.key} if face else None
        ),
        "conditioning_sets": photo_sets,
        "references_used": {
            niche: {role: _set_digest(hashes) for role, hashes in sorted(by_role.items())}
            for niche, by_role in sorted(used.items())
        },
        "unknown_niches": unknown_niches,
        "skipped": images.skipped,
        "missing_images": images.missing,
        "errors": [
            {"job_id": e["job_id"], "error": e["error"]}
            for e in image_df.to_dict("records")
            if isinstance(e["error"], str)
        ],
        "images_scored": int(image_df["ok"].sum()) if not image_df.empty else 0,
        "items_sent": n_items,
        "reference_errors": [
            {"niche": r["group"][1], "file": r["item_id"], "error": r["error"]}
            for r in records
            if r["group"][0] == "ref" and not r["ok"]
        ],
        "actor_start_seconds": start_s,
        "scoring_seconds": score_s,
        "images_per_second": n_items / score_s if n_items and score_s > 0 else None,
        "actors": ev.actors,
        "devices": devices,
        "human_votes": human.n_votes if human else 0,
        "ranking_stable": bool(sens["same_ranking"].all()) if not sens.empty else None,
        "seconds": time.monotonic() - t0,
    }
    scores.to_parquet(run / SCORES_FILE, index=False)
    image_df.to_parquet(run / "image_scores.parquet", index=False)
    sens.to_parquet(run / "weight_sensitivity.parquet", index=False)
    (run / "score_meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return ScoreResult(table, per_model, image_df, sens, meta, run / SCORES_FILE)


# --- items in -----------------------------------------------------------------------------------


def _items(
    rows: pd.DataFrame,
    refs: dict[str, Reference],
    errors: list[dict[str, Any]],
    run: Path,
    kinds: dict[str, str],
    used: dict[str, dict[str, set[str]]],
) -> Iterator[ImageItem]:
    """Reference images first, then each job's image with its prompt and reference photos.

    Unreadable references are recorded in `errors` (the job is still scored); `used` collects,
    per niche and role, the hashes of the reference photos the jobs carried.
    """
    for niche, ref in refs.items():
        if ref.stats is None:
            for path in ref.refset.files:
                yield ImageItem(
                    item_id=Path(path).name, group=("ref", niche), data=Path(path).read_bytes()
                )
    for r in rows.itertuples(index=False):
        try:
            data = Path(r.path).read_bytes()
        except OSError as exc:
            errors.append({"item_id": r.job_id, "error": f"unreadable image: {exc}"})
            continue
        jr = job_references(r, run, kinds.get(r.niche))
        if jr.errors:
            errors.append({"item_id": r.job_id, "error": "; ".join(jr.errors)})
        for role, photos in (("faces", jr.faces), ("garments", jr.garments)):
            for photo in photos:
                hashes = used.setdefault(r.niche, {}).setdefault(role, set())
                hashes.add(hashlib.sha256(photo).hexdigest())
        yield ImageItem(
            item_id=r.job_id,
            group=("gen", r.model, r.niche),
            data=data,
            prompt=r.prompt,
            reference=jr.first,
            faces=jr.faces,
            garments=jr.garments,
        )


def _face_spec(cfg: EaselConfig, rows: pd.DataFrame, kinds: dict[str, str]) -> FaceSpec | None:
    """The face embedder, resolved (and checked) only when a job may carry a reference face."""
    if rows.empty:
        return None
    maybe = rows["niche"].isin(list(kinds)) | rows["reference_roles"].notna()
    has_refs = rows["reference_images"].notna() | rows["reference_image"].notna()
    return resolve_face_spec(cfg.evaluation) if bool((maybe & has_refs).any()) else None


def _with_conditioned(
    row: dict[str, Any],
    groups: list[GroupStats],
    mine: pd.DataFrame,
    cfg: EaselConfig,
    face_label: str | None,
) -> dict[str, Any]:
    """A score row with its identity and garment columns and flags added."""
    identity, garment = IdentityStats(), GarmentStats()
    for g in groups:
        identity, garment = identity.merge(g.identity), garment.merge(g.garment)
    key = f"conditioned/{row['model']}/{row['niche']}".encode()
    seed = cfg.seed + int(hashlib.sha256(key).hexdigest()[:8], 16)
    cols, flags = conditioned_columns(
        identity, garment, mine, draws=cfg.evaluation.bootstrap, seed=seed, face_label=face_label
    )
    row.update(cols)
    if flags:
        row["flags"] = FLAG_SEP.join([f for f in (row["flags"], *flags) if f])
    return row


def _set_digest(hashes: set[str]) -> dict[str, Any]:
    """Distinct photos and one SHA-256 over their sorted hashes."""
    h = hashlib.sha256()
    for x in sorted(hashes):
        h.update(x.encode())
    return {"n_distinct": len(hashes), "sha256": h.hexdigest()}


# What the pool records per image, as image_scores.parquet keeps it.
_RECORD_COLUMNS = (
    "ok",
    "error",
    "clip_text",
    "clip_ref",
    "prompt_tokens",
    "prompt_truncated",
    *CONDITIONED_RECORD_KEYS,
)


def _image_table(
    rows: pd.DataFrame, records: list[dict[str, Any]], read_errors: list[dict[str, Any]]
) -> pd.DataFrame:
    rec = pd.DataFrame([r for r in records if r["group"][0] == "gen"])
    if rec.empty:
        rec = pd.DataFrame(columns=["item_id", *_RECORD_COLUMNS])
    rec = rec.rename(columns={"item_id": "job_id"}).drop(columns=["group"], errors="ignore")
    base = rows[["job_id", "model", "niche", "prompt"]]
    out = base.merge(rec, on="job_id", how="left")
    read: dict[str, str] = {}
    for e in read_errors:
        read[e["item_id"]] = "; ".join(x for x in (read.get(e["item_id"]), e["error"]) if x)
    out["ok"] = out["ok"].astype("boolean").fillna(False)
    # reference-decoding errors leave the image scored; file-read errors leave it unscored
    out["error"] = [
        "; ".join(x for x in (err, read.get(j)) if isinstance(x, str)) or None
        for j, err in zip(out["job_id"], out["error"], strict=True)
    ]
    for col, dtype in _CONDITIONED_DTYPES.items():  # nulls where a job had no such reference
        out[col] = pd.array([None if pd.isna(v) else v for v in out[col]], dtype=dtype)
    return out[["job_id", "model", "niche", "prompt", *_RECORD_COLUMNS]]


_CONDITIONED_DTYPES = {
    "identity_refs": "Int64",
    "identity_ref_faces": "Int64",
    "face_found": "boolean",
    "identity_cos": "Float64",
    "garment_cos": "Float64",
}


def _ensure_ray(address: str | None) -> bool:
    """Start (or join) Ray unless it is up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    return True
