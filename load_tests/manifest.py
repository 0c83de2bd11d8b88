"""Job manifests: the Parquet schema, a writer, and a reader that validates every row.

A manifest is one row per request: when to send it (`arrival_s`, seconds from the run start) and
what to send. The reader fails the whole file only when it is not a manifest at all (not Parquet,
a required column missing, a column of the wrong type). Bad rows are not errors: each comes back
as a rejected record naming its row and every reason, and the good rows run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from config import EaselConfig
from load_tests.references import read_reference_items

__all__ = [
    "JOB_ID_PATTERN",
    "MANIFEST_SCHEMA",
    "REQUIRED_COLUMNS",
    "ManifestError",
    "ManifestScan",
    "iter_validated",
    "read_manifest",
    "scan_manifest",
    "validate_batch",
    "write_manifest",
]

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("arrival_s", pa.float64()),
        pa.field("model", pa.string()),
        pa.field("niche", pa.string()),
        pa.field("prompt", pa.string()),
        # Encoded image file bytes (PNG/JPEG); base64-encoded into the request by the client.
        pa.field("reference_image", pa.binary()),
        # Several references (encoded bytes; a file may hold paths, read when it is read) and,
        # optionally, each one's role (face/person, garment, other).
        pa.field("reference_images", pa.list_(pa.binary())),
        pa.field("reference_roles", pa.list_(pa.string())),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("steps", pa.int64()),
        pa.field("seed", pa.int64()),
        pa.field("tenant", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("job_id", "arrival_s", "model", "niche", "prompt")
_OPTIONAL_COLUMNS = tuple(c for c in MANIFEST_SCHEMA.names if c not in REQUIRED_COLUMNS)

# job_id names the image file in the run folder, so it must be a safe file name.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_ROW_GROUP = 65_536
_BATCH = 4_096


class ManifestError(ValueError):
    """A file that is not a manifest: not Parquet, a required column missing, a wrong type."""


def write_manifest(table: pa.Table, path: str | Path) -> Path:
    """Write `table` as a manifest Parquet file (conformed to MANIFEST_SCHEMA); returns the path.

    Missing optional columns are written as nulls; a missing required column or a column that
    cannot take the schema's type raises ManifestError. Schema metadata under `easel.` keys
    (a replay's provenance) is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_schema(table.schema, str(path))
    # easel's own metadata (where a replay's columns came from) travels with the file.
    keep = {k: v for k, v in (table.schema.metadata or {}).items() if k.startswith(b"easel.")}
    pq.write_table(
        _conform(table).replace_schema_metadata(keep or None), path, row_group_size=_ROW_GROUP
    )
    return path


# --- file-level checks ------------------------------------------------------------------------


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


# Which stored kinds each schema column accepts; anything else is not a manifest.
_ACCEPTS = {
    "job_id": {"string", "int"},
    "arrival_s": {"float", "int"},
    "model": {"string"},
    "niche": {"string"},
    "prompt": {"string"},
    "reference_image": {"binary"},
    "reference_images": {"list<binary>", "list<string>", "list<null>"},
    "reference_roles": {"list<string>", "list<null>"},
    "width": {"int"},
    "height": {"int"},
    "steps": {"int"},
    "seed": {"int"},
    "tenant": {"string"},
}


def _check_schema(schema: pa.Schema, source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestError(
            f"{source}: not an easel manifest: missing column(s) {missing}; a manifest needs "
            f"{list(REQUIRED_COLUMNS)} and may have {list(_OPTIONAL_COLUMNS)}"
        )
    for name in MANIFEST_SCHEMA.names:
        if name not in schema.names:
            continue
        kind = _kind(schema.field(name).type)
        if kind != "null" and kind not in _ACCEPTS[name]:
            raise ManifestError(
                f"{source}: not an easel manifest: column {name!r} has type "
                f"{schema.field(name).type}; allowed: {sorted(_ACCEPTS[name])}"
            )


def _conform(table: pa.Table | pa.RecordBatch, base: Path | None = None) -> pa.Table:
    """Columns in schema order and type; absent optional columns become nulls; extras dropped.

    Reference paths are read into bytes, relative to `base` (default: the working directory).
    """
    n = table.num_rows
    cols = []
    for f in MANIFEST_SCHEMA:
        if f.name in table.schema.names:
            col = table.column(f.name)
            if f.name == "reference_images" and _kind(col.type) == "list<string>":
                folder = base or Path.cwd()
                col = pa.array(
                    [read_reference_items(v, folder) for v in col.to_pylist()], type=f.type
                )
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if f.name == "job_id" and _kind(col.type) == "int":
                col = col.cast(pa.string())
            cols.append(col.cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=MANIFEST_SCHEMA)


def _open(path: str | Path) -> pq.ParquetFile:
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: no such manifest file")
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{p}: not an easel manifest: not a Parquet file ({exc})") from None
    _check_schema(pf.schema_arrow, str(p))
    return pf


# --- the pre-pass: duplicates and order, from two narrow columns ---------------------------------


@dataclass(frozen=True)
class ManifestScan:
    """What one cheap pass over the job_id and arrival_s columns tells the runner."""

    rows: int
    duplicate_rows: frozenset[int] = field(default_factory=frozenset)
    sorted_by_arrival: bool = True
    models: tuple[str, ...] = ()


def scan_manifest(path: str | Path) -> ManifestScan:
    """Row count, rows whose job_id repeats an earlier row's, arrival order, and model names.

    Reads only the job_id, arrival_s and model columns, a row group at a time, and keeps the
    job_id column (compact Arrow strings): a million-row manifest costs tens of MB here, not
    its prompts.
    """
    pf = _open(path)
    chunks: list[pa.Array] = []
    models: set[str] = set()
    is_sorted, last = True, -math.inf
    for batch in pf.iter_batches(batch_size=_ROW_GROUP, columns=["job_id", "arrival_s", "model"]):
        ids = batch.column("job_id")
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        chunks.append(ids.cast(pa.string()))  # integer ids are text, as the reader sees them
        arrival = batch.column("arrival_s").cast(pa.float64()).to_numpy(zero_copy_only=False)
        finite = arrival[np.isfinite(arrival)]
        if len(finite):
            if finite[0] < last or np.any(np.diff(finite) < 0):
                is_sorted = False
            last = max(last, float(finite.max()))
        models.update(m for m in pc.unique(batch.column("model")).to_pylist() if m is not None)
    ids = (
        pa.chunked_array(chunks, pa.string()).combine_chunks()
        if chunks
        else pa.array([], pa.string())
    )
    del chunks
    # A stable sort puts equal ids next to each other, earliest row first; every later one of a
    # run is a duplicate. (Hashing a million distinct ids would cost several times the memory.)
    order = pc.array_sort_indices(ids, null_placement="at_end")
    ranked = ids.take(order)
    n_valid = len(ids) - ids.null_count
    same = pc.equal(ranked[1:n_valid], ranked[: max(n_valid - 1, 0)])
    later = np.flatnonzero(np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)) + 1
    dup = frozenset(int(i) for i in order.to_numpy()[later])
    return ManifestScan(len(ids), dup, is_sorted, tuple(sorted(str(m) for m in models)))


# --- row validation ---------------------------------------------------------------------------


def _row_reasons(r: dict[str, Any], cfg: EaselConfig, duplicate: bool) -> list[str]:
    """Every reason one manifest row cannot be sent; empty when it is good."""
    reasons: list[str] = []
    job_id = r["job_id"]
    if job_id is None or job_id == "":
        reasons.append("missing job_id")
    elif not JOB_ID_PATTERN.match(job_id):
        reasons.append(
            f"job_id {job_id[:40]!r} is not 1-128 of letters, digits, '_', '.', '-' "
            "(it names the image file)"
        )
    elif duplicate:
        reasons.append(f"duplicate job_id {job_id!r} (an earlier row has it)")
    a = r["arrival_s"]
    if a is None:
        reasons.append("missing arrival_s")
    elif not math.isfinite(a):
        reasons.append(f"arrival_s is {a} (must be finite)")
    elif a < 0:
        reasons.append(f"arrival_s {a} is negative")
    prompt = r["prompt"]
    if prompt is None or not prompt.strip():
        reasons.append("missing prompt")
    model = None
    if r["model"] is None:
        reasons.append("missing model")
    else:
        try:
            model = cfg.model(r["model"])
        except KeyError:
            reasons.append(
                f"unknown model {r['model']!r} (allowed: {sorted(m.name for m in cfg.models)})"
            )
    if r["niche"] is None:
        reasons.append("missing niche")
    elif r["niche"] not in {n.name for n in cfg.niches}:
        reasons.append(
            f"unknown niche {r['niche']!r} (allowed: {sorted(n.name for n in cfg.niches)})"
        )
    if model is not None:
        res = model.resolution
        for key in ("width", "height"):
            v = r[key]
            if v is not None and (v < res.min or v > res.max or v % res.multiple):
                reasons.append(
                    f"{key} {v} out of range for {model.name} "
                    f"({res.min}..{res.max}, multiple of {res.multiple})"
                )
        s = r["steps"]
        if s is not None and not model.steps.min <= s <= model.steps.max:
            reasons.append(
                f"steps {s} out of range for {model.name} ({model.steps.min}..{model.steps.max})"
            )
    if r["seed"] is not None and r["seed"] < 0:
        reasons.append(f"seed {r['seed']} is negative")
    reasons += _reference_reasons(r, model, cfg)
    tenants = {t.name for t in cfg.serve.tenants}
    if r["tenant"] is not None and tenants and r["tenant"] not in tenants:
        reasons.append(f"unknown tenant {r['tenant']!r} (allowed: {sorted(tenants)})")
    return reasons


def _reference_reasons(r: dict[str, Any], model: Any, cfg: EaselConfig) -> list[str]:
    """Why a row's references cannot be sent (the server would refuse them), if they cannot."""
    one, many = r["reference_image"], r["reference_images"] or []
    if one is not None and many:
        return ["reference_image and reference_images are both set (send one)"]
    refs = [one] if one is not None else many
    if not refs:
        return []
    out = []
    limits = model.references if model is not None else None
    if model is not None and limits is None:
        able = sorted(m.name for m in cfg.models if m.references is not None)
        out.append(f"model {model.name} takes no reference images (models that do: {able})")
    elif limits is not None and len(refs) > limits.max_count:
        out.append(f"{len(refs)} reference images, {model.name} takes at most {limits.max_count}")
    cap = limits.max_bytes if limits is not None else cfg.serve.max_body_bytes
    for i, ref in enumerate(refs):
        if not ref or len(ref) > cap:
            out.append(
                f"reference {i}: {len(ref or b'')} bytes (must be 1..{cap}; an unreadable path "
                "reads as 0)"
            )
    roles = r["reference_roles"]
    if roles and len(roles) != len(refs):
        out.append(f"reference_roles has {len(roles)} entries for {len(refs)} references")
    return out


def validate_batch(
    batch: pa.Table | pa.RecordBatch,
    cfg: EaselConfig,
    first_row: int = 0,
    duplicate_rows: Iterable[int] = (),
    row_numbers: Iterable[int] | None = None,
    base: Path | None = None,
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split a batch into good rows and rejected records.

    Args:
        batch: manifest rows (any accepted column types; conformed here).
        cfg: the config that names the allowed models, niches and ranges.
        first_row: the file row number of the batch's first row.
        duplicate_rows: file row numbers whose job_id repeats an earlier row's.
        row_numbers: the file row number of each row, when the batch is not in file order
            (overrides `first_row`).
        base: the folder relative reference paths are read from (the manifest's).

    Returns:
        The good rows (MANIFEST_SCHEMA plus an int64 `row` column: the file row number), and one
        record per bad row: `row`, `job_id`, `model`, `niche`, `tenant`, `arrival_s` and `error`
        (every reason, joined by '; ').
    """
    table = _conform(batch, base)
    dups = duplicate_rows if isinstance(duplicate_rows, frozenset | set) else set(duplicate_rows)
    if row_numbers is None:
        numbers = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    else:
        numbers = np.asarray(row_numbers, dtype=np.int64)
    cols = {name: table.column(name).to_pylist() for name in MANIFEST_SCHEMA.names}
    good = np.ones(table.num_rows, dtype=bool)
    rejected: list[dict[str, Any]] = []
    names = MANIFEST_SCHEMA.names
    for i, values in enumerate(zip(*(cols[n] for n in names), strict=True)):
        r = dict(zip(names, values, strict=True))
        row = int(numbers[i])
        reasons = _row_reasons(r, cfg, row in dups)
        if reasons:
            good[i] = False
            rejected.append(
                {
                    "row": row,
                    "job_id": r["job_id"],
                    "model": r["model"],
                    "niche": r["niche"],
                    "tenant": r["tenant"],
                    "arrival_s": r["arrival_s"],
                    "error": "; ".join(reasons),
                }
            )
    table = table.append_column("row", pa.array(numbers))
    return table.filter(pa.array(good)), rejected


def iter_validated(
    path: str | Path, cfg: EaselConfig, batch_size: int = _BATCH
) -> Iterator[tuple[pa.Table, list[dict[str, Any]]]]:
    """Validate a manifest batch by batch (bounded memory); yields (good rows, rejected)."""
    scan = scan_manifest(path)
    pf = _open(path)
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        yield validate_batch(batch, cfg, offset, scan.duplicate_rows, base=Path(path).parent)
        offset += batch.num_rows


def read_manifest(path: str | Path, cfg: EaselConfig) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Read and validate a whole manifest into memory.

    Returns:
        (good_table, rejected_records): the good rows (MANIFEST_SCHEMA plus `row`, the file row
        number) and one dict per bad row with `row`, `job_id`, `model`, `niche`, `tenant`,
        `arrival_s` and `error` (every reason for that row).

    Raises:
        ManifestError: the file is missing, not Parquet, or lacks a required column.
    """
    goods, rejected = [], []
    for good, bad in iter_validated(path, cfg):
        goods.append(good)
        rejected.extend(bad)
    if not goods:
        empty = _conform(MANIFEST_SCHEMA.empty_table())
        return empty.append_column("row", pa.array([], pa.int64())), []
    return pa.concat_tables(goods), rejected
