"""Request records, their crash-safe part files, and the merge that keeps one per row."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from load_tests.records import (
    PARTS_DIR,
    REQUEST_SCHEMA,
    PartWriter,
    merge_records,
    new_record,
    record_files,
    recorded_rows,
    rejected_record,
)


def _rec(i, **kw):
    return new_record({"job_id": f"j{i}", "row": i, "model": "m"}, ok=True, latency_ms=1.0, **kw)


def test_parts_are_whole_files_written_as_the_buffer_fills(tmp_path):
    w = PartWriter(tmp_path / PARTS_DIR, "part-a0-d0", flush_rows=10)
    for i in range(25):
        w.write([_rec(i)])
        assert len(w._buffer) < 10  # never more than one part in memory
    assert w.count == 25 and w.rows == 20
    w.flush()
    parts = sorted((tmp_path / PARTS_DIR).glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-a0-d0-00000{i}.parquet" for i in range(3)]
    assert not list((tmp_path / PARTS_DIR).glob(".*"))  # nothing left under a temporary name
    # Each part is a complete file, and the folder reads as one dataset (what a killed run
    # leaves behind is readable as it is).
    assert all(pq.ParquetFile(p).schema_arrow.equals(REQUEST_SCHEMA) for p in parts)
    rows = pq.read_table(tmp_path / PARTS_DIR).column("row").to_pylist()
    assert sorted(rows) == list(range(25))


def test_merge_keeps_the_first_record_of_each_row_and_removes_the_parts(tmp_path):
    parts = tmp_path / PARTS_DIR
    a0 = PartWriter(parts, "part-a0-d0")
    a0.write([_rec(i, attempt=0) for i in range(0, 6)])
    a0.flush()
    # A resume's records, one of them for a row the first attempt already recorded (a crash
    # after the part was written but before the run knew): the earlier record wins.
    a1 = PartWriter(parts, "part-a1-d0")
    a1.write([_rec(i, attempt=1) for i in (5, 6, 7)])
    a1.flush()
    (parts / ".part-a1-d0-000009.parquet.tmp").write_bytes(b"half a file")  # a killed write
    assert recorded_rows(tmp_path, 10).rows().tolist() == list(range(8))
    assert merge_records(tmp_path, 10) == 8
    t = pq.read_table(tmp_path / "requests.parquet")
    assert sorted(t.column("row").to_pylist()) == list(range(8))
    by_row = dict(zip(t.column("row").to_pylist(), t.column("attempt").to_pylist(), strict=True))
    assert by_row[5] == 0 and by_row[7] == 1
    assert not parts.exists()
    assert record_files(tmp_path) == [tmp_path / "requests.parquet"]


def test_merge_coalesces_small_parts_into_whole_row_groups(tmp_path):
    w = PartWriter(tmp_path / PARTS_DIR, "part-a0-d0", flush_rows=3)
    for i in range(20):
        w.write([_rec(i)])
    w.flush()
    assert len(record_files(tmp_path)) == 7  # parts of 3 rows
    assert merge_records(tmp_path, 20, row_group_rows=8) == 20
    meta = pq.ParquetFile(tmp_path / "requests.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [8, 8, 4]
    t = pq.read_table(tmp_path / "requests.parquet")
    assert t.column("row").to_pylist() == list(range(20))  # in order, each once


def test_a_crash_between_merge_and_cleanup_never_duplicates(tmp_path):
    parts = tmp_path / PARTS_DIR
    w = PartWriter(parts, "part-a0-d0")
    w.write([_rec(i) for i in range(4)])
    w.flush()
    first = parts / "part-a0-d0-000000.parquet"
    kept = first.read_bytes()
    assert merge_records(tmp_path, 4) == 4
    parts.mkdir()
    first.write_bytes(kept)  # as if the merge had replaced requests.parquet, then died
    w2 = PartWriter(parts, "part-a1-d0")
    w2.write([_rec(3)])
    w2.flush()
    assert merge_records(tmp_path, 4) == 4
    assert sorted(pq.read_table(tmp_path / "requests.parquet").column("row").to_pylist()) == [
        0,
        1,
        2,
        3,
    ]


def test_an_older_requests_file_without_the_new_columns_merges(tmp_path):
    old = pa.table({"job_id": ["a", "b"], "row": pa.array([0, 1], pa.int64()), "ok": [True, False]})
    pq.write_table(old, tmp_path / "requests.parquet")
    w = PartWriter(tmp_path / PARTS_DIR, "part-a1-d0")
    w.write([_rec(2, attempt=1)])
    w.flush()
    assert merge_records(tmp_path, 3) == 3
    t = pq.read_table(tmp_path / "requests.parquet")
    assert t.schema.equals(REQUEST_SCHEMA)
    assert t.column("attempt").to_pylist() == [None, None, 1]


def test_new_and_rejected_records_have_every_column():
    rec = new_record({"job_id": "a", "row": 4, "model": "m", "niche": "n"}, ok=True)
    assert set(rec) == set(REQUEST_SCHEMA.names) and rec["row"] == 4 and rec["ok"]
    rej = rejected_record(
        {
            "row": 9,
            "job_id": None,
            "model": "x",
            "arrival_s": math.nan,
            "error": "why",
            "reject_codes": ["unknown_model"],
        }
    )
    assert set(rej) == set(REQUEST_SCHEMA.names)
    assert rej["ok"] is False and rej["error_class"] == "rejected" and rej["error"] == "why"
    assert rej["scheduled_s"] is None and rej["status"] is None and rej["row"] == 9
    assert rej["reject_codes"] == ["unknown_model"]
    assert rejected_record({"arrival_s": 2, "error": "e"})["scheduled_s"] == 2.0
