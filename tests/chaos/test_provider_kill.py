"""Chaos across providers: a whole provider killed in the isolated mode, under load.

`LocalStack(isolated=True)`: each provider is a Ray cluster of its own (own ports, temp folder,
auth token), one tiny model served by two of them behind the gateway (its own process).
`load_tests.run_load` sends Poisson traffic through the gateway; a third of the way in, every
process of `runpod-sim`'s cluster is SIGKILLed (`LocalStack.kill_provider`, what the failover
drill of `serve_apps/local/drill.py` and `benchmarks/failover.py` kill too). The gateway fails
the requests it held over to `lambda-sim` and marks `runpod-sim` unhealthy.

Pass: no row lost or duplicated; no request fails; the gateway's routing view shows the victim
unhealthy within 2 s of the kill; 5 successes in a row within 5 s of it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import load_config, parse_config
from tests._util import set_env
from tests.chaos._scenario import Fault, gateway_answers, run_scenario, watch, write_record

pytestmark = pytest.mark.chaos

MODEL, VICTIM, KEY = "sdxl-turbo", "runpod-sim", "chaos-isolated-admin"
RATE, SECONDS = 3.0, 30.0
CRITERION = (
    "no row lost or duplicated; no request fails (failover to the other provider); the victim "
    "marked unhealthy within 2 s of the kill; 5 successes in a row within 5 s"
)


def _cfg():
    data = load_config().model_dump(mode="json")
    (m,) = [x for x in data["models"] if x["name"] == MODEL]
    m["providers"] = ["lambda-sim", VICTIM]
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["evaluation"]["anchors"]["human_anchor_model"] = MODEL
    data["routing"].update(weights={}, request_timeout_s=20)
    return parse_config(data, "<chaos isolated config>")


def _unhealthy(url: str) -> bool:
    rows = httpx.get(
        f"{url}/v1/admin/routing", headers={"Authorization": f"Bearer {KEY}"}, timeout=2
    ).json()["providers"]
    return any((r["model"], r["provider"]) == (MODEL, VICTIM) and not r["healthy"] for r in rows)


def test_provider_kill_isolated(tmp_path: Path) -> None:
    from serve_apps.local.stack import LocalStack

    cfg = _cfg()
    extra: dict[str, Any] = {"mode": "isolated"}
    watchers: list[threading.Thread] = []
    folder = tempfile.mkdtemp(prefix="easel-chaos-", dir="/tmp")  # the load's Ray
    try:
        with (
            set_env({"EASEL_ADMIN_KEY": KEY, "RAY_TMPDIR": folder}),
            LocalStack(cfg, isolated=True, gateway_env={"EASEL_ADMIN_KEY": KEY}) as stack,
        ):
            url = stack.url
            assert url is not None

            def kill() -> None:
                extra["killed_pids"] = len(stack.kill_provider(VICTIM))
                watchers.append(watch(extra, "marked_unhealthy_s", lambda: _unhealthy(url), 30))

            base = gateway_answers(url, KEY)
            record = run_scenario(
                "provider_kill_isolated", cfg=cfg, url=url, model=MODEL, rate=RATE,
                seconds=SECONDS, faults=[Fault(f"SIGKILL every process of {VICTIM}",
                                               0.35 * SECONDS, kill)],
                started=lambda: gateway_answers(url, KEY) > base, criterion=CRITERION,
                run_dir=tmp_path, timeout_s=20.0, extra=extra,
            )  # fmt: skip
            for w in watchers:
                w.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write_record(record := {**record, **extra})
    assert record["killed_pids"] > 0, record
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    assert record["before"]["requests"] and record["after"]["requests"], record
    assert record["failed"] == 0, record
    assert record["marked_unhealthy_s"] is not None and record["marked_unhealthy_s"] < 2, record
    assert record["recover_s"] is not None and record["recover_s"] <= 5, record
