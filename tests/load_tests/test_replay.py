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
from load_tests.provenance import read_provenance


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
        cfg,
        pattern="replay",
        replay_path=str(path),
        columns={"timestamp": "ts", "prompt": "text"},
        fill=["model", "niche"],
    )
    arr = t.column("arrival_s").to_numpy()
    assert t.num_rows == len(us) and arr[0] == 0.0
    assert _gap_error_ms(arr, us) < 1.0
    assert t.column("prompt").to_pylist()[:3] == ["prompt 0", "prompt 1", "prompt 2"]
    # Columns the log lacks come from the config's mix only when asked (fill).
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
        fill=["model", "niche", "prompt"],
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
            json.dumps(
                {"t": int(m), "model": "sdxl-turbo", "niche": "creative-portraits", "prompt": "p"}
            )
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
    t = generate_manifest(cfg, pattern="replay", replay_path=str(path), fill=["niche", "prompt"])
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
    fill = ["model", "niche", "prompt"]
    with pytest.raises(ValueError) as exc:
        generate_manifest(cfg, pattern="replay", replay_path=str(path), fill=fill, **kw)
    assert message in str(exc.value)


def test_log_without_a_timestamp_column(cfg, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("when\n1\n2\n")
    with pytest.raises(ValueError, match="no timestamp column"):
        generate_manifest(cfg, pattern="replay", replay_path=str(path))


def _nested_log(path, n=60):
    """A JSONL log as a gateway writes it: the request nested, an alias name, sizes as 'WxH'."""
    rows = []
    for i in range(n):
        request = {
            "model": "flux-2-dev" if i % 3 == 0 else "sdxl-turbo",
            "size": "128x64" if i % 2 else "64x64",
            "prompt": f"headshot number {i}",
        }
        niche = "corporate_headshots" if i == 5 else "corporate-headshots"
        rows.append({"ts": 1_767_225_600_000 + 250 * i, "niche": niche, "request": request})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_nested_jsonl_replays_its_own_models_prompts_and_sizes(cfg, tmp_path):
    rows = _nested_log(tmp_path / "log.jsonl")
    # Today's behaviour was to replace model and prompt by the config's mix without a word.
    with pytest.raises(ValueError) as exc:
        generate_manifest(
            cfg,
            pattern="replay",
            replay_path=str(tmp_path / "log.jsonl"),
            time_unit="ms",
            columns={"timestamp": "ts"},
        )
    msg = str(exc.value)
    assert "no model, prompt" in msg and "--map model=request.model" in msg
    t = generate_manifest(
        cfg,
        pattern="replay",
        replay_path=str(tmp_path / "log.jsonl"),
        time_unit="ms",
        columns={
            "timestamp": "ts",
            "model": "request.model",
            "prompt": "request.prompt",
            "size": "request.size",
        },
        aliases={"flux-2-dev": "flux2-dev"},
    )
    assert t.column("model").to_pylist() == [
        "flux2-dev" if r["request"]["model"] == "flux-2-dev" else "sdxl-turbo" for r in rows
    ]
    assert t.column("prompt").to_pylist() == [r["request"]["prompt"] for r in rows]
    assert t.column("width").to_pylist() == [128 if i % 2 else 64 for i in range(len(rows))]
    assert set(t.column("height").to_pylist()) == {64}
    assert np.allclose(np.diff(t.column("arrival_s").to_numpy()), 0.25)
    # The misspelt niche stays as the log has it: the reader rejects that row, with the reason.
    good, rejected = read_manifest(write_manifest(t, tmp_path / "m.parquet"), cfg)
    assert good.num_rows == len(rows) - 1
    assert len(rejected) == 1 and "unknown niche 'corporate_headshots'" in rejected[0]["error"]
    # The manifest file says which columns came from the log and which alias was applied.
    prov = read_provenance(tmp_path / "m.parquet")
    assert prov["from_log"] == ["arrival_s", "height", "model", "niche", "prompt", "width"]
    assert prov["filled"] == [] and prov["aliases"] == {"model": {"flux-2-dev": 20}}
    assert "request.model" in prov["columns"]["model"]


def test_config_alias_table_and_fill_are_recorded(make_cfg, tmp_path):
    rows = _nested_log(tmp_path / "log.jsonl", n=10)
    cfg = make_cfg(traffic={"model_aliases": {"flux-2-dev": "flux2-dev"}})
    t = generate_manifest(
        cfg,
        pattern="replay",
        replay_path=str(tmp_path / "log.jsonl"),
        time_unit="ms",
        columns={"timestamp": "ts", "model": "request.model"},
        fill=["prompt"],
    )
    assert set(t.column("model").to_pylist()) == {"flux2-dev", "sdxl-turbo"}
    bank = set(cfg.niche("corporate-headshots").prompts)
    # Drawn prompts follow each row's own (logged) niche.
    assert all(
        p in bank
        for p, n in zip(t.column("prompt").to_pylist(), [r["niche"] for r in rows], strict=True)
        if n == "corporate-headshots"
    )
    prov = json.loads(t.schema.metadata[b"easel.provenance"])
    assert prov["filled"] == ["prompt"] and "drawn from the config" in prov["columns"]["prompt"]


def test_alias_to_an_unknown_model_is_a_config_error(make_cfg):
    from config import ConfigError

    with pytest.raises(ConfigError, match="model_aliases"):
        make_cfg(traffic={"model_aliases": {"flux-2-dev": "flux9"}})


def test_csv_prompts_with_newlines_and_bad_sizes(cfg, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "timestamp,model,niche,prompt,size\n"
        '2026-01-01T00:00:00.5Z,sdxl-turbo,creative-portraits,"a portrait,\nsecond line",64x64\n'
        "2026-01-01T00:00:01.25Z,sdxl-turbo,creative-portraits,plain,auto\n"
    )
    t = generate_manifest(cfg, pattern="replay", replay_path=str(path))
    assert t.num_rows == 2
    assert t.column("prompt").to_pylist() == ["a portrait,\nsecond line", "plain"]
    assert t.column("width").to_pylist() == [64, None]  # 'auto': the server's default
    path.write_text(path.read_text().replace(",auto", ",huge"))
    with pytest.raises(ValueError, match=r"not WIDTHxHEIGHT \(row 1: 'huge'\)"):
        generate_manifest(cfg, pattern="replay", replay_path=str(path))


def test_one_second_logs_are_jittered_within_their_second(cfg, tmp_path):
    path = tmp_path / "log.csv"
    # 5 requests in each of 20 seconds, logged with 1-second resolution.
    lines = ["timestamp,model,niche,prompt"] + [
        f"{1_767_225_600 + s},sdxl-turbo,creative-portraits,p{s}-{k}"
        for s in range(20)
        for k in range(5)
    ]
    path.write_text("\n".join(lines) + "\n")
    plain = generate_manifest(cfg, pattern="replay", replay_path=str(path), jitter_s=0)
    assert len(np.unique(plain.column("arrival_s").to_numpy())) == 20  # bursts of 5
    t = generate_manifest(cfg, pattern="replay", replay_path=str(path))  # auto
    arr = t.column("arrival_s").to_numpy()
    assert len(np.unique(arr)) == 100 and np.all(np.diff(arr) >= 0)
    # Each row stays within its own logged second: second s holds arrivals in [s, s + 1)
    # (less the first row's own jitter, which the shift to 0 removes).
    logged = np.array([int(p[1 : p.index("-")]) for p in t.column("prompt").to_pylist()])
    shift = arr - logged
    assert shift.max() - shift.min() < 1.0
    assert "auto: 1 s" in json.loads(t.schema.metadata[b"easel.provenance"])["jitter"]
    # Millisecond logs are left as they are.
    us = _log_times(50)
    fine = tmp_path / "fine.csv"
    fine.write_text(
        "timestamp,model,niche,prompt\n"
        + "".join(f"{_iso(u)},sdxl-turbo,creative-portraits,p\n" for u in us)
    )
    f = generate_manifest(cfg, pattern="replay", replay_path=str(fine))
    assert _gap_error_ms(f.column("arrival_s").to_numpy(), us) < 1.0


def test_manifest_command_replays_nested_logs_with_aliases_and_fill(tmp_path, capsys):
    from easel.cli import main

    _nested_log(tmp_path / "log.jsonl", n=12)
    out = tmp_path / "m.parquet"
    base = ["manifest", "--pattern", "replay", "--replay-path", str(tmp_path / "log.jsonl")]
    base += ["--time-unit", "ms", "--map", "timestamp=ts", "--out", str(out)]
    assert main(base) == 2
    assert "would invent them" in capsys.readouterr().err
    code = main(
        [
            *base,
            "--map",
            "model=request.model",
            "--alias",
            "flux-2-dev=flux2-dev",
            "--fill",
            "prompt",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "from the log: " in text and "(--fill): prompt" in text and "flux-2-dev (4 rows)" in text
    assert read_provenance(out)["filled"] == ["prompt"]
