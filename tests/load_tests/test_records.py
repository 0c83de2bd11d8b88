"""Request records and their bounded-memory Parquet writer."""

from __future__ import annotations

import math

import pyarrow.parquet as pq

from load_tests.records import REQUEST_SCHEMA, RecordWriter, new_record, rejected_record


def test_writer_flushes_in_row_groups(tmp_path):
    path = tmp_path / "requests.parquet"
    with RecordWriter(path, flush_rows=10) as w:
        for i in range(25):
            w.write([new_record({"job_id": f"j{i}", "model": "m"}, ok=True, latency_ms=1.0)])
            assert len(w._buffer) < 10  # never more than one row group in memory
        assert w.count == 25
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow.equals(REQUEST_SCHEMA)
    assert pf.metadata.num_rows == 25 and pf.metadata.num_row_groups == 3
    assert pq.read_table(path).column("job_id").to_pylist() == [f"j{i}" for i in range(25)]


def test_new_and_rejected_records_have_every_column():
    rec = new_record({"job_id": "a", "row": 4, "model": "m", "niche": "n"}, ok=True)
    assert set(rec) == set(REQUEST_SCHEMA.names) and rec["row"] == 4 and rec["ok"]
    rej = rejected_record(
        {"row": 9, "job_id": None, "model": "x", "arrival_s": math.nan, "error": "why"}
    )
    assert set(rej) == set(REQUEST_SCHEMA.names)
    assert rej["ok"] is False and rej["error_class"] == "rejected" and rej["error"] == "why"
    assert rej["scheduled_s"] is None and rej["status"] is None and rej["row"] == 9
    assert rejected_record({"arrival_s": 2, "error": "e"})["scheduled_s"] == 2.0
