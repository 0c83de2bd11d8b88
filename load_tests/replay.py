"""Replay a production log: its timestamps become arrival times, within a window, sped up.

Logs come as CSV, Parquet or JSON Lines. A column mapping says which log column holds each
manifest field; only the timestamp is required. Fields the log lacks (model, niche, prompt, ...)
are drawn from the config's mix, as the synthetic patterns do. Timestamps may be Arrow
timestamps, ISO-8601 strings or numbers (epoch in `time_unit`); inter-arrival times are computed
from integer nanoseconds, so a replay reproduces the log's gaps to well under a millisecond
(divided by the speed-up). Rows whose timestamp cannot be read keep a NaN arrival and are
rejected, row by row, when the manifest is read: nothing is dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from config import EaselConfig, TrafficConfig
from load_tests.generators import build_table

__all__ = ["MAPPABLE_FIELDS", "read_log", "replay_arrivals", "replay_manifest"]

# Manifest fields a log column can supply; "timestamp" is the log's time of each request.
MAPPABLE_FIELDS = (
    "timestamp",
    "job_id",
    "model",
    "niche",
    "prompt",
    "width",
    "height",
    "steps",
    "seed",
    "tenant",
)
_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def read_log(path: str | Path) -> pa.Table:
    """Read a CSV, Parquet or JSON Lines log by its extension; ValueError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such replay log")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(p)
        if suffix in (".csv", ".tsv"):
            opts = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            return pacsv.read_csv(p, parse_options=opts)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pajson.read_json(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{p}: cannot read the replay log: {exc}") from None
    raise ValueError(f"{p}: unknown log format {suffix!r}; use .csv, .parquet or .jsonl")


def _relative(ints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Integer nanoseconds to float64 offsets from the earliest valid one (NaN where invalid).

    Subtracting in int64 first keeps full precision: epoch nanoseconds as float64 would only
    resolve ~256 ns.
    """
    out = np.full(len(ints), np.nan)
    if valid.any():
        base = ints[valid].min()
        out[valid] = (ints[valid] - base).astype(np.float64)
    return out


def _to_ns(col: pa.ChunkedArray, time_unit: str | None, source: str) -> np.ndarray:
    """Timestamps as float64 nanoseconds after the earliest one (NaN where unreadable)."""
    t = col.type
    if pa.types.is_timestamp(t):
        ns = col.cast(pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
        valid = ~np.asarray(ns.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return _relative(ns.fill_null(0).to_numpy(zero_copy_only=False), valid)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        parsed = pd.to_datetime(
            pd.Series(col.to_pylist(), dtype=object), utc=True, errors="coerce", format="ISO8601"
        )
        valid = ~parsed.isna().to_numpy()
        epoch = pd.Timestamp(0, tz="UTC")
        ints = parsed.dt.as_unit("ns").fillna(epoch).astype("int64").to_numpy()
        return _relative(ints, valid)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        unit = time_unit or "s"
        if unit not in _UNITS:
            raise ValueError(f"time_unit {unit!r} is not one of {list(_UNITS)}")
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_integer(t):
            # Integer epochs stay exact: scale in int64.
            ints = pc.multiply(col.cast(pa.int64()).fill_null(0), _UNITS[unit])
            return _relative(ints.to_numpy(zero_copy_only=False), valid)
        vals = col.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        valid &= np.isfinite(vals)
        out = np.full(len(vals), np.nan)
        if valid.any():
            out[valid] = (vals[valid] - vals[valid].min()) * _UNITS[unit]
        return out
    raise ValueError(
        f"{source}: timestamp column has type {t}; need a timestamp, ISO string or number"
    )


def replay_arrivals(
    ns: np.ndarray,
    *,
    speedup: float = 1.0,
    window: tuple[float | None, float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival offsets (s) from log times (ns), and the log row index of each.

    Rows are ordered by time (unreadable times last). `window` keeps rows whose offset from the
    log's first time lies in [start, end) seconds (either end may be None). Arrivals start at 0
    at the first kept row and are divided by `speedup`.
    """
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    valid = np.isfinite(ns)
    order = np.concatenate(
        [np.flatnonzero(valid)[np.argsort(ns[valid], kind="stable")], np.flatnonzero(~valid)]
    )
    ns_sorted = ns[order]
    if not valid.any():
        return np.full(len(ns), np.nan), order
    t0 = ns_sorted[0]
    offset_s = (ns_sorted - t0) / 1e9
    keep = np.ones(len(order), dtype=bool)
    if window is not None:
        start, end = window
        if start is not None and end is not None and end <= start:
            raise ValueError(f"window end ({end}) must be after its start ({start})")
        # Unreadable timestamps stay in: the reader rejects them with their row, never silently.
        with np.errstate(invalid="ignore"):
            if start is not None:
                keep &= ~(offset_s < start)
            if end is not None:
                keep &= ~(offset_s >= end)
    order, offset_s = order[keep], offset_s[keep]
    finite = np.isfinite(offset_s)
    first = offset_s[finite].min() if finite.any() else 0.0
    return (offset_s - first) / speedup, order


def replay_manifest(
    cfg: EaselConfig,
    traffic: TrafficConfig,
    rng: np.random.Generator,
    *,
    max_jobs: int | None = None,
    columns: dict[str, str] | None = None,
    time_unit: str | None = None,
    window: tuple[float | None, float | None] | None = None,
) -> pa.Table:
    """A manifest from `traffic.replay_path`, sped up by `traffic.speedup`.

    Args:
        columns: manifest field -> log column; unmapped fields use a log column of the same
            name when there is one. `timestamp` defaults to the log's 'timestamp' column.
        time_unit: unit of numeric timestamps (s, ms, us, ns); default s.
        window: (start_s, end_s) offsets from the log's first timestamp, in log time.
        max_jobs: keep at most this many rows (the earliest).
    """
    if traffic.replay_path is None:
        raise ValueError("pattern 'replay' needs replay_path (a CSV, Parquet or JSONL log)")
    source = traffic.replay_path
    log = read_log(source)
    mapping = dict(columns or {})
    bad = set(mapping) - set(MAPPABLE_FIELDS)
    if bad:
        raise ValueError(f"cannot map {sorted(bad)}; mappable fields: {list(MAPPABLE_FIELDS)}")
    for name in MAPPABLE_FIELDS:
        if name not in mapping and name in log.column_names:
            mapping[name] = name
    missing = sorted(c for c in mapping.values() if c not in log.column_names)
    if missing:
        raise ValueError(f"{source}: no column(s) {missing}; the log has {log.column_names}")
    if "timestamp" not in mapping:
        raise ValueError(
            f"{source}: no timestamp column; map one with columns={{'timestamp': '<column>'}} "
            f"(the log has {log.column_names})"
        )
    ns = _to_ns(log.column(mapping["timestamp"]), time_unit, source)
    arrivals, order = replay_arrivals(ns, speedup=traffic.speedup, window=window)
    if max_jobs is not None:
        arrivals, order = arrivals[:max_jobs], order[:max_jobs]
    given: dict[str, Any] = {}
    taken = pa.array(order, type=pa.int64())
    for name, col in mapping.items():
        if name == "timestamp":
            continue
        values = log.column(col).take(taken)
        if name == "job_id":
            values = values.cast(pa.string())
        given[name] = values.to_pylist()
    return build_table(cfg, arrivals, rng, given)
