"""Each gateway process's figures in the shared state folder, so any process can answer for all.

Every process of one `easel gateway --workers N` writes a `Snapshot` (its routing rows, its
per-upstream stats, its answer counts) to `<state>/workers/<pid>.json` about once a second, off
the request path; `GET /v1/admin/routing`, `/v1/admin/availability` and `/metrics` merge the
answering process's live figures with the others' latest (`merged_rows`), so whichever process
the client reaches, it sees the whole gateway. A process that stopped keeps its file (its counts
are history); its in-flight counts stop counting once its snapshot is `_STALE_S` old.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serve_apps.gateway.availability import nearest_rank

__all__ = ["Snapshot", "merged_rows", "read_snapshots", "write_snapshot"]

_STALE_S = 5.0


@dataclass
class Snapshot:
    """What one gateway process reports of itself."""

    pid: int
    written_s: float
    routes: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    answers: list[list[Any]] = field(default_factory=list)  # [model, status, count]
    rejected: dict[str, int] = field(default_factory=dict)


def _folder(state_dir: Path) -> Path:
    path = state_dir / "workers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_snapshot(state_dir: Path, snap: Snapshot) -> None:
    """Write atomically: a reader sees the previous snapshot or this one, never half."""
    path = _folder(state_dir) / f"{snap.pid}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(snap)))
    tmp.replace(path)


def read_snapshots(state_dir: Path) -> list[Snapshot]:
    """Every process's latest snapshot (unreadable files are skipped)."""
    out = []
    for path in sorted(_folder(state_dir).glob("*.json")):
        try:
            out.append(Snapshot(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def merged_rows(snaps: list[Snapshot], recent: dict[tuple[str, str], list[float]]) -> list[dict]:
    """The routing rows of every process as one: counts add, unhealthy if any process says so.

    Args:
        snaps: the processes' snapshots, the answering process's live one first (its weights,
            drains and capacity are the current ones).
        recent: pooled recent latencies per (model, provider), for the p95.
    """
    now = time.time()
    first = {(r["model"], r["provider"]): dict(r) for r in snaps[0].routes}
    for row in first.values():
        row["processes"] = 1
    for snap in snaps[1:]:
        live = now - snap.written_s <= _STALE_S
        for r in snap.routes:
            row = first.get((r["model"], r["provider"]))
            if row is None:
                continue
            row["processes"] += 1
            for key in ("requests", "errors", "shed", "failovers"):
                row[key] += r[key]
            if live:
                row["outstanding"] += r["outstanding"]
                if not r["healthy"]:
                    row["healthy"] = False
                    row["reason"] = row["reason"] or r["reason"]
    for key, row in first.items():
        p95 = nearest_rank(recent.get(key, ()), 95)
        row["p95_ms"] = None if p95 is None else round(p95, 3)
    return list(first.values())
