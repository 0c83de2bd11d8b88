"""Chaos in the load runner: `easel load` SIGKILLed mid-run, then `easel load --resume DIR`.

The gateway (in this process, real HTTP on 127.0.0.1) resells one SIMULATED vendor; `easel
load` runs as a subprocess in a session of its own (its driver and the Ray it starts) sending
Poisson traffic at 10 req/s for 30 s. Once a third of the rows have records on disk the whole
session is SIGKILLed; `easel load --resume DIR` (another process) finishes the folder.

Pass: every manifest row exactly one record in requests.parquet (none lost, none twice); the
resume sent only the rows without a record (the vendor saw at most the rows plus those in
flight or unflushed at the kill, `load.json`'s second attempt says `recorded_before` = the
records on disk); every request succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from config import EaselConfig
from tests._util import kill_session_when, set_env
from tests.chaos._scenario import load_record, write_record
from tests.chaos._vendor import vendor_config, vendor_gateway

pytestmark = pytest.mark.chaos

RATE, SECONDS = 10.0, 30.0
CRITERION = (
    "every manifest row exactly one record; the resume sends only the rows without a record "
    "(recorded_before = the records on disk); every request succeeds"
)


def _on_disk(run: Path) -> int:
    parts = sorted((run / "records").glob("part-*.parquet"))
    return sum(pq.read_metadata(p).num_rows for p in parts)


def test_load_runner_kill_and_resume(tmp_path):
    cfg = vendor_config()
    with vendor_gateway(cfg) as (url, vendor):
        _kill_and_resume(cfg, url, vendor, tmp_path)


def _kill_and_resume(cfg: EaselConfig, url: str, vendor: str, tmp_path: Path) -> None:
    from load_tests.generators import build_table
    from load_tests.manifest import write_manifest
    from simulators import sim_stats

    n = int(RATE * SECONDS)
    rng = np.random.default_rng(7)
    manifest = write_manifest(
        build_table(cfg, np.sort(rng.uniform(0, SECONDS, n)), rng), tmp_path / "in.parquet"
    )
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    run = tmp_path / "run"
    easel = [sys.executable, "-m", "easel.cli"]
    common = ["--no-progress", "--warmup", "0"]
    ray_tmp = Path("/tmp") / f"easel-chaos-load-{os.getpid()}"  # short: socket paths
    base = sim_stats(vendor)["requests"]
    with set_env({"RAY_TMPDIR": str(ray_tmp)}):
        cmd = [*easel, "load", "--config", str(tmp_path / "config.yaml"), "--manifest"]
        cmd += [str(manifest), "--url", url, "--out", str(run), *common]
        kill_session_when(cmd, lambda: _on_disk(run) >= n // 3, timeout=120)
        on_disk = _on_disk(run)
        sent_before = sim_stats(vendor)["requests"] - base
        t = time.monotonic()
        resume = subprocess.run(
            [*easel, "load", "--resume", str(run), *common], capture_output=True, timeout=300
        )
        resume_s = time.monotonic() - t
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resume.returncode == 0, resume.stderr.decode(errors="replace")[-3000:]
    records = pq.read_table(run / "requests.parquet").to_pylist()
    expected = pq.read_table(manifest, columns=["job_id"]).column(0).to_pylist()
    log = json.loads((run / "load.json").read_text())
    first = [r for r in records if r["attempt"] == 0]
    cut = max(r["scheduled_s"] for r in first)
    sent_total = sim_stats(vendor)["requests"] - base
    record = load_record(
        "load_runner_kill_resume", records, expected, start=cut, end=cut, criterion=CRITERION,
        rate_req_s=RATE, seconds=SECONDS, rows=n, records_on_disk_at_kill=on_disk,
        vendor_requests_before_resume=sent_before, vendor_requests_total=sent_total,
        resent_after_kill=sent_total - n, resume_wall_s=round(resume_s, 3),
        attempts=[{k: a[k] for k in ("attempt", "recorded_before", "to_send", "clock_origin_s")}
                  for a in log["attempts"]],
    )  # fmt: skip
    write_record(record)
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    assert len(records) == n, record
    assert [a["attempt"] for a in log["attempts"]] == [0, 1], record
    assert log["attempts"][1]["recorded_before"] == on_disk == len(first), record
    assert log["attempts"][1]["to_send"] == n - on_disk, record
    # Resent: only rows sent before the kill whose record was not yet on disk.
    assert sent_total - sent_before == n - on_disk, record
    assert record["failed"] == 0, record
