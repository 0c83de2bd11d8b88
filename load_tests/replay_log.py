"""Reading a production log for replay: the file, its columns by dotted path, its timestamps.

Logs come as CSV/TSV (quoted values may hold newlines: prompts often do), Parquet, or JSON Lines.
Nested records (`{"ts": ..., "request": {"model": ..., "size": ...}}`) become struct columns,
reached with dotted paths (`request.model`); a column whose own name holds a dot wins over the
path. Timestamps may be Arrow timestamps, ISO-8601 strings or numbers (epoch in `time_unit`);
they come back as float64 nanoseconds after the earliest one, computed from integers, so a replay
reproduces the log's gaps to well under a millisecond.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

__all__ = ["column_paths", "parse_sizes", "read_log", "resolve_column", "timestamps_ns"]

_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[x×*X]\s*(\d{1,5})\s*$")


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
            # Quoted prompts may span lines; without this a newline splits the row in two.
            opts = pacsv.ParseOptions(
                delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True
            )
            return pacsv.read_csv(p, parse_options=opts)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pajson.read_json(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{p}: cannot read the replay log: {exc}") from None
    raise ValueError(f"{p}: unknown log format {suffix!r}; use .csv, .parquet or .jsonl")


def column_paths(schema: pa.Schema) -> list[str]:
    """Every column a mapping can name: top-level names and dotted paths into structs."""
    out: list[str] = []

    def walk(prefix: str, field: pa.Field) -> None:
        name = f"{prefix}{field.name}"
        out.append(name)
        if pa.types.is_struct(field.type):
            for i in range(field.type.num_fields):
                walk(f"{name}.", field.type.field(i))

    for f in schema:
        walk("", f)
    return out


def resolve_column(log: pa.Table, path: str) -> pa.ChunkedArray | None:
    """The column a (dotted) path names, or None when the log has no such column."""
    if path in log.column_names:
        return log.column(path)
    head, *rest = path.split(".")
    if head not in log.column_names or not rest:
        return None
    col = log.column(head)
    for part in rest:
        t = col.type
        if not pa.types.is_struct(t) or t.get_field_index(part) < 0:
            return None
        col = pc.struct_field(col, part)
    return col


def parse_sizes(values: list[object], source: str) -> tuple[list[int | None], list[int | None]]:
    """Width and height from 'WxH' strings (also 'W×H', 'W*H'); null and 'auto' leave both null.

    Anything else is an error naming the first rows, never a silent default size.
    """
    widths: list[int | None] = []
    heights: list[int | None] = []
    bad: list[tuple[int, object]] = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "auto")):
            widths.append(None)
            heights.append(None)
            continue
        m = _SIZE.match(str(v))
        if not m:
            bad.append((i, v))
            widths.append(None)
            heights.append(None)
            continue
        widths.append(int(m.group(1)))
        heights.append(int(m.group(2)))
    if bad:
        shown = ", ".join(f"row {i}: {v!r}" for i, v in bad[:5])
        raise ValueError(
            f"{source}: {len(bad)} size value(s) are not WIDTHxHEIGHT ({shown}); fix the log or "
            "map width and height instead"
        )
    return widths, heights


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


def timestamps_ns(
    col: pa.ChunkedArray, time_unit: str | None, source: str
) -> tuple[np.ndarray, bool]:
    """(float64 nanoseconds after the earliest time, NaN where unreadable; whole_seconds).

    `whole_seconds` is true when every readable time is a whole second: the mark of a log with
    1-second timestamps, whose rows within one second have lost their spacing.
    """
    t = col.type
    if pa.types.is_timestamp(t):
        ns = col.cast(pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
        valid = ~np.asarray(ns.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        ints = ns.fill_null(0).to_numpy(zero_copy_only=False)
        return _relative(ints, valid), _whole(ints, valid)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        parsed = pd.to_datetime(
            pd.Series(col.to_pylist(), dtype=object), utc=True, errors="coerce", format="ISO8601"
        )
        valid = ~parsed.isna().to_numpy()
        epoch = pd.Timestamp(0, tz="UTC")
        ints = parsed.dt.as_unit("ns").fillna(epoch).astype("int64").to_numpy()
        return _relative(ints, valid), _whole(ints, valid)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        unit = time_unit or "s"
        if unit not in _UNITS:
            raise ValueError(f"time_unit {unit!r} is not one of {list(_UNITS)}")
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_integer(t):
            # Integer epochs stay exact: scale in int64.
            ints = pc.multiply(col.cast(pa.int64()).fill_null(0), _UNITS[unit])
            arr = ints.to_numpy(zero_copy_only=False)
            return _relative(arr, valid), _whole(arr, valid)
        vals = col.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        # A float epoch so large that it overflows in nanoseconds is not a time: the row is
        # rejected as having no timestamp (and numpy is kept from warning about it).
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = vals * _UNITS[unit]
            valid &= np.isfinite(scaled)
            out = np.full(len(vals), np.nan)
            if valid.any():
                out[valid] = (vals[valid] - vals[valid].min()) * _UNITS[unit]
                valid &= np.isfinite(out)
                out[~valid] = np.nan
            whole = bool(valid.any()) and bool(np.all(np.mod(scaled[valid], 1e9) == 0))
        return out, whole
    raise ValueError(
        f"{source}: timestamp column has type {t}; need a timestamp, ISO string or number"
    )


def _whole(ints: np.ndarray, valid: np.ndarray) -> bool:
    return bool(valid.any()) and bool(np.all(ints[valid] % 1_000_000_000 == 0))
