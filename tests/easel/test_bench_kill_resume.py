"""`easel bench` SIGKILLed during its load stage, then `easel bench --resume DIR` (slow).

A small bench (one tiny model and one closed model, 80 jobs at 4 req/s) runs as a subprocess in
a session of its own; once its load stage has records on disk the whole session (the bench,
its Ray, providers, gateway and vendors) is SIGKILLed. `easel bench --resume DIR` then finishes
the folder.

Pass: the resume exits 0; the manifest is the one the killed bench wrote (kept, not made
again); the load stage resumed (load.json: attempts 0 and 1, the second starting from the
records on disk and sending only the other rows); every manifest row exactly one record; the
stages after it ran (scores.parquet, report.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests._util import kill_session_when, set_env
from tests.easel._synthetic_run import config_with

pytestmark = pytest.mark.slow

JOBS = 80


def _on_disk(run: Path) -> int:
    parts = sorted((run / "records").glob("part-*.parquet"))
    return sum(pq.read_metadata(p).num_rows for p in parts)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_killed_bench_resumes_its_load_stage(tmp_path: Path) -> None:
    import yaml

    data = config_with().model_dump(mode="json")
    data["models"] = [m for m in data["models"] if m["name"] in ("sdxl-turbo", "proprietary-a")]
    data["traffic"].update(model_mix={}, rate=4.0)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    easel = [sys.executable, "-m", "easel.cli", "bench"]
    ray_tmp = Path("/tmp") / f"easel-bench-resume-{os.getpid()}"  # short: socket paths
    with set_env({"RAY_TMPDIR": str(ray_tmp)}):
        cmd = [*easel, "--config", str(path), "--jobs", str(JOBS), "--out", str(run), "--quiet"]
        kill_session_when(cmd, lambda: _on_disk(run) >= JOBS // 4, timeout=400)
        on_disk = _on_disk(run)
        manifest_sha = _sha(run / "manifest.parquet")
        assert not (run / "requests.parquet").exists() and on_disk < JOBS
        try:
            resume = subprocess.run(
                [*easel, "--resume", str(run), "--quiet"], capture_output=True, timeout=600
            )
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resume.returncode == 0, resume.stderr.decode(errors="replace")[-3000:]
    assert _sha(run / "manifest.parquet") == manifest_sha  # kept, not generated again
    log = json.loads((run / "load.json").read_text())
    assert [a["attempt"] for a in log["attempts"]] == [0, 1]
    assert log["attempts"][1]["recorded_before"] == on_disk
    assert log["attempts"][1]["to_send"] == JOBS - on_disk
    ids = pq.read_table(run / "requests.parquet", columns=["job_id"]).column(0).to_pylist()
    want = pq.read_table(run / "manifest.parquet", columns=["job_id"]).column(0).to_pylist()
    assert sorted(ids) == sorted(want) and len(ids) == JOBS  # none lost, none twice
    stages = {s["name"]: s for s in json.loads((run / "summary.json").read_text())["run"]["stages"]}
    assert stages["manifest"]["detail"].startswith("kept"), stages["manifest"]
    assert "recorded before the resume" in stages["load"]["detail"], stages["load"]
    assert (run / "scores.parquet").is_file() and (run / "report.md").is_file()
