"""Soak (`make soak`, marker `slow`): low-rate traffic for a long time, a random replica killed
every minute; success rate and the RSS growth of every process.

The local stack in the default mode (one Ray, one Serve app per provider) serves one tiny model
on two providers; `load_tests.run_load` sends Poisson traffic at `EASEL_SOAK_RATE` req/s (default
1) for `EASEL_SOAK_MINUTES` (default 30) while this thread `ray.kill`s one model replica, chosen
at random, every `EASEL_SOAK_KILL_EVERY_S` (default 60): Serve replaces it, the
gateway fails the requests it held over to the other provider. RSS is sampled at the start and
the end for the gateway, the simulated vendors and every Ray process (by name, summed over
processes of that name).

Pass: no manifest row lost or duplicated; success rate >= 0.98. The record goes to
`$EASEL_RELIABILITY_DIR/soak.json` (docs/reliability.md shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config import load_config, parse_config

pytestmark = pytest.mark.slow

MINUTES = float(os.environ.get("EASEL_SOAK_MINUTES", "30"))
RATE = float(os.environ.get("EASEL_SOAK_RATE", "1"))
KILL_EVERY_S = float(os.environ.get("EASEL_SOAK_KILL_EVERY_S", "60"))
MODEL = "sdxl-turbo"


def _cfg():
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == MODEL)
    m["providers"] = ["lambda-sim", "runpod-sim"]
    m["autoscaling"].update(min_replicas=1, initial_replicas=1, max_replicas=1)
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["evaluation"]["anchors"]["human_anchor_model"] = MODEL
    data["routing"]["weights"] = {}
    return parse_config(data, "<soak config>")


def _rss(pids_by_name: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for name, pids in pids_by_name.items():
        total = 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        out[name] = round(total / 2**20, 1)
    return out


def _processes(gateway_pid: int, vendor_pids: list[int]) -> dict[str, list[int]]:
    import psutil

    by: dict[str, list[int]] = {"gateway": [gateway_pid], "simulated vendors": vendor_pids}
    me = psutil.Process()
    for p in me.children(recursive=True):
        try:
            name = " ".join(p.cmdline()[:1]).rsplit("/", 1)[-1] or p.name()
            if p.pid in (gateway_pid, *vendor_pids):
                continue
            title = p.name()
            key = title if title.startswith(("ray::", "raylet", "gcs_server")) else name
            by.setdefault(key[:40], []).append(p.pid)
        except psutil.Error:
            pass
    return by


def _kill_a_replica(rng: random.Random) -> str | None:
    import ray

    names = [
        a["Name"]
        for a in ray._private.state.actors().values()
        if a.get("State") == "ALIVE"
        and (a.get("Name") or "").startswith("SERVE_REPLICA::")
        and f"#{MODEL}--" in (a.get("Name") or "")
    ]
    if not names:
        return None
    victim = rng.choice(sorted(names))
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    return victim


# The suite's --timeout (600 s) is for ordinary tests: the soak's own length, plus the stack's
# start and stop, bounds this one.
@pytest.mark.timeout(int(MINUTES * 60) + 600)
def test_soak(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from load_tests.generators import build_table
    from load_tests.manifest import write_manifest
    from load_tests.runner import run_load
    from serve_apps.local.stack import LocalStack

    cfg = _cfg()
    seconds = MINUTES * 60
    n = max(1, int(RATE * seconds))
    rng = np.random.default_rng(11)
    one = cfg.model_copy(
        update={"traffic": cfg.traffic.model_copy(update={"model_mix": {MODEL: 1.0}})}
    )
    manifest = write_manifest(
        build_table(one, np.sort(rng.uniform(0, seconds, n)), rng), tmp_path / "in.parquet"
    )
    kills: list[dict[str, Any]] = []
    with LocalStack(cfg, state_dir=tmp_path / "stack") as stack:
        assert stack.url is not None and stack.gateway is not None
        procs = _processes(stack.gateway.pid, [v.process.pid for v in stack.vendors.values()])
        rss_start = _rss(procs)
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                result["load"] = run_load(
                    manifest, stack.url, tmp_path / "run", cfg, progress=False,
                    warmup_requests=1, save_images=False, dispatchers=1,
                )  # fmt: skip
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        started = time.monotonic()
        pick = random.Random(5)
        while thread.is_alive():
            thread.join(timeout=1.0)
            due = started + KILL_EVERY_S * (len(kills) + 1)
            if time.monotonic() >= due and time.monotonic() < started + seconds:
                victim = _kill_a_replica(pick)
                kills.append({"at_s": round(time.monotonic() - started, 1), "replica": victim})
        elapsed_min = (time.monotonic() - started) / 60
        rss_end = _rss(procs)
    assert "error" not in result, result
    records = pq.read_table(result["load"].requests_path).to_pylist()
    ids = [r["job_id"] for r in records]
    ok = sum(1 for r in records if r["ok"])
    record = {
        "minutes": MINUTES,
        "rate_req_s": RATE,
        "kill_every_s": KILL_EVERY_S,
        "kills": len([k for k in kills if k["replica"]]),
        "kill_log": kills,
        "requests": len(records),
        "lost": n - len(set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "success_rate": round(ok / len(records), 4) if records else None,
        "rss": [
            {
                "name": name,
                "start_mb": rss_start[name],
                "end_mb": rss_end[name],
                "growth_mb_per_min": round((rss_end[name] - rss_start[name]) / elapsed_min, 2),
            }
            for name in rss_start
        ],
        "command": f"EASEL_SOAK_MINUTES={MINUTES:g} make soak",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    folder = os.environ.get("EASEL_RELIABILITY_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "soak.json").write_text(json.dumps(record, indent=2) + "\n")
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    assert record["kills"] >= max(1, int(seconds // KILL_EVERY_S) - 1), record
    assert record["success_rate"] is not None and record["success_rate"] >= 0.98, record
