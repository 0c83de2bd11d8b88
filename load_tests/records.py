"""Request records: one row per manifest row, failures included, written as the run goes.

The request functions never raise: every outcome is a record with `ok`, `status`, `error`,
`error_class` and every timestamp. `*_s` columns are seconds from the run start (the moment
`arrival_s` counts from); `*_ms` columns are milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ERROR_CLASSES",
    "REQUEST_SCHEMA",
    "RecordWriter",
    "new_record",
    "rejected_record",
]

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
    )


class RecordWriter:
    """Appends records to a Parquet file in row groups; memory holds at most `flush_rows`."""

    def __init__(self, path: str | Path, flush_rows: int = 4_096) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, REQUEST_SCHEMA)
        self._buffer: list[dict[str, Any]] = []
        self._flush_rows = flush_rows
        self.rows = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Buffer records (missing columns become null); flush when the buffer is full."""
        self._buffer.extend(records)
        if len(self._buffer) >= self._flush_rows:
            self.flush()

    @property
    def count(self) -> int:
        """Records taken so far, flushed or not."""
        return self.rows + len(self._buffer)

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=REQUEST_SCHEMA)
        self._writer.write_table(table)
        self.rows += table.num_rows
        self._buffer.clear()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
