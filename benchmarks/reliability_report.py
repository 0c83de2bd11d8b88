"""docs/reliability.md, generated from the records of the last hostile, chaos, overload, soak runs.

Nothing in that page is typed by hand: every figure comes from a JSON record that a test or a
benchmark wrote, and the page names the command that wrote it.

- `benchmarks/results/reliability/hostile.json`: the fuzzing run of
  `tests/serve_apps/gateway/test_hostile.py` (with `EASEL_RELIABILITY_DIR` set);
- `benchmarks/results/reliability/chaos/<scenario>.json`: one per scenario of `tests/chaos`;
- `benchmarks/results/reliability/soak.json`: `make soak`;
- `benchmarks/results/overload.json`: `benchmarks/overload.py`.

    python benchmarks/reliability_report.py [--results benchmarks/results]
        [--out docs/reliability.md]

`make reliability` runs the hostile suite and the short chaos scenario with the records on, then
this; `make chaos` and `make soak` run theirs, then this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_SCENARIOS = {
    # name: (what it does, the command that runs it)
    "vendor_5xx_then_hang_short": (
        "A closed model's SIMULATED vendor answers a burst of 503s, then hangs for a window, "
        "under Poisson load from `easel load`'s generator (default run: short)",
        "pytest tests/chaos/test_vendor_faults.py -k short",
    ),
    "vendor_5xx_then_hang": (
        "The same, longer and at twice the rate",
        "pytest -m chaos tests/chaos/test_vendor_faults.py",
    ),
    "replica_kill": (
        "SIGKILL the worker process of one provider's model replica (default mode: one Ray, "
        "the model on two providers) under Poisson load",
        "pytest -m chaos tests/chaos/test_serve_faults.py",
    ),
    "controller_kill": (
        "SIGKILL the Serve controller's process under load; Ray restarts it",
        "pytest -m chaos tests/chaos/test_serve_faults.py",
    ),
    "redeploy_fewer_replicas": (
        "`serve.run` of one provider's app at 1 model replica (was 2) mid-run",
        "pytest -m chaos tests/chaos/test_serve_faults.py",
    ),
    "provider_kill_isolated": (
        "`--isolated` (one Ray cluster per provider): SIGKILL every process of one of the "
        "model's two providers under load",
        "pytest -m chaos tests/chaos/test_provider_kill.py",
    ),
    "scorer_kill": (
        "SIGKILL one of two scorer actors mid-scoring (evaluation's actor pool); compared with "
        "an un-faulted scoring of the same images (no serving load: scoring reads images)",
        "pytest -m chaos tests/chaos/test_scorer_kill.py",
    ),
    "load_runner_kill_resume": (
        "SIGKILL an `easel load` process (and its Ray) mid-run, then `easel load --resume DIR`",
        "pytest -m chaos tests/chaos/test_load_resume.py",
    ),
}
# A scenario's own figures (beyond the common ones), shown under the table when present.
_EXTRA = {
    "replica_back_s": "a new replica alive after the kill (s)",
    "controller_back_s": "controller back, apps RUNNING, after the kill (s)",
    "redeploy_s": "`serve.run` at 1 replica returned after (s)",
    "replicas_after": "replicas after the redeploy",
    "one_replica_s": "one replica left, after `serve.run` returned (s)",
    "marked_unhealthy_s": "the gateway showed the victim unhealthy after (s)",
    "killed_pids": "processes killed",
    "actors_replaced": "scorer actors replaced",
    "records_at_kill": "records back when the actor was killed",
    "stats_equal_unfaulted": "merged statistics equal the un-faulted scoring's",
    "scoring_s": "scoring wall time with the kill (s)",
    "records_on_disk_at_kill": "records on disk at the kill",
    "resent_after_kill": "requests sent twice (in flight or unflushed at the kill)",
    "resume_wall_s": "`easel load --resume` wall time (s)",
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _chaos(records: list[dict[str, Any]]) -> list[str]:
    out = [
        "| scenario | sent | succeeded | failed | lost | duplicated | error rate before / "
        "during / after | p95 ms before / during / after | detect s | recover s | passed on |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        b, d, a = (
            r[k] or {"error_rate": None, "p95_ms": None} for k in ("before", "during", "after")
        )
        out.append(
            f"| `{r['scenario']}` | {r['sent']} | {r['succeeded']} | {r['failed']} | "
            f"{r['lost']} | {r['duplicated']} | {_fmt(b['error_rate'])} / "
            f"{_fmt(d['error_rate'])} / {_fmt(a['error_rate'])} | {_fmt(b['p95_ms'])} / "
            f"{_fmt(d['p95_ms'])} / {_fmt(a['p95_ms'])} | {_fmt(r['detect_s'])} | "
            f"{_fmt(r['recover_s'])} | {r['time']} |"
        )
    return out


def render(results: Path) -> str:
    rel = results / "reliability"
    lines = [
        "# Reliability",
        "",
        "<!-- Generated by `python benchmarks/reliability_report.py` from the records under "
        "benchmarks/results/: do not edit by hand. -->",
        "",
        "What easel does with hostile input, overload and faults, and the figures of the last "
        "run of each check. Every figure below comes from a JSON record written by the command "
        "named beside it.",
        "",
        "## Hostile input",
        "",
        "`tests/serve_apps/gateway/test_hostile.py` (default run) attacks one live gateway "
        "(real HTTP on 127.0.0.1, closed models behind SIMULATED vendors): schemathesis over "
        "every operation of its OpenAPI document, admin routes included, with a test key "
        "(checks: `not_a_server_error`, response-schema conformance); decompression bombs, "
        "truncated and mislabelled images, wrong content types, oversized and chunked bodies, "
        "slow-loris bodies (408 after `serve.body_timeout_s`), unauthenticated bodies (401 "
        "before a byte is read); every route but `/healthz`, `/readyz` and the docs answers 401 "
        "without a key; no key reaches logs, answers or the OpenAPI document. "
        "`tests/load_tests/test_manifest_fuzz.py` feeds hypothesis-generated manifests and logs "
        "to the manifest reader and the log replay: per-row rejections, never a crash.",
        "",
        "Pass: no 5xx, every answer matches the documented schema, at least 1,000 cases, every "
        "provider healthy afterwards.",
        "",
    ]
    hostile = _load(rel / "hostile.json")
    fuzz = (hostile or {}).get("fuzz")
    if fuzz:
        lines += [
            "| figure | last run |",
            "|---|---|",
            f"| generated cases | {fuzz['cases']} |",
            f"| answers by status | {_counts(fuzz['statuses'])} |",
            f"| server errors (5xx) | {fuzz['server_errors']} |",
            f"| check failures | {fuzz['failures']} |",
            f"| providers unhealthy afterwards | {len(fuzz['unhealthy_after'])} |",
            f"| seconds | {fuzz['seconds']} |",
            "",
            "Command: `EASEL_RELIABILITY_DIR=benchmarks/results/reliability pytest "
            "tests/serve_apps/gateway/test_hostile.py` (`make reliability`). Cases per "
            "operation: "
            + ", ".join(f"`{k}` {v}" for k, v in sorted(fuzz["per_operation"].items()))
            + ".",
            "",
        ]
    else:
        lines += ["No record of a fuzzing run yet: run `make reliability`.", ""]

    lines += ["## Overload", ""]
    over = _load(results / "overload.json")
    if over:
        o = over["phases"]["overload"]
        lines += [
            "Admission control: each gateway process counts its requests in flight per upstream "
            "against the upstream's admission limit (the capacity its probe reports plus its "
            "queue, times the process's share) and answers `503 overloaded` with `Retry-After` "
            "itself, without a round trip, when every upstream of the model is at it. Pass: p95 "
            "of those 503s <= 100 ms at 5x capacity, memory bounded, service back within "
            "seconds of the load dropping.",
            "",
            "| figure | last run |",
            "|---|---|",
            f"| capacity (req/s) | {_fmt(over['capacity_req_per_s'])} |",
            f"| offered during overload (req/s) | {_fmt(over['offered_req_per_s']['overload'])} |",
            f"| answers during overload | {_counts(o['statuses'])} |",
            f"| 503s answered by the gateway itself / by a provider | {o['shed_by_gateway']} / "
            f"{o['shed_by_provider']} |",
            f"| 503 p50 / p95 (ms) | {_fmt(o['shed_p50_ms'])} / {_fmt(o['shed_p95_ms'])} |",
            f"| 503 p95 / the 100 ms bound | {_fmt(over['overload_shed_p95_over_bound'])} |",
            f"| success p95 before / during / after (ms) | "
            f"{_fmt(over['phases']['before']['ok_p95_ms'])} / {_fmt(o['ok_p95_ms'])} / "
            f"{_fmt(over['phases']['after']['ok_p95_ms'])} |",
            f"| back to service after the drop (s) | {_fmt(over['recovered_s_after_drop'])} |",
            "| gateway RSS before / end of overload / after (MB) | "
            + " / ".join(
                _fmt(over["gateway_rss_mb"][k]) for k in ("before", "end_of_overload", "after")
            )
            + " |",
            "",
            f"Command: `{over['command'].strip()}` ({over['time']}; "
            f"{over['simulated']}). A hung upstream is answered 504 at the request's deadline "
            "with its attempt cancelled and unwound before the answer "
            "(`tests/serve_apps/gateway/test_dispatch.py`).",
            "",
        ]
    else:
        lines += ["No overload record yet: run `python benchmarks/overload.py`.", ""]

    lines += ["## Chaos", ""]
    records = []
    for name in _SCENARIOS:
        r = _load(rel / "chaos" / f"{name}.json")
        if r:
            records.append(r)
    lines += ["| scenario | what | command | pass criterion |", "|---|---|---|---|"]
    for name, (what, cmd) in _SCENARIOS.items():
        r = next((x for x in records if x["scenario"] == name), None)
        crit = r["criterion"] if r else "–"
        lines.append(f"| `{name}` | {what} | `{cmd}` | {crit} |")
    lines += [""]
    if records:
        lines += [
            "Windows: requests scheduled before the fault, during it (until a tenth of the "
            "request timeout after its end) and after. Detect: from the fault to the first "
            "failed request (– when none failed). Recover: from the fault's end to the first of "
            "5 successes in a row (scoring: from the kill to the last image scored).",
            "",
            *_chaos(records),
            "",
        ]
        extra = [
            f"| `{r['scenario']}` | {label} | {_fmt(r[key])} |"
            for r in records
            for key, label in _EXTRA.items()
            if key in r
        ]
        if extra:
            lines += ["| scenario | figure | last run |", "|---|---|---|", *extra, ""]
        run = _load(rel / "chaos_run.json")
        if run:
            lines += [
                "`make chaos` runs every scenario above but the short one (each its own test, "
                "with `EASEL_RELIABILITY_DIR` set) and writes these records; the last one took "
                f"{run['wall_s']} s of wall time on a "
                f"{run['cpus']}-CPU machine (exit {run['exit']}; {run['time']}).",
                "",
            ]
    else:
        lines += ["No chaos record yet: run `make chaos`.", ""]

    lines += [
        "## Crash-safe records and resume",
        "",
        "`easel load` writes its records as small complete Parquet parts (renamed into place "
        "whole) at least every second; a killed run leaves every flushed record readable, and "
        "`easel load --resume DIR` sends only the rows without a record (the "
        "`load_runner_kill_resume` scenario above, and `tests/load_tests/test_runner.py` in the "
        "default run). `easel bench` writes `bench_state.json` after every stage; `easel bench "
        "--resume DIR` keeps the stages DIR completed (manifest, load, sweep, usage, score: not "
        "recomputed), resumes an unfinished load stage the same way and runs the rest "
        "(`tests/easel/test_bench_resume.py` in the default run; "
        "`tests/easel/test_bench_kill_resume.py`, `-m slow`, SIGKILLs a bench in its load stage "
        "and resumes it). GPU time of a killed bench's replicas is not charged on resume: their "
        "usage ledgers died with them.",
        "",
    ]
    lines += ["## Soak", ""]
    soak = _load(rel / "soak.json")
    if soak:
        lines += [
            f"{soak['minutes']} minutes at {soak['rate_req_s']} req/s, a random model replica "
            f"killed every {soak['kill_every_s']} s ({soak['kills']} kills). Command: "
            f"`{soak['command']}` ({soak['time']}).",
            "",
            "| figure | last run |",
            "|---|---|",
            f"| requests | {soak['requests']} |",
            f"| success rate | {_fmt(soak['success_rate'])} |",
            "",
            "| process | RSS start (MB) | RSS end (MB) | growth (MB/min) |",
            "|---|---|---|---|",
        ]
        for p in soak["rss"]:
            lines.append(
                f"| {p['name']} | {_fmt(p['start_mb'])} | {_fmt(p['end_mb'])} | "
                f"{_fmt(p['growth_mb_per_min'])} |"
            )
        lines.append("")
    else:
        lines += ["No soak record yet: run `make soak`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--out", default=str(ROOT / "docs/reliability.md"))
    args = ap.parse_args(argv)
    Path(args.out).write_text(render(Path(args.results)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
