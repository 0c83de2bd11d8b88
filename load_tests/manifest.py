"""Job manifests: the Parquet schema, a writer, and a reader that validates every row.

A manifest is one row per request: when to send it (`arrival_s`, seconds from the run start) and
what to send. The reader fails the whole file only when it is not a manifest at all (not Parquet,
a required column missing, a column of the wrong type). Bad rows are not errors: each comes back
as a rejected record naming its row and every reason (checked a batch at a time, see
load_tests.validation), and the good rows run.
"""

from __future__ import annotations

import math
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
from load_tests.rowset import RowSet
from load_tests.validation import JOB_ID_PATTERN, ManifestRules, check_table

__all__ = [
    "JOB_ID_PATTERN",
    "MANIFEST_SCHEMA",
    "REQUIRED_COLUMNS",
    "ManifestCheck",
    "ManifestError",
    "ManifestScan",
    "check_manifest",
    "conform",
    "iter_validated",
    "open_manifest",
    "read_manifest",
    "rejected_rows",
    "scan_manifest",
    "validate_batch",
    "validated_table",
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
        conform(table).replace_schema_metadata(keep or None), path, row_group_size=_ROW_GROUP
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


def conform(table: pa.Table | pa.RecordBatch, base: Path | None = None) -> pa.Table:
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


def open_manifest(path: str | Path) -> pq.ParquetFile:
    """The manifest as a ParquetFile, its schema checked; ManifestError when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: no such manifest file")
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{p}: not an easel manifest: not a Parquet file ({exc})") from None
    _check_schema(pf.schema_arrow, str(p))
    return pf


# --- the pre-pass: duplicates and order, from narrow columns -----------------------------------


@dataclass(frozen=True)
class ManifestScan:
    """What one cheap pass over the job_id, arrival_s and model columns tells the runner.

    Attributes:
        rows: manifest rows.
        duplicates: rows whose job_id repeats an earlier row's (a bitmap).
        sorted_by_arrival: finite arrivals never decrease down the file.
        models: model names in the manifest.
        row_group_rows: rows per Parquet row group, in file order.
        bytes_per_row: uncompressed bytes per row, from the file's metadata.
        first_due_s: the earliest finite, non-negative arrival among the rows not skipped (None
            when there is none).
    """

    rows: int
    duplicates: RowSet = field(default_factory=lambda: RowSet(0))
    sorted_by_arrival: bool = True
    models: tuple[str, ...] = ()
    row_group_rows: tuple[int, ...] = ()
    bytes_per_row: float = 0.0
    first_due_s: float | None = None

    @property
    def duplicate_rows(self) -> frozenset[int]:
        """The duplicate rows as a set of row numbers."""
        return frozenset(int(r) for r in self.duplicates.rows())


def scan_manifest(path: str | Path, skip: RowSet | None = None) -> ManifestScan:
    """Row count, rows whose job_id repeats an earlier row's, arrival order, and model names.

    Reads only the job_id, arrival_s and model columns, a row group at a time, and keeps the
    job_id column (compact Arrow strings) for the duplicate check: a million-row manifest costs
    tens of MB here, not its prompts. `skip`: rows left out of `first_due_s` (on a resume, the
    rows that already have a record).
    """
    pf = open_manifest(path)
    meta = pf.metadata
    chunks: list[pa.Array] = []
    models: set[str] = set()
    is_sorted, last = True, -math.inf
    first_due = math.inf
    offset = 0
    for batch in pf.iter_batches(batch_size=_ROW_GROUP, columns=["job_id", "arrival_s", "model"]):
        ids = batch.column("job_id")
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        chunks.append(ids.cast(pa.string()))  # integer ids are text, as the reader sees them
        arrival = batch.column("arrival_s").cast(pa.float64()).to_numpy(zero_copy_only=False)
        finite = np.isfinite(arrival)
        valid = arrival[finite]
        if len(valid):
            if valid[0] < last or np.any(np.diff(valid) < 0):
                is_sorted = False
            last = max(last, float(valid.max()))
        due = finite & (np.nan_to_num(arrival, nan=-1.0) >= 0)
        if skip is not None and skip.size:
            due &= ~skip.contains(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
        if due.any():
            first_due = min(first_due, float(arrival[due].min()))
        offset += batch.num_rows
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
    dups = RowSet.of(len(ids), order.to_numpy()[later])
    groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
    size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    return ManifestScan(
        rows=len(ids),
        duplicates=dups,
        sorted_by_arrival=is_sorted,
        models=tuple(sorted(str(m) for m in models)),
        row_group_rows=groups,
        bytes_per_row=size / len(ids) if len(ids) else 0.0,
        first_due_s=first_due if math.isfinite(first_due) else None,
    )


# --- row validation ---------------------------------------------------------------------------


def validated_table(
    batch: pa.Table | pa.RecordBatch,
    rules: ManifestRules,
    numbers: np.ndarray,
    duplicate: np.ndarray,
    base: Path | None = None,
) -> pa.Table:
    """The batch conformed, with `row` (file row number), `error` and `reject_codes` columns.

    Reference paths are read relative to `base`. `error` is null on good rows and holds every
    reason (joined by '; ') on bad ones; `reject_codes` lists the reasons' codes
    (load_tests.validation.REJECT_CODES).
    """
    table = conform(batch, base)
    n = table.num_rows
    _, details = check_table(table, rules, duplicate)
    if details:
        texts: list[str | None] = [None] * n
        codes: list[list[str] | None] = [None] * n
        for i, reasons, why in details:
            texts[i], codes[i] = "; ".join(reasons), why
        error, reject = pa.array(texts, pa.string()), pa.array(codes, pa.list_(pa.string()))
    else:  # the common case: no Python object per row
        error, reject = pa.nulls(n, pa.string()), pa.nulls(n, pa.list_(pa.string()))
    table = table.append_column("row", pa.array(np.asarray(numbers, dtype=np.int64)))
    return table.append_column("error", error).append_column("reject_codes", reject)


def rejected_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rejected-row dicts of a validated table's bad rows (see validate_batch)."""
    bad = table.filter(pc.is_valid(table.column("error")))
    cols = ["row", "job_id", "model", "niche", "tenant", "arrival_s", "error", "reject_codes"]
    return bad.select(cols).to_pylist()


def validate_batch(
    batch: pa.Table | pa.RecordBatch,
    cfg: EaselConfig | ManifestRules,
    first_row: int = 0,
    duplicate_rows: Iterable[int] | RowSet = (),
    row_numbers: Iterable[int] | None = None,
    base: Path | None = None,
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Split a batch into good rows and rejected records.

    Args:
        batch: manifest rows (any accepted column types; conformed here).
        cfg: the config (or rules taken from it) that names the allowed models, niches, ranges.
        first_row: the file row number of the batch's first row.
        duplicate_rows: file row numbers whose job_id repeats an earlier row's.
        row_numbers: the file row number of each row, when the batch is not in file order
            (overrides `first_row`).
        base: the folder relative reference paths are read from (the manifest's).

    Returns:
        The good rows (MANIFEST_SCHEMA plus an int64 `row` column: the file row number), and one
        record per bad row: `row`, `job_id`, `model`, `niche`, `tenant`, `arrival_s`, `error`
        (every reason, joined by '; ') and `reject_codes` (their codes).
    """
    rules = cfg if isinstance(cfg, ManifestRules) else ManifestRules.from_config(cfg)
    n = batch.num_rows
    if row_numbers is None:
        numbers = np.arange(first_row, first_row + n, dtype=np.int64)
    else:
        numbers = np.asarray(list(row_numbers), dtype=np.int64)
    if isinstance(duplicate_rows, RowSet):
        dup = duplicate_rows.contains(numbers) if duplicate_rows.size else np.zeros(n, bool)
    else:
        dup = np.isin(numbers, np.fromiter(duplicate_rows, dtype=np.int64))
    table = validated_table(batch, rules, numbers, dup, base)
    good = table.filter(pc.is_null(table.column("error"))).drop_columns(["error", "reject_codes"])
    return good, rejected_rows(table)


def iter_validated(
    path: str | Path, cfg: EaselConfig, batch_size: int = _BATCH
) -> Iterator[tuple[pa.Table, list[dict[str, Any]]]]:
    """Validate a manifest batch by batch (bounded memory); yields (good rows, rejected)."""
    scan = scan_manifest(path)
    rules = ManifestRules.from_config(cfg)
    pf = open_manifest(path)
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        yield validate_batch(batch, rules, offset, scan.duplicates, base=Path(path).parent)
        offset += batch.num_rows


@dataclass(frozen=True)
class ManifestCheck:
    """A whole manifest validated without holding it: row counts and rejections by reason."""

    rows: int
    rejected: int
    by_code: dict[str, int]


def check_manifest(path: str | Path, cfg: EaselConfig) -> ManifestCheck:
    """Validate a manifest batch by batch and count its rejected rows (bounded memory)."""
    rows = rejected = 0
    by_code: dict[str, int] = {}
    for good, bad in iter_validated(path, cfg):
        rows += good.num_rows + len(bad)
        rejected += len(bad)
        for rec in bad:
            for code in rec["reject_codes"]:
                by_code[code] = by_code.get(code, 0) + 1
    return ManifestCheck(rows, rejected, dict(sorted(by_code.items())))


def read_manifest(path: str | Path, cfg: EaselConfig) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Read and validate a whole manifest into memory (the runner streams it instead).

    Returns:
        (good_table, rejected_records): the good rows (MANIFEST_SCHEMA plus `row`, the file row
        number) and one dict per bad row with `row`, `job_id`, `model`, `niche`, `tenant`,
        `arrival_s`, `error` (every reason for that row) and `reject_codes`.

    Raises:
        ManifestError: the file is missing, not Parquet, or lacks a required column.
    """
    goods, rejected = [], []
    for good, bad in iter_validated(path, cfg):
        goods.append(good)
        rejected.extend(bad)
    if not goods:
        empty = conform(MANIFEST_SCHEMA.empty_table())
        return empty.append_column("row", pa.array([], pa.int64())), []
    return pa.concat_tables(goods), rejected
