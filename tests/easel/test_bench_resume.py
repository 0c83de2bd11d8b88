"""`easel bench --resume DIR`: which stages a resume keeps, and that kept stages are not rerun.

Cheap (no Ray): the stage-keeping rule on stage records, the state file, the refusals, and a
resume of a folder whose every serving and scoring stage is kept (only price and report run).
The kill-and-resume under a real bench is `tests/easel/test_bench_kill_resume.py` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easel.bench import STAGES, BenchOptions, run_bench
from easel.bench_state import (
    RESUMABLE,
    STATE_FILE,
    ResumeError,
    kept_stages,
    read_state,
    write_state,
)
from tests.easel._synthetic_run import config_with, make_run


def _stages(**status: str) -> list[dict]:
    return [{"name": n, "status": status.get(n, "ok"), "detail": ""} for n in STAGES]


def _touch(run: Path, *names: str) -> None:
    for n in names:
        path = run / RESUMABLE[n]
        if n == "sweep":
            path.mkdir()
        else:
            path.write_bytes(b"x")


def test_a_killed_load_keeps_only_the_manifest(tmp_path):
    _touch(tmp_path, "manifest")
    stages = _stages(load="pending", sweep="pending", usage="pending", score="pending")
    assert kept_stages(tmp_path, stages) == {"manifest"}


def test_finished_stages_with_their_files_are_kept_up_to_the_first_gap(tmp_path):
    _touch(tmp_path, "manifest", "load", "score")
    # sweep was not asked for (skipped): it does not break the chain; usage has no file, so it
    # runs again, and score after it too although its file is there
    stages = _stages(sweep="skipped")
    assert kept_stages(tmp_path, stages) == {"manifest", "load"}
    _touch(tmp_path, "usage")
    assert kept_stages(tmp_path, stages) == {"manifest", "load", "usage", "score"}


def test_a_failed_or_running_stage_is_not_kept(tmp_path):
    _touch(tmp_path, "manifest", "load", "usage", "score")
    assert kept_stages(tmp_path, _stages(load="failed")) == {"manifest"}
    assert kept_stages(tmp_path, _stages(manifest="running")) == set()


def test_the_state_file_round_trips_and_its_absence_is_an_error(tmp_path):
    with pytest.raises(ResumeError, match=STATE_FILE):
        read_state(tmp_path)
    write_state(tmp_path, {"url": None}, _stages())
    assert read_state(tmp_path) == {"options": {"url": None}, "stages": _stages()}
    assert not list(tmp_path.glob(".*tmp"))  # written whole, then renamed


def test_resume_refuses_a_folder_bench_did_not_start_and_fresh_run_options(tmp_path):
    r = run_bench(BenchOptions(resume=str(tmp_path), progress=False))
    assert r.exit_code == 2 and STATE_FILE in (r.error or "")
    r = run_bench(BenchOptions(resume=str(tmp_path), jobs=5, progress=False))
    assert r.exit_code == 2 and "--resume" in (r.error or "")


def test_a_resume_keeps_the_finished_stages_and_runs_only_the_rest(tmp_path):
    cfg = config_with()
    run = make_run(tmp_path / "run", cfg)
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "sweep").mkdir(exist_ok=True)
    # the earlier attempt finished everything up to scoring, then died while pricing
    stages = _stages(price="running", report="pending", sweep="skipped")
    write_state(run, {"url": None, "isolated": False, "sweep": False}, stages)
    kept = {n: (run / RESUMABLE[n]).stat().st_mtime_ns for n in ("manifest", "load", "score")}

    r = run_bench(BenchOptions(resume=str(run), progress=False))
    assert r.exit_code == 0, r.error
    by = {s.name: s for s in r.stages}
    for name in ("manifest", "load", "usage", "score"):
        assert by[name].status == "ok" and by[name].detail.startswith("kept"), by[name]
    for name in ("ray", "models", "serve"):
        assert by[name].status == "skipped", by[name]  # nothing left needed them
    assert by["price"].status == "ok" and not by["price"].detail.startswith("kept")
    for name, mtime in kept.items():  # not recomputed
        assert (run / RESUMABLE[name]).stat().st_mtime_ns == mtime
    state = json.loads((run / STATE_FILE).read_text())
    assert {s["name"]: s["status"] for s in state["stages"]}["price"] == "ok"
