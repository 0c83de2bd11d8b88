"""A run folder's checks before anything starts: resume only what `easel load` began."""

from __future__ import annotations

import pytest

from load_tests.generators import generate_manifest
from load_tests.manifest import write_manifest
from load_tests.records import PARTS_DIR, PartWriter, new_record
from load_tests.run_folder import Attempt, LoadLog, prepare_run_folder


def _manifest(cfg, path, seed=1):
    return write_manifest(generate_manifest(cfg, jobs=5, rate=10, seed=seed), path)


def test_a_new_run_copies_the_manifest_and_clears_a_finished_run(cfg, tmp_path):
    src = _manifest(cfg, tmp_path / "m.parquet")
    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.parquet").write_bytes(b"old")
    dst, sha = prepare_run_folder(src, run, resume=False)
    assert dst.read_bytes() == src.read_bytes() and len(sha) == 64
    assert not (run / "requests.parquet").exists()


def test_an_unfinished_run_is_never_overwritten(cfg, tmp_path):
    src = _manifest(cfg, tmp_path / "m.parquet")
    run = tmp_path / "run"
    w = PartWriter(run / PARTS_DIR, "part-a0-d0")
    w.write([new_record({"job_id": "a", "row": 0})])
    w.flush()
    with pytest.raises(ValueError, match="--resume"):
        prepare_run_folder(src, run, resume=False)


def test_resume_needs_a_run_folder_and_its_own_manifest(cfg, tmp_path):
    src = _manifest(cfg, tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_run_folder(None, tmp_path / "nothing", resume=True)
    run = tmp_path / "run"
    _dst, sha = prepare_run_folder(src, run, resume=False)
    LoadLog("http://127.0.0.1:1", "easel", sha, 2, 10.0, True).write(run)
    assert prepare_run_folder(None, run, resume=True) == (run / "manifest.parquet", sha)
    assert prepare_run_folder(src, run, resume=True)[1] == sha  # the same file: fine
    other = _manifest(cfg, tmp_path / "other.parquet", seed=2)
    with pytest.raises(ValueError, match="not the manifest this run was started with"):
        prepare_run_folder(other, run, resume=True)


def test_load_log_round_trips(tmp_path):
    log = LoadLog("http://h:1", "openai", "ab" * 32, 3, 5.0, False, 100, "KEY_ENV", "high")
    log.attempts.append(Attempt(0, "2026-12-01T00:00:00+00:00", 0, 10))
    log.attempts[0].mark_memory("merge")
    log.write(tmp_path)
    assert LoadLog.read(tmp_path) == log
    assert "KEY_ENV" in (tmp_path / "load.json").read_text()  # the variable's name, never a key
