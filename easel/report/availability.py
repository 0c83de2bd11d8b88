"""The provider availability table: what the gateway saw of each provider during the run.

`easel bench` writes `availability.json` (the gateway's per-upstream figures for the run's
window, `serve_apps.gateway.availability.availability_rows`); the report shows one row per
(provider, model): requests, error rate, failovers, uptime, and how long an outage took to be
detected and to recover. A run folder without the file (an older run, a gateway without an
admin key) gets a table that says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from easel.report.tables import Table, fmt_num, fmt_pct

__all__ = ["availability_section", "availability_table"]


def availability_section(run_dir: str | Path) -> dict[str, Any] | None:
    """`availability.json` of a run folder, or None when the run has none."""
    path = Path(run_dir) / "availability.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("rows"), list) else None


def _seconds(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def availability_table(s: Mapping[str, Any]) -> Table:
    """Per (provider, model): uptime, error rate, failovers, time to detect and to recover."""
    a = s.get("availability") or {}
    t = Table(
        "availability",
        "Provider availability (as the gateway saw it)",
        [
            "Provider",
            "Model",
            "Requests",
            "Error rate",
            "Failovers",
            "Uptime",
            "Unhealthy",
            "Outages",
            "Time to detect",
            "Time to recover",
        ],
    )
    rows = sorted(a.get("rows") or [], key=lambda r: (r["provider"], r["model"]))
    for i, r in enumerate(rows):
        if r.get("episodes") or r.get("errors"):
            t.flagged.add(i)
        t.rows.append(
            [
                r["provider"],
                r["model"],
                str(r["requests"]),
                fmt_pct(r.get("error_rate")),
                str(r["failovers"]),
                f"{fmt_num(r.get('uptime_pct'), 2)} %",
                _seconds(r.get("unhealthy_s")),
                str(r.get("episodes", 0)),
                _seconds(r.get("detect_s")),
                _seconds(r.get("recover_s")),
            ]
        )
    if not rows:
        t.notes.append("No availability figures: the run has no availability.json.")
        return t
    window = float(a.get("end_s", 0)) - float(a.get("start_s", 0))
    t.notes.append(
        f"From the gateway's own records over the run's {window:,.0f} s. Requests: attempts on "
        "that provider (a failed-over request counts once per provider it tried); error rate: "
        "the provider's faults (errors, timeouts, refused connections) over its attempts — a "
        "client's mistake never counts. Uptime: the share of the window the gateway did not "
        "mark it unhealthy. Detect: from the first failed attempt or probe to being marked; "
        "recover: from marked to healthy again (means over the outages)."
    )
    return t
