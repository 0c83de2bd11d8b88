"""Replaying production logs: timestamps to arrivals, windows, speed-up, column mapping."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from load_tests.generators import generate_manifest
from load_tests.manifest import read_manifest, write_manifest


def _log_times(n=300, seed=5):
    """Irregular epoch times in integer microseconds (bursty gaps from 0.1 ms to seconds)."""
    rng = np.random.default_rng(seed)
    gaps_us = np.round(rng.gamma(0.3, 400_000, size=n - 1)).astype(np.int64) + 100
    return 1_767_225_600_000_000 + np.concatenate([[0], np.cumsum(gaps_us)])


def _iso(us):
    return (
        dt.datetime.fromtimestamp(int(us) // 1_000_000, tz=dt.UTC)
        .replace(microsecond=int(us) % 1_000_000)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _gap_error_ms(arrivals, us, speedup=1.0):
    want = np.diff(us) / 1e6 / speedup
    return np.max(np.abs(np.diff(arrivals) - want)) * 1000.0


def test_csv_iso_timestamps_reproduce_inter_arrivals(cfg, tmp_path):
    us = _log_times()
    path = tmp_path / "log.csv"
    lines = ["ts,text"] + [f"{_iso(u)},prompt {i}" for i, u in enumerate(us)]
    path.write_text("\n".join(lines) + "\n")
    t = generate_manifest(
        cfg, pattern="replay", replay_path=str(path), columns={"timestamp": "ts", "prompt": "text"}
    )
    arr = t.column("arrival_s").to_numpy()
    assert t.num_rows == len(us) and arr[0] == 0.0
    assert _gap_error_ms(arr, us) < 1.0
    assert t.column("prompt").to_pylist()[:3] == ["prompt 0", "prompt 1", "prompt 2"]
    # Columns the log lacks come from the config's mix.
    assert set(t.column("model").to_pylist()) <= {m.name for m in cfg.models}


def test_parquet_timestamps_unsorted_with_speedup_and_window(cfg, tmp_path):
    us = _log_times(400)
    perm = np.random.default_rng(1).permutation(len(us))
    ts = pa.array(us[perm], pa.timestamp("us", tz="UTC"))
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"timestamp": ts, "request": [f"r{i}" for i in perm]}), path)
    rel = (us - us[0]) / 1e6
    start, end = rel[50] - 1e-4, rel[300] - 1e-4  # keeps rows 50..299
    t = generate_manifest(
        cfg,
        pattern="replay",
        replay_path=str(path),
        speedup=4.0,
        window=(start, end),
        columns={"job_id": "request"},
    )
    assert t.column("job_id").to_pylist() == [f"r{i}" for i in range(50, 300)]
    arr = t.column("arrival_s").to_numpy()
    assert arr[0] == 0.0
    assert _gap_error_ms(arr, us[50:300], speedup=4.0) < 1.0


def test_jsonl_epoch_milliseconds_and_jobs_cap(cfg, tmp_path):
    us = _log_times(100)
    ms = us // 1000
    path = tmp_path / "log.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"t": int(m), "model": "sdxl-turbo", "niche": "creative-portraits"})
            for m in ms
        )
    )
    t = generate_manifest(
        cfg,
        pattern="replay",
        replay_path=str(path),
        jobs=40,
        time_unit="ms",
        columns={"timestamp": "t"},
    )
    assert t.num_rows == 40
    assert _gap_error_ms(t.column("arrival_s").to_numpy(), ms[:40] * 1000) < 1e-6
    assert set(t.column("model").to_pylist()) == {"sdxl-turbo"}
    assert set(t.column("width").to_pylist()) == {cfg.model("sdxl-turbo").resolution.default}


def test_unknown_models_and_bad_times_become_rejected_rows(cfg, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "timestamp,model\n"
        "2026-01-01T00:00:00Z,sdxl-turbo\n"
        "2026-01-01T00:00:01Z,midjourney-v9\n"
        "not a time,sdxl-turbo\n"
        "2026-01-01T00:00:02Z,flux2-dev\n"
    )
    t = generate_manifest(cfg, pattern="replay", replay_path=str(path))
    assert t.num_rows == 4  # nothing dropped silently
    good, rejected = read_manifest(write_manifest(t, tmp_path / "m.parquet"), cfg)
    reasons = " | ".join(r["error"] for r in rejected)
    assert good.num_rows == 2 and len(rejected) == 2
    assert "unknown model 'midjourney-v9'" in reasons
    assert "arrival_s" in reasons


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"columns": {"timestamp": "when"}}, "no column(s) ['when']"),
        ({"columns": {"colour": "x"}}, "cannot map"),
        ({"window": (5, 1)}, "must be after its start"),
    ],
)
def test_replay_errors_are_clear(cfg, tmp_path, kw, message):
    path = tmp_path / "log.csv"
    path.write_text("timestamp\n2026-01-01T00:00:00Z\n2026-01-01T00:00:03Z\n")
    with pytest.raises(ValueError) as exc:
        generate_manifest(cfg, pattern="replay", replay_path=str(path), **kw)
    assert message in str(exc.value)


def test_log_without_a_timestamp_column(cfg, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("when\n1\n2\n")
    with pytest.raises(ValueError, match="no timestamp column"):
        generate_manifest(cfg, pattern="replay", replay_path=str(path))
