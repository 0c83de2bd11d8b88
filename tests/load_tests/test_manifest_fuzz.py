"""Hostile manifests and logs (hypothesis): every row accepted or rejected with a reason, no crash.

The manifest reader may refuse a whole file only for not being a manifest (`ManifestError`);
anything wrong inside rows (bad ids, duplicate ids, NaN or negative times, unknown models, sizes
out of range, control characters) is a per-row rejection that names the row. A replay log is
either read or refused with a `ValueError` that names the file; what it yields is a manifest
the reader then judges row by row.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import load_config
from load_tests.manifest import ManifestError, read_manifest

CFG = load_config()
MODELS = [m.name for m in CFG.models]
NICHES = [n.name for n in CFG.niches]
_SETTINGS = settings(
    max_examples=60, deadline=None, database=None, derandomize=True,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip

text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc")),
    max_size=40,
)
ids = st.one_of(st.sampled_from(["a", "job-1", "job-1", "", "../x", "a b"]), text)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308])
)
ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 64, 512, 1024, 16]))


@st.composite
def manifests(draw) -> pa.Table:
    n = draw(st.integers(0, 12))
    col = lambda s: draw(st.lists(st.one_of(st.none(), s), min_size=n, max_size=n))  # noqa: E731
    data = {
        "job_id": col(ids),
        "arrival_s": col(floats),
        "model": col(st.one_of(st.sampled_from(MODELS), text)),
        "niche": col(st.one_of(st.sampled_from(NICHES), text)),
        "prompt": col(text),
    }
    for name, strategy in (("width", ints), ("height", ints), ("steps", ints), ("seed", ints),
                           ("tenant", text)):  # fmt: skip
        if draw(st.booleans()):
            data[name] = col(strategy)
    if draw(st.booleans()):
        data["reference_image"] = col(st.binary(max_size=64))
    if draw(st.booleans()):
        data["extra column"] = col(text)  # extras are ignored
    return pa.table(data)


@_SETTINGS
@given(table=manifests())
def test_a_hostile_manifest_gets_one_verdict_per_row(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.parquet"
        pq.write_table(table, path)
        good, rejected = read_manifest(path, CFG)
    assert good.num_rows + len(rejected) == table.num_rows
    assert sorted([*good.column("row").to_pylist(), *(r["row"] for r in rejected)]) == list(
        range(table.num_rows)
    )
    for r in rejected:
        assert r["error"] and isinstance(r["error"], str)
    for row in good.to_pylist():  # what passes is sendable
        assert row["model"] in MODELS and math.isfinite(row["arrival_s"])
        assert row["arrival_s"] >= 0


@_SETTINGS
@given(
    junk=st.one_of(
        st.binary(max_size=200),
        st.just(b"PAR1" + b"\x00" * 16 + b"PAR1"),
        st.just(b""),
    )
)
def test_a_file_that_is_not_a_manifest_is_one_clear_error(junk):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.parquet"
        path.write_bytes(junk)
        try:
            read_manifest(path, CFG)
        except ManifestError as exc:
            assert "not" in str(exc) and "m.parquet" in str(exc)
        else:
            raise AssertionError("junk read as a manifest")


@_SETTINGS
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(["timestamp", "model", "prompt", "niche", "size", "seed", "x"]),
            st.one_of(st.none(), text, floats.filter(math.isfinite), st.integers(-10, 10**12)),
            max_size=7,
        ),
        max_size=15,
    ),
    raw_tail=st.binary(max_size=30),
)
def test_a_hostile_log_is_read_row_by_row_or_refused_by_name(rows, raw_tail):
    from load_tests.generators import generate_manifest

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        text_rows = "\n".join(json.dumps(r) for r in rows).encode()
        log.write_bytes(text_rows + (b"\n" + raw_tail if raw_tail else b""))
        try:
            table = generate_manifest(
                CFG, pattern="replay", replay_path=str(log), fill=["model", "niche", "prompt"]
            )
        except ValueError as exc:  # unreadable, a column missing or unusable: said so
            assert str(exc)
            return
        path = Path(tmp) / "m.parquet"
        pq.write_table(table, path)
        good, rejected = read_manifest(path, CFG)
        assert good.num_rows + len(rejected) == table.num_rows
