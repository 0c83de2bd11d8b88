"""Quality-aware goodput: the share of requests that were fast enough *and* good enough.

Latency goodput counts a request as good when it succeeded within its model's SLO. A server that
meets its SLO by returning poor images (fewer steps, a fallback model) would look fine on that
alone, so quality-aware goodput also asks each image to clear its niche's quality floor
(`niches[].quality_floor`): per named metric, a least per-image score. Per (model, niche) and per
model, every attempted request is one of: failed or never sent, late, below the floor (by metric),
unscored (its image could not be scored, so its quality is unknown: a miss), or good. Rejected
manifest rows are the client's mistakes and count for no model.

Metrics are looked up in `METRICS`, which says which column of image_scores.parquet holds each
and when it applies: to every image (clip_text: a missing value means the image could not be
scored), where its input exists (clip_ref: jobs with a reference image; garment: try-on jobs whose
garment photo was compared), or where another column says so (identity: jobs whose reference
photos hold a face, `face_found` not null; no face found in the output fails the floor). A metric
that does not apply to an image is not checked for it. Another metric plugs in by adding it here
and to `config.QualityMetric`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from config import EaselConfig
from load_tests.intervals import wilson_interval

__all__ = ["METRICS", "Metric", "quality_goodput"]


@dataclass(frozen=True)
class Metric:
    """A per-image score a floor can name.

    Attributes:
        column: its image_scores.parquet column.
        always: it applies to every scored image, so a missing value means "could not be
            scored" (the request is unscored); otherwise a missing value means "does not apply".
        applies: a column that says whether the metric applies to an image, overriding the
            value's presence: null there means "does not apply", false "applies and failed" (a
            miss, as is a missing value where it is true).
    """

    column: str
    always: bool = False
    applies: str | None = None


METRICS: dict[str, Metric] = {
    "clip_text": Metric("clip_text", always=True),
    "clip_ref": Metric("clip_ref"),
    "identity": Metric("identity_cos", applies="face_found"),
    "garment": Metric("garment_cos"),
}

_REQUEST_COLUMNS = ("job_id", "model", "niche", "ok", "latency_ms", "error_class")


def _floor_misses(floor: dict[str, float], image: dict[str, Any] | None) -> list[str] | None:
    """Metrics below the floor ([] when all clear); None when the image could not be scored."""
    if not floor:
        return []
    if image is None or not bool(image.get("ok")):
        return None
    misses = []
    for name, least in floor.items():
        metric = METRICS[name]
        value = image.get(metric.column)
        missing = _missing(value)
        if metric.applies is not None:
            gate = image.get(metric.applies)
            if _missing(gate):
                continue  # does not apply (identity: the references hold no face)
            if not bool(gate) or missing:  # identity: no face found in the output
                misses.append(name)
                continue
        elif missing:
            if metric.always:
                return None
            continue  # does not apply to this image
        if float(value) < least:
            misses.append(name)
    return misses


def _missing(v: Any) -> bool:
    return v is None or bool(pd.isna(v))


def _row(outcome: Counter[str], below: Counter[str], conf: float, scored: bool) -> dict:
    n, good = outcome["n"], outcome["good"]
    fast = n - outcome["failed"] - outcome["late"]
    ci, fast_ci = wilson_interval(good, n, conf), wilson_interval(fast, n, conf)
    return {
        "n": n,
        "latency_good": fast,
        "latency_share": fast / n if n else None,
        "latency_ci": list(fast_ci) if fast_ci else [None, None],
        "good": good if scored else None,
        "share": good / n if n and scored else None,
        "ci": list(ci) if ci and scored else [None, None],
        "failed": outcome["failed"],
        "late": outcome["late"],
        "below_floor": outcome["below_floor"] if scored else None,
        "below_floor_by_metric": dict(sorted(below.items())),
        "unscored": outcome["unscored"] if scored else None,
    }


def quality_goodput(
    requests: pd.DataFrame, images: pd.DataFrame | None, cfg: EaselConfig
) -> dict[str, Any]:
    """Quality-aware goodput per (model, niche) and per model.

    Args:
        requests: request records (job_id, model, niche, ok, latency_ms, error_class).
        images: image_scores.parquet as the scoring stage wrote it (job_id, ok, and each
            metric's column); None when the run was not scored.
        cfg: SLOs per model, quality floors per niche, `slo.confidence` for the intervals.

    Returns:
        {"rows": [{model, niche ('all' for a model's row), n, latency_good, latency_share,
        latency_ci (plain goodput: within the SLO), good, share, ci (quality-aware), failed,
        late, below_floor, below_floor_by_metric, unscored, floor}], "floors": {niche: floor},
        "note": text or None}. Without image scores (and some floor set) the quality-aware
        fields are None and the note says why.
    """
    floors = {n.name: dict(n.quality_floor) for n in cfg.niches}
    scored = images is not None or not any(floors.values())
    note = None if scored else "no image scores (the run was not scored): quality unknown"
    slo = {m.name: m.slo_ms for m in cfg.models}
    by_job: dict[str, dict[str, Any]] = {}
    if images is not None and not images.empty:
        by_job = {str(r["job_id"]): r for r in images.to_dict("records")}
    conf = cfg.slo.confidence
    cells: dict[tuple[str, str], tuple[Counter[str], Counter[str]]] = {}
    for r in requests[list(_REQUEST_COLUMNS)].to_dict("records"):
        if r["error_class"] == "rejected" or r["model"] not in slo:
            continue
        outcome, below = cells.setdefault((r["model"], r["niche"]), (Counter(), Counter()))
        outcome["n"] += 1
        if not r["ok"]:
            outcome["failed"] += 1
        elif r["latency_ms"] is None or r["latency_ms"] > slo[r["model"]]:
            outcome["late"] += 1
        else:
            misses = _floor_misses(floors.get(r["niche"], {}), by_job.get(str(r["job_id"])))
            if misses is None:
                outcome["unscored"] += 1
            elif misses:
                outcome["below_floor"] += 1
                below.update(misses)
            else:
                outcome["good"] += 1
    rows: list[dict[str, Any]] = []
    per_model: dict[str, tuple[Counter[str], Counter[str]]] = {}
    for (model, niche), (outcome, below) in sorted(cells.items(), key=lambda kv: str(kv[0])):
        rows.append(
            {
                "model": model,
                "niche": niche,
                "floor": floors.get(niche, {}),
                **_row(outcome, below, conf, scored),
            }
        )
        total_o, total_b = per_model.setdefault(model, (Counter(), Counter()))
        total_o.update(outcome)
        total_b.update(below)
    for model, (outcome, below) in sorted(per_model.items()):
        rows.append(
            {
                "model": model,
                "niche": "all",
                "floor": None,
                **_row(outcome, below, conf, scored),
            }
        )
    return {"rows": rows, "floors": floors, "note": note}
