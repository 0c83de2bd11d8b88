"""Chaos: a closed model's vendor API answers 5xx, then hangs, under load from the real generator.

The gateway (in this process, real HTTP on 127.0.0.1) resells one SIMULATED vendor (its own
process) through two providers; `load_tests.run_load` sends Poisson traffic open loop. Faults:

1. a burst of 503s from the vendor (`fail_next`): transient, so the vendor client's retries
   (with backoff, inside the request's deadline) must turn every one into a success;
2. then the vendor hangs (service time of minutes) for a window: a request sent into it fails at
   the deadline (504/503, not later) or, when the hang ends before its deadline, succeeds on
   the failover after its first attempt timed out; service must come back once it answers.

Pass: no manifest row lost or duplicated; every request scheduled outside the hang window
succeeds (the 5xx were retried); every failure is a 503/504 answered within the request
deadline plus one second; the first of 5 successes in a row within 5 s of the hang's end.

The short variant runs in the default run (about 20 s, most of it Ray starting); the long one is
`-m chaos` (`make chaos`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config import EaselConfig
from tests._util import set_env
from tests.chaos._scenario import Fault, run_scenario
from tests.chaos._vendor import DEADLINE_S, VENDOR_TIMEOUT_S, vendor_config, vendor_gateway

CRITERION = (
    "no row lost or duplicated; every request outside the hang window succeeds (5xx retried); "
    "failures are 503/504 within the deadline + 1 s; 5 successes in a row within 5 s of the end"
)


@pytest.fixture(scope="module")
def cfg() -> EaselConfig:
    return vendor_config()


@pytest.fixture(scope="module")
def ray_chaos() -> Iterator[None]:
    """A local Ray of our own (its own temp folder), started here, not in the load's thread."""
    import ray

    folder = tempfile.mkdtemp(prefix="easel-chaos-", dir="/tmp")  # short: socket paths
    with set_env({"RAY_TMPDIR": folder}):
        if ray.is_initialized():
            ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(cfg: EaselConfig, ray_chaos: None) -> Iterator[tuple[str, str]]:
    """(gateway URL, vendor URL), with a Ray in this process for the load."""
    with vendor_gateway(cfg) as urls:
        yield urls


def _scenario(cfg, stack, tmp_path: Path, seconds: float, rate: float) -> dict:
    from simulators import sim_configure

    url, vendor = stack
    normal = sim_configure(vendor)["latency"]
    burst_at, hang_at, hang_end = 0.2 * seconds, 0.45 * seconds, 0.65 * seconds

    def started() -> bool:
        return httpx.get(f"{vendor}/_sim/stats", timeout=5).json()["requests"] > 0

    faults = [
        Fault("vendor 503 burst", burst_at,
              lambda: sim_configure(vendor, fail_next=int(rate), fail_status=503)),
        Fault("vendor hangs", hang_at,
              lambda: sim_configure(vendor, latency={"p50_ms": 300_000, "p95_ms": 400_000}),
              until_s=hang_end, undo=lambda: sim_configure(vendor, latency=normal)),
    ]  # fmt: skip
    try:
        record = run_scenario(
            "vendor_5xx_then_hang" + ("" if seconds > 10 else "_short"),
            cfg=cfg, url=url, model="api-fast", rate=rate, seconds=seconds, faults=faults,
            started=started, criterion=CRITERION, run_dir=tmp_path, timeout_s=DEADLINE_S + 5,
        )  # fmt: skip
    finally:
        sim_configure(vendor, latency=normal, fail_next=0)
    return record


def _judge(record: dict, tmp_path: Path, hang_at: float, hang_end: float) -> None:
    import pyarrow.parquet as pq

    hang_at += record["clock_offset_s"]  # into the load's clock
    hang_end += record["clock_offset_s"]
    assert record["lost"] == 0 and record["duplicated"] == 0, record
    rows = pq.read_table(tmp_path / "run" / "requests.parquet").to_pylist()
    outside = [
        r for r in rows if r["scheduled_s"] < hang_at - 0.5 or r["scheduled_s"] > hang_end + 0.5
    ]
    bad = [(r["scheduled_s"], r["status"], r["error"]) for r in outside if not r["ok"]]
    assert not bad, f"requests outside the hang failed: {bad[:5]}; {record}"
    assert record["before"]["requests"] and record["after"]["requests"]
    for r in rows:
        if not r["ok"]:
            assert r["status"] in (503, 504), (r["status"], r["error"])
            assert r["service_ms"] <= (DEADLINE_S + 1.0) * 1000, r["service_ms"]
    # The hang was felt (the scenario tested something): requests failed at the deadline, or
    # their first attempt timed out and a failover after the hang ended answered them.
    assert record["failed"] >= 1 or record["during"]["p95_ms"] >= VENDOR_TIMEOUT_S * 1000, record
    assert record["recover_s"] is not None and record["recover_s"] <= 5.0, record


def test_vendor_5xx_then_hang_short(cfg, stack, tmp_path):
    seconds, rate = 8.0, 5.0
    record = _scenario(cfg, stack, tmp_path, seconds, rate)
    _judge(record, tmp_path, 0.45 * seconds, 0.65 * seconds)


@pytest.mark.chaos
def test_vendor_5xx_then_hang(cfg, stack, tmp_path):
    seconds, rate = 30.0, 10.0
    record = _scenario(cfg, stack, tmp_path, seconds, rate)
    _judge(record, tmp_path, 0.45 * seconds, 0.65 * seconds)
