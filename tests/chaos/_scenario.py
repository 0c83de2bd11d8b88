"""Running one chaos scenario: the real load generator against a live gateway, faults on a clock.

`run_scenario` writes a manifest (Poisson arrivals of one model), runs `load_tests.run_load` on
a thread (the real open-loop generator: Ray Data, dispatcher actors, one record per row), and on
this thread applies each fault at its offset from the moment the first request reached the
system (`started()` true). The record it returns (and writes as JSON to
`$EASEL_RELIABILITY_DIR/chaos/<name>.json` when set) holds, per scenario: sent, succeeded,
failed, lost (manifest rows without a record) and duplicated; error rate and p95 before, during
and after the fault window; time to detect (fault start to the first failed request) and to
recover (fault end to the first of 5 successes in a row); and the pass criterion it was judged by.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from config import EaselConfig

__all__ = ["Fault", "run_scenario"]


@dataclass(frozen=True)
class Fault:
    """`apply` at `at_s` after the load started; `undo` at `until_s` (None: never undone)."""

    name: str
    at_s: float
    apply: Callable[[], None] = field(repr=False)
    until_s: float | None = None
    undo: Callable[[], None] | None = field(default=None, repr=False)


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    data = sorted(values)
    return round(data[max(0, -(-95 * len(data) // 100) - 1)], 1)


def _window(rows: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in rows if not r["ok"]]
    return {
        "requests": len(rows),
        "failed": len(failed),
        "error_rate": round(len(failed) / len(rows), 4) if rows else None,
        "p95_ms": _p95([r["latency_ms"] for r in rows if r["ok"]]),
        "statuses": sorted({int(r["status"] or 0) for r in failed}),
    }


def run_scenario(
    name: str,
    *,
    cfg: EaselConfig,
    url: str,
    model: str,
    rate: float,
    seconds: float,
    faults: list[Fault],
    started: Callable[[], bool],
    criterion: str,
    run_dir: Path,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Run the load with the faults; the scenario's record (see the module doc)."""
    from load_tests.manifest import write_manifest
    from load_tests.runner import run_load

    n = max(1, int(rate * seconds))
    rng = np.random.default_rng(7)
    arrivals = np.sort(rng.uniform(0, seconds, n))
    from load_tests.generators import build_table

    one = cfg.model_copy(
        update={"traffic": cfg.traffic.model_copy(update={"model_mix": {model: 1.0}})}
    )
    manifest = write_manifest(build_table(one, arrivals, rng), run_dir / "input.parquet")
    result: dict[str, Any] = {}

    def load() -> None:
        try:
            result["load"] = run_load(
                manifest, url, run_dir / "run", cfg, progress=False, warmup_requests=0,
                save_images=False, timeout_s=timeout_s, dispatchers=1,
            )  # fmt: skip
        except BaseException as exc:  # reported by the caller's assertion
            result["error"] = exc

    thread = threading.Thread(target=load, name=f"chaos-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not started():
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError(f"{name}: the load never reached the system: {result}")
        time.sleep(0.02)
    t0 = time.monotonic()
    events: list[tuple[float, Callable[[], None], str]] = []
    for f in faults:
        events.append((f.at_s, f.apply, f"{f.name}: on"))
        if f.until_s is not None and f.undo is not None:
            events.append((f.until_s, f.undo, f"{f.name}: off"))
    applied = []
    for at, action, label in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        action()
        applied.append({"event": label, "at_s": round(time.monotonic() - t0, 3)})
    thread.join(timeout=seconds + timeout_s + 120)
    assert "error" not in result, f"{name}: the load run failed: {result.get('error')!r}"
    assert "load" in result, f"{name}: the load run did not finish"
    records = pq.read_table(result["load"].requests_path).to_pylist()

    # Fault offsets count from t0, when the first request reached the system; in the load's
    # clock (seconds from its start) that is about when the first request was sent.
    shift = min((r["sent_s"] for r in records if r["sent_s"] is not None), default=0.0)
    start = shift + min(f.at_s for f in faults)
    end = shift + max((f.until_s if f.until_s is not None else f.at_s) for f in faults)
    before = [r for r in records if r["scheduled_s"] < start]
    during = [r for r in records if start <= r["scheduled_s"] < end + timeout_s / 10]
    after = [r for r in records if r["scheduled_s"] >= end + timeout_s / 10]
    ids = [r["job_id"] for r in records]
    expected = set(pq.read_table(manifest, columns=["job_id"]).column(0).to_pylist())
    first_fail = min((r["done_s"] for r in records if not r["ok"] and r["done_s"] is not None
                      and r["scheduled_s"] >= start), default=None)  # fmt: skip
    recovered = None
    streak = 0
    for r in sorted((r for r in records if r["scheduled_s"] >= end), key=lambda r: r["sent_s"]):
        streak = streak + 1 if r["ok"] else 0
        if streak == 1:
            first_ok = r["done_s"]
        if streak == 5:
            recovered = round(max(0.0, first_ok - end), 3)
            break
    record = {
        "scenario": name,
        "criterion": criterion,
        "model": model,
        "rate_req_s": rate,
        "seconds": seconds,
        "faults": [
            {k: v for k, v in asdict(f).items() if k in ("name", "at_s", "until_s")} for f in faults
        ],
        "applied": applied,
        "clock_offset_s": round(shift, 3),
        "sent": len(records),
        "succeeded": sum(1 for r in records if r["ok"]),
        "failed": sum(1 for r in records if not r["ok"]),
        "lost": len(expected - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "before": _window(before),
        "during": _window(during),
        "after": _window(after),
        "detect_s": None if first_fail is None else round(max(0.0, first_fail - start), 3),
        "recover_s": recovered,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    folder = os.environ.get("EASEL_RELIABILITY_DIR")
    if folder:
        out = Path(folder) / "chaos"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
