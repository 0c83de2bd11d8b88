"""Where a manifest's columns came from, kept in its Parquet metadata so the run folder says it.

`easel manifest` records, per field, whether it came from a log column (which one), was drawn
from the config's mix, or took a default; `easel load` and `easel bench` copy the manifest into
the run folder as it is, and the report reads the record back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PROVENANCE_KEY", "read_provenance", "with_provenance"]

PROVENANCE_KEY = b"easel.provenance"


def with_provenance(table: pa.Table, provenance: dict[str, Any]) -> pa.Table:
    """`table` with `provenance` in its schema metadata (write_manifest keeps it)."""
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def read_provenance(manifest: str | Path) -> dict[str, Any] | None:
    """The record of a manifest file; None when it has none (written by another tool)."""
    p = Path(manifest)
    if not p.is_file():
        return None
    try:
        meta = pq.read_schema(p).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None
