"""The report's image-conditioned part: identity preservation, try-on garments, the photo sets.

Built from scores.parquet's identity/garment columns and score_meta.json (the face embedder that
ran, the photo sets of conditioned niches and their hashes, the references the jobs carried), so
summary.json, report.md and report.html say the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from easel.report.cells import Table, display_names, fmt_num, fmt_pct

__all__ = [
    "conditioning_disclosures",
    "conditioning_section",
    "identity_table",
    "read_score_meta",
    "reference_set_hashes",
]

_KEYS = (
    "identity_jobs",
    "identity_n",
    "identity_faces",
    "identity_face_rate",
    "identity_face_rate_lo",
    "identity_face_rate_hi",
    "identity_cos",
    "identity_cos_lo",
    "identity_cos_hi",
    "garment_n",
    "garment_cos",
    "garment_cos_lo",
    "garment_cos_hi",
)


def read_score_meta(run_dir: Path) -> dict[str, Any] | None:
    """`<run_dir>/score_meta.json`, or None when scoring did not write it (or it is unreadable)."""
    path = Path(run_dir) / "score_meta.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def conditioning_section(
    scores: list[Mapping[str, Any]] | None, meta: Mapping[str, Any] | None
) -> dict[str, Any]:
    """summary.json's `conditioning`: per (model, niche) and per model rows, embedder, sets.

    Args:
        scores: scores.parquet's rows as written by evaluation (its column names).
        meta: score_meta.json.
    """
    meta = meta or {}
    rows = []
    for r in scores or []:
        if not (r.get("identity_jobs") or r.get("garment_n")):
            continue
        rows.append(
            {
                "model": r["model"],
                "niche": None if r.get("scope") == "model" else r.get("niche"),
                **{k: r.get(k) for k in _KEYS},
            }
        )
    embedder = (meta.get("face_embedder") or {}).get("label")
    return {
        "rows": rows,
        "face_embedder": embedder,
        "sets": list(meta.get("conditioning_sets") or []),
        "references_used": dict(meta.get("references_used") or {}),
        "clip_comparable": (meta.get("clip") or {}).get("comparable"),
    }


def conditioning_disclosures(section: Mapping[str, Any]) -> list[str]:
    """Statements for the top of the report about the photo sets conditioned jobs draw from."""
    local = [s for s in section.get("sets") or [] if s.get("synthetic")]
    if not local:
        return []
    names = ", ".join(f"{s['niche']} {s['role']} ({s['origin']})" for s in local)
    return [
        f"Reference photo sets of image-conditioned niches are built locally, not customer "
        f"photos: {names}. 'derived' sets are real faces from scikit-image's sample photos "
        "(low resolution); 'drawn' sets are synthetic."
    ]


def reference_set_hashes(meta: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """For the reproducibility block: every reference set a run scored against, with its hash."""
    meta = meta or {}
    out = []
    for niche, r in sorted((meta.get("references") or {}).items()):
        if r.get("sha256"):
            out.append(
                {
                    "niche": niche,
                    "role": "fid-references",
                    "n": r.get("n"),
                    "synthetic": r.get("synthetic"),
                    "sha256": r["sha256"],
                    "consent": None,
                }
            )
    for s in meta.get("conditioning_sets") or []:
        out.append({k: s.get(k) for k in ("niche", "role", "n", "synthetic", "sha256", "consent")})
    return out


def _ci(v: float | None, lo: float | None, hi: float | None, pct: bool) -> str:
    if v is None:
        return "n/a"
    f = (lambda x: fmt_pct(x, 0)) if pct else (lambda x: fmt_num(x, 3))
    return f(v) if lo is None or hi is None else f"{f(v)} [{f(lo)}, {f(hi)}]"


def identity_table(s: Mapping[str, Any]) -> Table:
    """Per (niche, model) and per model: face found, identity cosine, garment cosine."""
    c = s.get("conditioning") or {}
    names = display_names(s)
    niches = {n["name"]: n["display_name"] for n in s.get("niches", [])}
    t = Table(
        "identity",
        "Identity preservation and try-on (jobs with reference photos)",
        [
            "Niche",
            "Model",
            "N (jobs with a reference face)",
            "Face found [95 % CI]",
            "Identity cosine [95 % CI]",
            "Garment N",
            "Garment cosine [95 % CI]",
        ],
    )
    for r in c.get("rows") or []:
        t.rows.append(
            [
                "all" if r["niche"] is None else niches.get(r["niche"], r["niche"]),
                names.get(r["model"], r["model"]),
                str(r.get("identity_n") or 0),
                _ci(r["identity_face_rate"], r["identity_face_rate_lo"],
                    r["identity_face_rate_hi"], True),
                _ci(r["identity_cos"], r["identity_cos_lo"], r["identity_cos_hi"], False),
                str(r.get("garment_n") or 0),
                _ci(r["garment_cos"], r["garment_cos_lo"], r["garment_cos_hi"], False),
            ]
        )  # fmt: skip
    if c.get("face_embedder"):
        t.notes.append(f"Face embedder: {c['face_embedder']}.")
    if not t.rows:
        t.notes.append(
            "No job in this run carried reference photos: identity preservation and garment "
            "similarity were not measured."
        )
        return t
    t.notes.append(
        "Face found: share of outputs of jobs whose reference photos hold a face in which a "
        "face was detected (Wilson interval); an output without a face is a failure, never "
        "dropped. Identity cosine: output face against the mean reference face, over outputs "
        "with a face (bootstrap over prompts). Jobs whose reference photos hold no detectable "
        "face are left out (not the model's fault) and flagged per row. Floors on these "
        "(`quality_floor.identity`, `.garment`) count in the goodput table's quality-aware "
        "goodput, an output with no face failing an identity floor."
    )
    t.notes.append(
        "Garment cosine: CLIP image embedding of the garment photo against the output's."
        + (
            " The CLIP is the tiny random-weight one: these cosines say nothing about garments."
            if c.get("clip_comparable") is False
            else ""
        )
    )
    for ps in c.get("sets") or []:
        t.notes.append(f"{ps['niche']} {ps['role']}: {ps['label']} (sha256 {ps['sha256'][:16]}…).")
    for niche, roles in sorted((c.get("references_used") or {}).items()):
        for role, d in sorted(roles.items()):
            t.notes.append(
                f"{niche}: jobs carried {d['n_distinct']} distinct {role.rstrip('s')} photos "
                f"(sha256 {d['sha256'][:16]}…)."
            )
    return t
