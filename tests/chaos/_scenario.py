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

__all__ = ["Fault", "gateway_answers", "load_record", "run_scenario", "watch", "write_record"]


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
    extra: dict[str, Any] | None = None,
    dispatchers: int = 1,
) -> dict[str, Any]:
    """Run the load with the faults; the scenario's record (see the module doc).

    `extra`: the scenario's own figures (filled by its faults while the load runs), added to
    the record when it is written.
    """
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
                save_images=False, timeout_s=timeout_s, dispatchers=dispatchers,
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
        began = time.monotonic() - t0
        action()
        applied.append(
            {"event": label, "at_s": round(began, 3), "done_s": round(time.monotonic() - t0, 3)}
        )
    thread.join(timeout=seconds + timeout_s + 120)
    assert "error" not in result, f"{name}: the load run failed: {result.get('error')!r}"
    assert "load" in result, f"{name}: the load run did not finish"
    records = pq.read_table(result["load"].requests_path).to_pylist()
    expected = pq.read_table(manifest, columns=["job_id"]).column(0).to_pylist()
    # Fault offsets count from t0, when the first request reached the system; in the load's
    # clock (seconds from its start) that is about when the first request was sent.
    shift = min((r["sent_s"] for r in records if r["sent_s"] is not None), default=0.0)
    # The window ends when the last fault was undone or, for one never undone, when applying
    # it returned (a redeploy takes a while).
    start = shift + min(f.at_s for f in faults)
    end = shift + max(
        max(f.until_s if f.until_s is not None else f.at_s for f in faults),
        max(a["done_s"] for a in applied),
    )
    record = load_record(
        name, records, expected, start=start, end=end, criterion=criterion,
        settle_s=timeout_s / 10,
        model=model, rate_req_s=rate, seconds=seconds,
        faults=[{k: v for k, v in asdict(f).items() if k in ("name", "at_s", "until_s")}
                for f in faults],
        applied=applied, clock_offset_s=round(shift, 3), **(extra or {}),
    )  # fmt: skip
    write_record(record)
    return record


def load_record(
    name: str,
    records: list[dict[str, Any]],
    expected: list[str],
    *,
    start: float,
    end: float,
    criterion: str,
    settle_s: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A scenario's record from its request records (see the module doc).

    `start`/`end`: the fault window in the records' clock (`scheduled_s`); requests scheduled
    before `start` are "before", from `end + settle_s` "after". `expected`: the manifest's job
    ids. `extra` goes into the record as it is (the scenario's own figures).
    """
    before = [r for r in records if r["scheduled_s"] < start]
    during = [r for r in records if start <= r["scheduled_s"] < end + settle_s]
    after = [r for r in records if r["scheduled_s"] >= end + settle_s]
    ids = [r["job_id"] for r in records]
    first_fail = min((r["done_s"] for r in records if not r["ok"] and r["done_s"] is not None
                      and r["scheduled_s"] >= start), default=None)  # fmt: skip
    recovered = None
    streak = 0
    first_ok = 0.0
    later = (r for r in records if r["scheduled_s"] >= end and r["sent_s"] is not None)
    for r in sorted(later, key=lambda r: r["sent_s"]):
        streak = streak + 1 if r["ok"] else 0
        if streak == 1:
            first_ok = r["done_s"]
        if streak == 5:
            recovered = round(max(0.0, first_ok - end), 3)
            break
    return {
        "scenario": name,
        "criterion": criterion,
        **extra,
        "sent": len(records),
        "succeeded": sum(1 for r in records if r["ok"]),
        "failed": sum(1 for r in records if not r["ok"]),
        "lost": len(set(expected) - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "before": _window(before),
        "during": _window(during),
        "after": _window(after),
        "detect_s": None if first_fail is None else round(max(0.0, first_fail - start), 3),
        "recover_s": recovered,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_record(record: dict[str, Any]) -> None:
    """`$EASEL_RELIABILITY_DIR/chaos/<scenario>.json`, when that variable is set."""
    folder = os.environ.get("EASEL_RELIABILITY_DIR")
    if folder:
        out = Path(folder) / "chaos"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{record['scenario']}.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def gateway_answers(url: str, admin_key: str | None = None) -> int:
    """Answers the gateway at `url` gave so far (its Prometheus counter)."""
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=5).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("easel_gateway_requests_total{")
        )
    )


def watch(
    extra: dict[str, Any], key: str, done: Callable[[], Any], bound_s: float
) -> threading.Thread:
    """On a thread: `extra[key]` = seconds until `done()` holds (None if not within `bound_s`)."""
    t0 = time.monotonic()

    def loop() -> None:
        while time.monotonic() - t0 < bound_s:
            try:
                if done():
                    extra[key] = round(time.monotonic() - t0, 3)
                    return
            except Exception:  # the system is what is being broken: keep asking
                pass
            time.sleep(0.05)

    extra[key] = None
    thread = threading.Thread(target=loop, name=f"watch-{key}", daemon=True)
    thread.start()
    return thread
