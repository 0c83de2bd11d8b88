"""`easel manifest` and `easel load` argument handling (the full load path runs in test_runner)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from easel.cli import main


def test_manifest_command_writes_a_manifest(tmp_path, capsys):
    out = tmp_path / "m.parquet"
    code = main(
        [
            "manifest",
            "--pattern",
            "burst",
            "--jobs",
            "200",
            "--rate",
            "5",
            "--peak-ratio",
            "4",
            "--burst-every-s",
            "10",
            "--burst-length-s",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert pq.read_metadata(out).num_rows == 200
    assert "200 jobs" in capsys.readouterr().out


def test_manifest_command_reports_bad_parameters(tmp_path, capsys):
    code = main(["manifest", "--pattern", "ramp", "--out", str(tmp_path / "m.parquet")])
    assert code == 2 and "needs ramp_to" in capsys.readouterr().err
    code = main(
        [
            "manifest",
            "--pattern",
            "replay",
            "--replay-path",
            "x.csv",
            "--window",
            "abc",
            "--out",
            str(tmp_path / "m.parquet"),
        ]
    )
    assert code == 2 and "--window" in capsys.readouterr().err


def test_load_command_reports_bad_input_without_starting_anything(tmp_path, capsys):
    code = main(["load", "--url", "http://127.0.0.1:1", "--out", str(tmp_path)])
    assert code == 2 and "--manifest is required" in capsys.readouterr().err
    bad = tmp_path / "not.parquet"
    bad.write_text("hello")
    code = main(
        [
            "load",
            "--manifest",
            str(bad),
            "--url",
            "http://127.0.0.1:1",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "not a Parquet file" in capsys.readouterr().err
    code = main(["load", "--manifest", str(bad), "--url", "ftp://x", "--out", str(tmp_path / "r")])
    assert code == 2 and "http://" in capsys.readouterr().err


def test_counts_below_their_minimum_fail_at_parse_time(tmp_path, capsys):
    base = ["load", "--url", "http://127.0.0.1:1", "--out", str(tmp_path)]
    for flag, value in [("--max-in-flight", "0"), ("--dispatchers", "0"), ("--warmup", "-1")]:
        with pytest.raises(SystemExit) as exc:
            main([*base, flag, value])
        assert exc.value.code == 2 and f"{flag}: must be >= " in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
