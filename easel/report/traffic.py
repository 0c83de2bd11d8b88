"""Where the run's traffic came from, and the manifest rows that were never sent (and why)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from easel.report.cells import Summary, Table
from load_tests.provenance import read_provenance

__all__ = ["rejection_reasons", "traffic_section", "traffic_table"]

# Reasons that name one row's own value are counted together; those naming a model or niche
# keep the name (it is what to fix: an alias, or the config).
_GENERIC = (
    (re.compile(r"^duplicate job_id .*"), "duplicate job_id"),
    (re.compile(r"^job_id .* is not 1-128 .*"), "job_id not a safe file name"),
    (re.compile(r"^reference_image of \d+ bytes.*"), "reference_image size out of range"),
)


def _reason(text: str) -> str:
    text = re.sub(r"\s*\(allowed: .*\)$", "", text.strip())
    for pattern, label in _GENERIC:
        if pattern.match(text):
            return label
    return text


def rejection_reasons(requests: pa.Table, most: int = 12) -> list[dict[str, Any]]:
    """Rejected rows per reason (a row with two reasons counts under each), largest first."""
    if "error_class" not in requests.column_names:
        return []
    rej = requests.filter(pc.equal(requests.column("error_class"), "rejected"))
    counts: Counter[str] = Counter()
    for err in rej.column("error").to_pylist() if rej.num_rows else []:
        for part in (err or "no reason recorded").split("; "):
            counts[_reason(part)] += 1
    rows = [{"reason": r, "count": n} for r, n in counts.most_common(most)]
    rest = sum(counts.values()) - sum(r["count"] for r in rows)
    if rest:
        rows.append({"reason": "other reasons", "count": rest})
    return rows


def traffic_section(run_dir: Path, requests: pa.Table | None) -> dict[str, Any]:
    """summary.json's `traffic`: the manifest's provenance and the rejected rows by reason."""
    rejected = 0
    if requests is not None and "error_class" in requests.column_names:
        rejected = int(pc.sum(pc.equal(requests.column("error_class"), "rejected")).as_py() or 0)
    return {
        "provenance": read_provenance(run_dir / "manifest.parquet"),
        "rejected": rejected,
        "rejections": rejection_reasons(requests) if requests is not None and rejected else [],
    }


def traffic_table(s: Summary) -> Table:
    """Per manifest field, where its values came from; then the rejected rows by reason."""
    tr = s.get("traffic") or {}
    p = tr.get("provenance") or {}
    t = Table("traffic", "Traffic: where the jobs came from", ["Field", "Source"])
    for field, source in sorted((p.get("columns") or {}).items()):
        t.rows.append([field, source])
    if p.get("pattern") == "replay":
        t.notes.append(
            f"Replayed from {p.get('source')}: {p.get('rows')} of {p.get('log_rows')} log rows "
            f"(speed-up {p.get('speedup')}, window {p.get('window_s') or 'whole log'}, "
            f"jitter {p.get('jitter')})."
        )
        for kind, counts in (p.get("aliases") or {}).items():
            shown = ", ".join(f"{k} ({v} rows)" for k, v in counts.items())
            t.notes.append(f"{kind.capitalize()} aliases applied: {shown}.")
    elif not p:
        t.notes.append("The manifest records no provenance (written by another tool).")
    n = tr.get("rejected") or 0
    if n:
        shown = "; ".join(f"{r['reason']}: {r['count']}" for r in tr.get("rejections") or [])
        t.notes.append(
            f"{n} manifest rows were rejected and never sent (counted against no model): {shown}."
        )
    else:
        t.notes.append("No manifest row was rejected.")
    return t
