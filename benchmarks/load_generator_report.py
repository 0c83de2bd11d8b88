"""The load generator's tables for docs/performance.md, from the committed results.

Reads benchmarks/results/load_generator.json (schedule, saturated, open), lg_prio_dev.json
(priorities), load_generator_easel.json (overloaded easel, AIPerf) and
load_generator_growth.json (memory growth) and prints each table in Markdown, with the command
and commit that produced it, so the document's figures are generated, not typed.

    python benchmarks/load_generator_report.py > /tmp/lg.md
"""

from __future__ import annotations

import json
import sys
from typing import Any

from _loadgen import RESULTS


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _f(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _errors(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"


def _provenance(d: dict[str, Any]) -> str:
    la = d["machine"]["loadavg"]
    return f"`{d['command']}` (commit {d['commit'][:12]}; load average {la[0]} at the start)"


def _gen_rows(rows: list[dict[str, Any]], label: Any) -> list[str]:
    out = [
        "| run | offered | achieved/offered | send lag p50 | p99 | max | not sent | "
        "most open (per dispatcher) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {label(r)} | {_f(r['offered_rps'], '.1f')} req/s | "
            f"{_f(r['achieved_over_offered'], '.3f')} | {_f(r['send_lag_p50_ms'])} ms | "
            f"**{_f(r['send_lag_p99_ms'])} ms** | {_f(r['send_lag_max_ms'], '.1f')} ms | "
            f"{r['not_sent']} | {r['max_open']} | {_errors(r)} |"
        )
    return out


def generator(d: dict[str, Any]) -> list[str]:
    out = []
    rows = list(d.get("schedule", []))
    if "saturated" in d:
        rows.append(d["saturated"])
    if rows:
        out += ["Schedule and saturation: " + _provenance(d), ""]
        out += _gen_rows(
            rows,
            lambda r: (
                f"echo, {r['target_rps']:g} req/s"
                + (
                    f", {r['concurrency']} at once x {r['service_ms'] / 1000:g} s"
                    if "service_ms" in r
                    else ", instant"
                )
            ),
        )
        out.append("")
    if "open" in d:
        o = d["open"]
        per = _f(o["bytes_per_open_request"] / 1024, ".1f")
        out += [
            "Open requests (one dispatcher, a server that holds every request 30 s): "
            + _provenance(d),
            "",
            "| requests | most open at once | bound (set by) | dispatcher RSS at start | at most "
            "open | per open request | not sent |",
            "|---|---|---|---|---|---|---|",
            f"| {o['rows']:,} | **{o['most_open_sampled']:,}** (max {o['max_open']:,}) | "
            f"{o['bound']:,} ({o['bound_by']}) | {o['rss_at_start_mb']} MB | "
            f"{o['rss_at_most_open_mb']} MB | **{per} KiB** | "
            f"{o['not_sent']} |",
            "",
        ]
    return out


def priorities(d: dict[str, Any]) -> list[str]:
    out = ["Priorities (echo, instant; alternating rounds): " + _provenance(d), ""]
    out += ["| priority | round | in force | send lag p50 | p99 | max | achieved/offered |"]
    out += ["|---|---|---|---|---|---|---|"]
    for r in d["priorities"]:
        out.append(
            f"| {r['priority']} | {r['round']} | {r['scheduler'][0]}, nice {r['niceness'][0]} | "
            f"{_f(r['send_lag_p50_ms'])} ms | {_f(r['send_lag_p99_ms'])} ms | "
            f"{_f(r['send_lag_max_ms'], '.1f')} ms | {_f(r['achieved_over_offered'], '.3f')} |"
        )
    return [*out, ""]


def easel(d: dict[str, Any]) -> list[str]:
    out = []
    if "overload" in d:
        out += [f"Overloaded easel ({d['server']}): " + _provenance(d), ""]
        out += [
            "| priority (in force) | offered | achieved/offered | send lag p50 | p99 | max | "
            "not sent | most open (per dispatcher) | server: ok | failed |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["overload"]:
            out.append(
                f"| {r['priority']} ({', '.join(r['in_force'])}) | "
                f"{_f(r['offered_rps'], '.1f')} req/s | {_f(r['achieved_over_offered'], '.3f')} | "
                f"{_f(r['send_lag_p50_ms'])} ms | **{_f(r['send_lag_p99_ms'])} ms** | "
                f"{_f(r['send_lag_max_ms'], '.1f')} ms | {r['not_sent']} | {r['max_open']} | "
                f"{r['ok']} | {_errors(r)} |"
            )
        out.append("")
    if "side_by_side" in d:
        out += ["easel load and AIPerf, same endpoint and rate: " + _provenance(d), ""]
        out += [
            "| tool | requests | failed | latency p50 | p90 | p95 | p99 | sends/s | "
            "completions/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["side_by_side"]:
            out.append(
                f"| {r['tool']} (round {r['round']}) | {_f(r['n'], '.0f')} | "
                f"{_f(r['errors'], '.0f')} | {_f(r['latency_p50_ms'], '.1f')} ms | "
                f"{_f(r['latency_p90_ms'], '.1f')} ms | {_f(r['latency_p95_ms'], '.1f')} ms | "
                f"{_f(r['latency_p99_ms'], '.1f')} ms | {_f(r.get('achieved_rps'))} | "
                f"{_f(r.get('throughput_rps'))} |"
            )
        out.append("")
    elif "aiperf_error" in d:
        out += [f"AIPerf could not run: {d['aiperf_error']}", ""]
    return out


def growth(d: dict[str, Any]) -> list[str]:
    out = ["Memory growth (echo, instant, no images): " + _provenance(d), ""]
    out += [
        "| manifest rows | driver peak RSS | dispatcher | split coordinator | read task | "
        "achieved/offered | send lag p99 | wall | driver peak at | driver's own peak "
        "(VmHWM, before the summary) | CPU s: dispatcher, coordinator, driver |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        m = r["peak_rss_mb"]
        at = (r.get("peak_at_s") or {}).get("driver")
        cpu = r.get("cpu_s") or {}
        cpu_s = ", ".join(_f(cpu.get(k), ".1f") for k in ("dispatcher", "coordinator", "driver"))
        out.append(
            f"| {r['rows']:,} | {m['driver']} MB | {m['dispatcher']} MB | {m['coordinator']} MB "
            f"| {m['reader']} MB | {_f(r['achieved_over_offered'], '.3f')} | "
            f"{_f(r['send_lag_p99_ms'])} ms | {r['wall_s']:.0f} s | "
            f"{'-' if at is None else f'{at:.0f} s'} | "
            f"{_f(r.get('driver_peak_rss_self_mb'), '.1f')} MB | {cpu_s} |"
        )
    g = d["growth_first_to_last"]
    first, last = d["rows"][0]["rows"], d["rows"][-1]["rows"]
    out += [
        "",
        f"Growth from {first:,} to {last:,} rows: driver {_f(100 * g['driver'], '+.1f')} %, "
        f"dispatcher {_f(100 * g['dispatcher'], '+.1f')} % (peak RSS).",
        "",
        f"![peak RSS per process against manifest rows](../{d['plot']})",
        "",
    ]
    return out


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def targets(gen: dict | None, easel_d: dict | None, grow: dict | None) -> list[str]:
    """The issue's targets, each with what the results show."""
    out = ["| figure (issue 14) | target | measured | |", "|---|---|---|---|"]
    if gen:
        for r in gen.get("schedule", []):
            if r["target_rps"] == 1000:
                p99 = r["send_lag_p99_ms"]
                out.append(
                    f"| send lag p99, 1,000 req/s, echo | <= 2 ms | {_f(p99)} ms, "
                    f"achieved/offered {_f(r['achieved_over_offered'], '.3f')} | "
                    f"{_verdict(p99 <= 2)} |"
                )
        if r := gen.get("saturated"):
            ok = (
                r["send_lag_p99_ms"] <= 5
                and r["not_sent"] == 0
                and r["achieved_over_offered"] >= 0.99
            )
            out.append(
                "| 40 req/s into a saturated echo (3 s, 8 at once), 600 rows | lag p99 <= 5 ms, "
                f"none unsent, achieved/offered >= 0.99 | {_f(r['send_lag_p99_ms'])} ms, "
                f"{r['not_sent']} unsent, {_f(r['achieved_over_offered'], '.3f')}, "
                f"{r['max_open']} open at most | {_verdict(ok)} |"
            )
        if o := gen.get("open"):
            ok = o["most_open_sampled"] >= 20_000 or o["max_open"] >= 20_000
            out.append(
                "| open requests per dispatcher | >= 20,000, cost stated | "
                f"{o['max_open']:,} open at most (bound {o['bound']:,}), "
                f"{_f(o['bytes_per_open_request'] / 1024, '.1f')} KiB each | {_verdict(ok)} |"
            )
    if easel_d and easel_d.get("overload"):
        for r in easel_d["overload"]:
            out.append(
                f"| overloaded easel, priority {r['priority']} | (report) | "
                f"lag p99 {_f(r['send_lag_p99_ms'])} ms, {r['not_sent']} unsent, "
                f"achieved/offered {_f(r['achieved_over_offered'], '.3f')} | |"
            )
    if easel_d and easel_d.get("side_by_side"):
        out.append("| AIPerf side by side | one table | below | met |")
    if grow:
        g = grow["growth_first_to_last"]
        ok = all(v is not None and abs(v) <= 0.10 for v in g.values())
        first, last = grow["rows"][0]["rows"], grow["rows"][-1]["rows"]
        out.append(
            f"| driver and dispatcher peak RSS, {first:,} to {last:,} rows | flat within 10 % | "
            f"driver {_f(100 * g['driver'], '+.1f')} %, dispatcher "
            f"{_f(100 * g['dispatcher'], '+.1f')} % | {_verdict(ok)} |"
        )
    return [*out, ""]


def main() -> int:
    parts: list[str] = targets(
        _load("load_generator"), _load("load_generator_easel"), _load("load_generator_growth")
    )
    if d := _load("load_generator"):
        parts += generator(d)
    if d := _load("lg_prio_dev"):
        parts += priorities(d)
    if d := _load("load_generator_easel"):
        parts += easel(d)
    if d := _load("load_generator_growth"):
        parts += growth(d)
    else:
        parts += [
            "Memory growth: no results yet (`python benchmarks/load_generator_growth.py` writes "
            "benchmarks/results/load_generator_growth.json and .png).",
            "",
        ]
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
