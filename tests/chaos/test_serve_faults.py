"""Chaos inside a provider's Serve: a model replica killed, the Serve controller killed, the app
redeployed with fewer replicas, each under load from the real generator.

One local stack in the default mode (one Ray, one Serve app per provider, the gateway its own
process, everything on 127.0.0.1) serves one tiny model on two providers, one replica each;
`load_tests.run_load` sends Poisson traffic through the gateway while this thread applies the
fault (`tests/chaos/_scenario.py` writes each scenario's record):

1. `replica_kill`: SIGKILL the worker process of `lambda-sim`'s model replica (its pid from
   Ray's state API, as `easel cluster status --json` lists it). Requests it held fail over at
   the gateway to `runpod-sim`; Serve starts a new replica. Pass: no row lost or duplicated, no
   request fails (each was retriable), a new replica alive within 60 s, 5 successes in a row
   within 10 s of the kill.
2. `controller_kill`: SIGKILL the Serve controller's process. Serve's data plane (proxy,
   ingress, replicas) keeps serving while Ray restarts the controller (a detached actor with
   unlimited restarts). Pass: no row lost or duplicated, no request fails, the controller
   back (a new process, `serve.status()` answering with the app running) within 60 s.
3. `redeploy_fewer_replicas`: `lambda-sim`'s app first at 2 replicas of the model, then, mid
   run, `serve.run` of the same app at 1 (the config's replicas changed, so Serve rolls the
   deployments to the new version and drains the old replicas). Pass: no row lost or
   duplicated, no request fails, one replica left when it is done.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import EaselConfig, load_config, parse_config
from tests._util import set_env, wait_for
from tests.chaos._scenario import Fault, gateway_answers, run_scenario, watch, write_record

pytestmark = pytest.mark.chaos

MODEL = "sdxl-turbo"
VICTIM = "lambda-sim"
KEY = "chaos-serve-admin"
RATE, SECONDS = 3.0, 30.0
REDEPLOY_SECONDS = 50.0  # the redeploy itself took ~19 s here: leave an "after" window


def _cfg(replicas: int = 1) -> EaselConfig:
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == MODEL)
    m["providers"] = [VICTIM, "runpod-sim"]
    m["autoscaling"].update(min_replicas=replicas, initial_replicas=replicas, max_replicas=replicas)
    data["models"] = [m]
    data["traffic"]["model_mix"] = {}
    data["evaluation"]["anchors"]["human_anchor_model"] = MODEL
    data["routing"].update(weights={}, request_timeout_s=20, recheck_after_s=1.0)
    return parse_config(data, f"<chaos serve config, {replicas} replicas>")


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    """The local stack on a Ray of its own (its own temp folder), with an admin key."""
    from serve_apps.local.stack import LocalStack

    folder = tempfile.mkdtemp(prefix="easel-chaos-", dir="/tmp")  # short: socket paths
    with set_env({"RAY_TMPDIR": folder, "EASEL_ADMIN_KEY": KEY}):
        import ray

        if ray.is_initialized():
            ray.shutdown()
        try:
            with LocalStack(_cfg(), gateway_env={"EASEL_ADMIN_KEY": KEY}) as s:
                yield s
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _actors(prefix: str) -> dict[str, int]:
    """ALIVE actors whose name starts with `prefix`: {name: pid} (Ray's state, from the GCS)."""
    import ray

    return {
        a["Name"]: int(a["Pid"])
        for a in ray._private.state.actors().values()
        if a.get("State") == "ALIVE" and (a.get("Name") or "").startswith(prefix) and a.get("Pid")
    }


def _replicas() -> dict[str, int]:
    from serve_apps.local.providers import app_name
    from serve_apps.provider.app import deployment_name, model_app_name

    app = model_app_name(app_name(VICTIM), MODEL)  # the model's own Serve application
    return _actors(f"SERVE_REPLICA::{app}#{deployment_name(MODEL, VICTIM)}#")


def _run(stack: Any, tmp_path: Path, name: str, faults: list[Fault], criterion: str,
         extra: dict[str, Any], watchers: list[threading.Thread],
         seconds: float = SECONDS) -> dict[str, Any]:  # fmt: skip
    """The scenario's record, with what its watchers measured, written; judged for no failure."""
    base = gateway_answers(stack.url, KEY)
    record = run_scenario(
        name, cfg=stack.cfg, url=stack.url, model=MODEL, rate=RATE, seconds=seconds,
        faults=faults, started=lambda: gateway_answers(stack.url, KEY) > base, criterion=criterion,
        run_dir=tmp_path, timeout_s=20.0, extra=extra,
    )  # fmt: skip
    for w in watchers:
        w.join()
    write_record(record := {**record, **extra})
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    assert record["before"]["requests"] and record["after"]["requests"], record
    assert record["failed"] == 0, record
    return record


def test_replica_kill(stack, tmp_path):
    extra: dict[str, Any] = {}
    watchers: list[threading.Thread] = []

    def kill() -> None:
        (name, pid), *_ = sorted(_replicas().items())
        extra["killed"] = {"replica": name, "pid": pid}
        os.kill(pid, signal.SIGKILL)
        watchers.append(watch(extra, "replica_back_s", lambda: _replicas() and pid not in
                               _replicas().values(), 60))  # fmt: skip

    record = _run(
        stack, tmp_path, "replica_kill", [Fault("SIGKILL a model replica", 0.35 * SECONDS, kill)],
        "no row lost or duplicated; no request fails (the gateway fails the replica's requests "
        "over); a new replica alive within 60 s; 5 successes in a row within 10 s of the kill",
        extra, watchers,
    )  # fmt: skip
    assert record["replica_back_s"] is not None, record  # within the watch's 60 s
    assert record["recover_s"] is not None and record["recover_s"] <= 10, record


def test_controller_kill(stack, tmp_path):
    from ray import serve

    from serve_apps.local.providers import app_name

    extra: dict[str, Any] = {}
    watchers: list[threading.Thread] = []
    controller = "SERVE_CONTROLLER_ACTOR"

    def back(old: int) -> bool:
        pids = set(_actors(controller).values()) - {old}
        app = serve.status().applications.get(app_name(VICTIM))
        return bool(pids) and app is not None and app.status == "RUNNING"

    def kill() -> None:
        (pid,) = [p for n, p in _actors(controller).items() if n == controller]
        extra["killed"] = {"actor": controller, "pid": pid}
        os.kill(pid, signal.SIGKILL)
        watchers.append(watch(extra, "controller_back_s", lambda: back(pid), 60))

    record = _run(
        stack, tmp_path, "controller_kill",
        [Fault("SIGKILL the Serve controller", 0.35 * SECONDS, kill)],
        "no row lost or duplicated; no request fails while the controller is down (Serve's "
        "data plane keeps serving); the controller back, apps RUNNING, within 60 s",
        extra, watchers,
    )  # fmt: skip
    assert record["controller_back_s"] is not None, record


def test_redeploy_fewer_replicas(stack, tmp_path):
    from ray import serve

    from serve_apps.api.paths import model_route_prefix
    from serve_apps.local.providers import app_name
    from serve_apps.provider.app import build_model_app, model_app_name

    def deploy(replicas: int) -> None:  # the model's own application, where its replicas run
        serve.run(
            build_model_app(_cfg(replicas), VICTIM, MODEL),
            name=model_app_name(app_name(VICTIM), MODEL),
            route_prefix=model_route_prefix(f"/{VICTIM}", MODEL),
        )

    deploy(2)
    wait_for(lambda: len(_replicas()) == 2, timeout=120)
    watchers: list[threading.Thread] = []
    extra: dict[str, Any] = {"replicas_before": 2}

    def replicas_after() -> bool:
        if len(_replicas()) != 1:
            return False
        extra["replicas_after"] = 1
        return True

    def shrink() -> None:
        t = time.monotonic()
        deploy(1)
        extra["redeploy_s"] = round(time.monotonic() - t, 3)
        watchers.append(watch(extra, "one_replica_s", replicas_after, 60))

    record = _run(
        stack, tmp_path, "redeploy_fewer_replicas",
        [Fault("serve.run at 1 replica (was 2)", 10.0, shrink)],
        "no row lost or duplicated; no request fails while the app rolls from 2 replicas to 1; "
        "one replica left within 60 s of the redeploy",
        extra, watchers, seconds=REDEPLOY_SECONDS,
    )  # fmt: skip
    assert record.get("replicas_after") == 1, record
