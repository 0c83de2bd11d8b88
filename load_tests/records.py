"""Request records: one row per manifest row, failures included, written as the run goes.

The request functions never raise: every outcome is a record with `ok`, `status`, `error`,
`error_class` and every timestamp. `*_s` columns are seconds from the run start (the moment
`arrival_s` counts from); `*_ms` columns are milliseconds.

Crash safety: each dispatcher writes its records as small, complete Parquet files under
`<run>/records/` (`part-a<attempt>-d<dispatcher>-<seq>.parquet`, each written under a hidden
name and renamed into place, so a file either is whole or is not there). A run killed at any
moment leaves every flushed record readable (`pq.read_table(run / "records")` reads them as one
dataset); at the end the runner merges them into `requests.parquet`, keeping the first record
of each manifest row, and only then removes the parts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from load_tests.rowset import RowSet

__all__ = [
    "ERROR_CLASSES",
    "MERGED_ROW_GROUP_ROWS",
    "PARTS_DIR",
    "REQUEST_SCHEMA",
    "PartWriter",
    "merge_records",
    "new_record",
    "record_files",
    "recorded_rows",
    "records_table",
    "rejected_record",
]

_log = logging.getLogger(__name__)

PARTS_DIR = "records"

REQUEST_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string()),
        pa.field("row", pa.int64()),  # the manifest row number: tells apart a duplicated job_id
        pa.field("model", pa.string()),
        pa.field("niche", pa.string()),
        pa.field("tenant", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("replica", pa.string()),
        pa.field("ok", pa.bool_()),
        pa.field("status", pa.int32()),  # HTTP status; null when no response came
        pa.field("error", pa.string()),
        pa.field("error_class", pa.string()),
        pa.field("scheduled_s", pa.float64()),
        pa.field("sent_s", pa.float64()),
        pa.field("first_byte_s", pa.float64()),
        pa.field("done_s", pa.float64()),
        pa.field("latency_ms", pa.float64()),  # done - scheduled: open loop
        pa.field("service_ms", pa.float64()),  # done - sent
        pa.field("queue_ms", pa.float64()),
        pa.field("inference_ms", pa.float64()),
        pa.field("batch_size", pa.int32()),
        pa.field("cold_start", pa.bool_()),
        pa.field("image_sha256", pa.string()),
        pa.field("image_path", pa.string()),  # relative to the run folder; null when not saved
        pa.field("attempt", pa.int32()),  # 0 for the first run of a folder, 1 for its first resume
        pa.field("reject_codes", pa.list_(pa.string())),  # rejected rows: the reasons' codes
    ]
)

# error_class values. Only "ok" rows have ok=true.
ERROR_CLASSES = (
    "ok",
    "rejected",  # the manifest row is invalid: never sent
    "client_overload",  # the client's in-flight bound was reached: never sent
    "timeout",  # no complete response within the client timeout
    "connection",  # could not connect, or the connection broke
    "http_429",
    "http_503",
    "http_4xx",
    "http_5xx",
    "http_other",  # 1xx/3xx
    "bad_response",  # 200 but the body is not an image
    "client_error",  # anything else the client raised (its repr is in `error`)
)


def new_record(row: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A record with every REQUEST_SCHEMA column (null unless set) for a manifest row."""
    rec = dict.fromkeys(REQUEST_SCHEMA.names)
    rec.update(
        job_id=row.get("job_id"),
        row=row.get("row"),
        model=row.get("model"),
        niche=row.get("niche"),
        tenant=row.get("tenant"),
        ok=False,
    )
    rec.update(fields)
    return rec


def rejected_record(rej: dict[str, Any]) -> dict[str, Any]:
    """The request record of a manifest row the reader rejected (never sent)."""
    a = rej.get("arrival_s")
    scheduled = a if isinstance(a, float | int) and a == a and abs(a) != float("inf") else None
    return new_record(
        rej,
        error=rej["error"],
        error_class="rejected",
        scheduled_s=float(scheduled) if scheduled is not None and scheduled >= 0 else None,
        reject_codes=rej.get("reject_codes"),
    )


class PartWriter:
    """Writes records as complete Parquet part files; memory holds at most `flush_rows`.

    Args:
        folder: the parts folder (`<run>/records`).
        prefix: the part files' name prefix (e.g. 'part-a0-d1'); files are `<prefix>-<seq>`.
        flush_rows: a part is written when this many records wait (or on `flush`).
    """

    def __init__(self, folder: str | Path, prefix: str, flush_rows: int = 4_096) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self._buffer: list[dict[str, Any]] = []
        self._flush_rows = flush_rows
        self._seq = 0
        self.rows = 0
        # pyarrow's first conversion from Python objects imports pandas (~0.3 s holding the
        # GIL): pay it now, not at the first flush in the middle of a run.
        records_table([new_record({})])

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Buffer records (missing columns become null); write a part when the buffer is full."""
        self._buffer.extend(records)
        if len(self._buffer) >= self._flush_rows:
            self.flush()

    @property
    def count(self) -> int:
        """Records taken so far, written or not."""
        return self.rows + len(self._buffer)

    def flush(self) -> None:
        """Write the buffered records as one part file (atomically: hidden name, then rename)."""
        if not self._buffer:
            return
        table = records_table(self._buffer)
        name = f"{self.prefix}-{self._seq:06d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.folder / name)
        self._seq += 1
        self.rows += table.num_rows
        self._buffer.clear()


def records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as a REQUEST_SCHEMA table (missing keys are null).

    Built a column at a time: each conversion is one short C call, so a thread waiting for the
    GIL (a dispatcher's timer loop) gets it between columns instead of after the whole table.
    """
    cols = [pa.array([r.get(f.name) for r in records], f.type) for f in REQUEST_SCHEMA]
    return pa.Table.from_arrays(cols, schema=REQUEST_SCHEMA)


def record_files(run_dir: str | Path) -> list[Path]:
    """Every file holding records of a run folder, oldest first: requests.parquet, then parts."""
    run = Path(run_dir)
    merged = run / "requests.parquet"
    parts = sorted((run / PARTS_DIR).glob("part-*.parquet")) if (run / PARTS_DIR).is_dir() else []
    return ([merged] if merged.is_file() else []) + parts


def _tables(path: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A record file's row groups conformed to REQUEST_SCHEMA (older files lack new columns)."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        # Parts are renamed into place whole, so only a requests.parquet left half-written by
        # an older easel can get here; its records are lost, and resume sends those rows again.
        _log.warning("%s: unreadable (%s); its rows count as not recorded", path, exc)
        return
    names = columns or REQUEST_SCHEMA.names
    for g in range(pf.metadata.num_row_groups):
        have = [c for c in names if c in pf.schema_arrow.names]
        t = pf.read_row_group(g, columns=have)
        cols = [
            t.column(c).cast(REQUEST_SCHEMA.field(c).type)
            if c in have
            else pa.nulls(t.num_rows, REQUEST_SCHEMA.field(c).type)
            for c in names
        ]
        yield pa.Table.from_arrays(cols, schema=pa.schema([REQUEST_SCHEMA.field(c) for c in names]))


def recorded_rows(run_dir: str | Path, n_rows: int) -> RowSet:
    """The manifest rows of `n_rows` that already have a record in the run folder."""
    done = RowSet(n_rows)
    for path in record_files(run_dir):
        for t in _tables(path, ["row"]):
            rows = t.column("row").drop_null().to_numpy()
            done.add(rows[(rows >= 0) & (rows < n_rows)])
    return done


# Rows per row group of the merged requests.parquet. The parts are small (a dispatcher flushes
# every 1,024 records or every second), and one row group per part left ~1,000 row groups in
# a million-row file, whose metadata the writer holds until it closes. 8,192 rows keeps that to
# ~120 groups per million rows; the buffer it needs stays small only under the system
# allocator, which the runner uses for the merge (measured: load_tests/allocator.py).
MERGED_ROW_GROUP_ROWS = 8_192


class _RowGroups:
    """Coalesces small tables into row groups of `size` rows (None: each table as it is)."""

    def __init__(self, writer: pq.ParquetWriter, size: int | None) -> None:
        self._writer, self._size = writer, size
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> None:
        if self._size is None:
            self._writer.write_table(table)
            return
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self._size:
            joined = pa.concat_tables(self._pending)
            whole = (joined.num_rows // self._size) * self._size
            self._writer.write_table(joined.slice(0, whole), row_group_size=self._size)
            rest = joined.slice(whole)
            self._pending, self._rows = [rest], rest.num_rows

    def flush(self) -> None:
        """Writes what is left (under one group) as the file's last, short group."""
        if self._rows:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._rows = [], 0


def merge_records(
    run_dir: str | Path, n_rows: int, row_group_rows: int | None = MERGED_ROW_GROUP_ROWS
) -> int:
    """Merge requests.parquet and the parts into requests.parquet; returns its record count.

    The first record of each manifest row wins (an earlier attempt's, then the parts in name
    order), so a part written twice, or a crash between merging and removing the parts, can
    never duplicate a row. The new file replaces the old atomically; the parts go after.
    `row_group_rows` is the merged file's row-group size; None keeps the parts' row groups as
    they are (the former merge, for comparisons).
    """
    run = Path(run_dir)
    sources = record_files(run)
    seen = RowSet(n_rows)
    tmp = run / ".requests.parquet.tmp"
    count = 0
    with pq.ParquetWriter(tmp, REQUEST_SCHEMA) as writer:
        groups = _RowGroups(writer, row_group_rows)
        for path in sources:
            for t in _tables(path):
                rows = t.column("row").fill_null(-1).to_numpy()
                inside = (rows >= 0) & (rows < n_rows)
                keep = inside.copy()
                keep[inside] = ~seen.contains(rows[inside])
                # A part never repeats a row within itself, but be exact: first one wins.
                _, first = np.unique(rows, return_index=True)
                once = np.zeros(len(rows), dtype=bool)
                once[first] = True
                keep &= once
                if keep.any():
                    seen.add(rows[keep])
                    kept = t.filter(pa.array(keep))
                    groups.add(kept)
                    count += kept.num_rows
                dropped = int((~keep).sum())
                if dropped:
                    _log.info("%s: %d record(s) for rows already recorded, dropped", path, dropped)
        groups.flush()
    os.replace(tmp, run / "requests.parquet")
    for path in sources:
        if path.parent.name == PARTS_DIR:
            path.unlink(missing_ok=True)
    parts = run / PARTS_DIR
    if parts.is_dir():
        for stale in parts.glob(".*.tmp"):  # a part a killed writer never renamed
            stale.unlink(missing_ok=True)
        if not any(parts.iterdir()):
            parts.rmdir()
    return count
