"""Replay a production log: its timestamps become arrival times, within a window, sped up.

A column mapping says which log column (a dotted path into nested records allowed) holds each
manifest field; a log column named like the field is used without mapping. `size` ("WxH") fills
width and height. Model and niche names pass through alias maps (the config's
`traffic.model_aliases` / `niche_aliases`, then the caller's), so a log's `flux-2-dev` replays as
`flux2-dev`; names that match nothing stay as they are and the manifest reader rejects those
rows one by one, with the reason.

Nothing is invented silently: a log without a model, niche or prompt column is an error unless
the caller asks to draw that field from the config's mix (`fill`), which also fills a present
column's empty values. Which field came from where is written into the manifest's Parquet
metadata (`easel.provenance`), so the run folder says it (load_tests.provenance).

Rows are ordered by time (unreadable times last: the reader rejects them, row by row);
`window` keeps log times in [start, end) seconds after the log's first time; a log with
1-second timestamps gets each row spread uniformly over its second (`jitter_s="auto"`), since
bunching every request of a second at its first instant would be a burst the log never had;
arrivals start at 0 and are divided by the speed-up.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from config import REPLAY_FILLABLE, EaselConfig, TrafficConfig
from load_tests.generators import build_table, mix_columns
from load_tests.provenance import with_provenance
from load_tests.references import read_reference_items
from load_tests.replay_log import (
    column_paths,
    parse_sizes,
    read_log,
    resolve_column,
    timestamps_ns,
)

__all__ = [
    "MAPPABLE_FIELDS",
    "replay_arrivals",
    "replay_manifest",
]

# Manifest fields a log column can supply; "timestamp" is the log's time of each request and
# "size" a "WxH" string that fills width and height.
MAPPABLE_FIELDS = (
    "timestamp",
    "job_id",
    "model",
    "niche",
    "prompt",
    "size",
    "width",
    "height",
    "steps",
    "seed",
    "tenant",
    "reference_images",
    "reference_roles",
)
_STRINGS = ("job_id", "model", "niche", "prompt", "tenant")


def replay_arrivals(
    ns: np.ndarray,
    *,
    speedup: float = 1.0,
    window: tuple[float | None, float | None] | None = None,
    jitter_s: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival offsets (s) from log times (ns), and the log row index of each.

    Rows are ordered by time (unreadable times last). `window` keeps rows whose offset from the
    log's first time lies in [start, end) seconds (either end may be None). Each kept row moves
    by a uniform draw in [0, jitter_s) log seconds (then rows are ordered again). Arrivals start
    at 0 at the first kept row and are divided by `speedup`.
    """
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    if jitter_s < 0:
        raise ValueError(f"jitter_s must be >= 0, got {jitter_s}")
    valid = np.isfinite(ns)
    order = np.concatenate(
        [np.flatnonzero(valid)[np.argsort(ns[valid], kind="stable")], np.flatnonzero(~valid)]
    )
    ns_sorted = ns[order]
    if not valid.any():
        return np.full(len(ns), np.nan), order
    offset_s = (ns_sorted - ns_sorted[0]) / 1e9
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
    if jitter_s > 0:
        gen = rng if rng is not None else np.random.default_rng(0)
        offset_s = offset_s + gen.uniform(0.0, jitter_s, size=len(offset_s))
        # NaN sorts last, so unreadable rows stay at the end.
        again = np.argsort(offset_s, kind="stable")
        order, offset_s = order[again], offset_s[again]
    finite = np.isfinite(offset_s)
    first = offset_s[finite].min() if finite.any() else 0.0
    return (offset_s - first) / speedup, order


def _auto_jitter(ns: np.ndarray, whole_seconds: bool) -> float:
    """1 s for a 1-second log (whole-second times, some second holding several rows), else 0."""
    valid = ns[np.isfinite(ns)]
    if not whole_seconds or len(valid) < 2:
        return 0.0
    return 1.0 if len(np.unique(valid)) < len(valid) else 0.0


def _mapping(log: pa.Table, columns: dict[str, str] | None, source: str) -> dict[str, str]:
    mapping = dict(columns or {})
    bad = set(mapping) - set(MAPPABLE_FIELDS)
    if bad:
        raise ValueError(f"cannot map {sorted(bad)}; mappable fields: {list(MAPPABLE_FIELDS)}")
    for name in MAPPABLE_FIELDS:
        if name not in mapping and name in log.column_names:
            mapping[name] = name
    missing = sorted(c for c in mapping.values() if resolve_column(log, c) is None)
    if missing:
        raise ValueError(
            f"{source}: no column(s) {missing}; the log has {column_paths(log.schema)}"
        )
    if "timestamp" not in mapping:
        raise ValueError(
            f"{source}: no timestamp column; map one with columns={{'timestamp': '<column>'}} "
            f"(the log has {column_paths(log.schema)})"
        )
    if "size" in mapping and ({"width", "height"} & set(mapping)):
        raise ValueError(f"{source}: map either size or width/height, not both")
    return mapping


def _need_source(mapping: dict[str, str], fill: set[str], log: pa.Table, source: str) -> None:
    """A model, niche or prompt neither in the log nor to be filled is an error."""
    lacking = [f for f in REPLAY_FILLABLE if f not in mapping and f not in fill]
    if not lacking:
        return
    paths = column_paths(log.schema)
    hints = []
    for f in lacking:
        near = [p for p in paths if p.split(".")[-1] == f]
        hints.append(f"--map {f}={near[0]}" if near else f"--map {f}=<column> or --fill {f}")
    raise ValueError(
        f"{source}: the log has no {', '.join(lacking)} column(s) (it has {paths}); replaying "
        f"would invent them. Use {'; '.join(hints)} (--fill draws from the config's mix)"
    )


def _aliased(values: list[Any], aliases: dict[str, str], counts: Counter[str]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, str) and v in aliases:
            counts[v] += 1
            out.append(aliases[v])
        else:
            out.append(v)
    return out


def _fill(
    cfg: EaselConfig,
    given: dict[str, list[Any]],
    fill: set[str],
    n: int,
    rng: np.random.Generator,
) -> dict[str, int]:
    """Draw the `fill` fields where the log has no value; returns how many values were drawn."""
    mix = mix_columns(cfg, n, rng)
    drawn: dict[str, int] = {}
    niches = {x.name: x for x in cfg.niches}
    row_niche = given.get("niche") or [None] * n
    for name in ("model", "niche", "prompt"):  # prompts follow the row's (final) niche
        if name not in fill:
            continue
        have = given.get(name) or [None] * n
        out, k = [], 0
        for i, v in enumerate(have):
            if v is not None:
                out.append(v)
                continue
            k += 1
            if name == "prompt" and row_niche[i] in niches:
                bank = niches[row_niche[i]].prompts
                out.append(bank[int(rng.integers(len(bank)))])
            else:
                out.append(mix[name][i])
        given[name] = out
        drawn[name] = k
        if name == "niche":
            row_niche = out
    return drawn


def replay_manifest(
    cfg: EaselConfig,
    traffic: TrafficConfig,
    rng: np.random.Generator,
    *,
    max_jobs: int | None = None,
    columns: dict[str, str] | None = None,
    time_unit: str | None = None,
    window: tuple[float | None, float | None] | None = None,
    fill: list[str] | tuple[str, ...] | None = None,
    aliases: dict[str, str] | None = None,
    niche_aliases: dict[str, str] | None = None,
    jitter_s: float | str | None = None,
) -> pa.Table:
    """A manifest from `traffic.replay_path`, sped up by `traffic.speedup`, with its provenance.

    Args:
        columns: manifest field -> log column or dotted path (`request.model`); unmapped fields
            use a log column of the same name when there is one. `timestamp` defaults to the
            log's 'timestamp' column; `size` ('WxH') fills width and height.
        time_unit: unit of numeric timestamps (s, ms, us, ns); default s.
        window: (start_s, end_s) offsets from the log's first timestamp, in log time.
        max_jobs: keep at most this many rows (the earliest).
        fill: fields (model, niche, prompt) to draw from the config's mix where the log has
            none; default `traffic.replay_fill`. Any of them neither in the log nor here raises.
        aliases, niche_aliases: log name -> config name, over `traffic.model_aliases` /
            `traffic.niche_aliases`.
        jitter_s: seconds of uniform spread per row (log time); 'auto' (default
            `traffic.replay_jitter_s`) spreads 1-second logs over their second; None/0: none.

    Raises:
        ValueError: no such log or column, a field that would be invented, a bad size value.
    """
    if traffic.replay_path is None:
        raise ValueError("pattern 'replay' needs replay_path (a CSV, Parquet or JSONL log)")
    source = traffic.replay_path
    log = read_log(source)
    mapping = _mapping(log, columns, source)
    fills = set(traffic.replay_fill if fill is None else fill)
    bad = fills - set(REPLAY_FILLABLE)
    if bad:
        raise ValueError(f"cannot fill {sorted(bad)}; fillable fields: {list(REPLAY_FILLABLE)}")
    _need_source(mapping, fills, log, source)

    ns, whole = timestamps_ns(resolve_column(log, mapping["timestamp"]), time_unit, source)
    jitter = traffic.replay_jitter_s if jitter_s is None else jitter_s
    jitter_note = "none"
    if jitter == "auto":
        jitter = _auto_jitter(ns, whole)
        jitter_note = (
            "auto: 1 s (1-second timestamps with rows sharing a second)"
            if jitter
            else ("auto: none (timestamps finer than 1 s, or no second holds two rows)")
        )
    elif jitter:
        jitter_note = f"{float(jitter):g} s"
    arrivals, order = replay_arrivals(
        ns, speedup=traffic.speedup, window=window, jitter_s=float(jitter or 0.0), rng=rng
    )
    if max_jobs is not None:
        arrivals, order = arrivals[:max_jobs], order[:max_jobs]
    n = len(order)
    taken = pa.array(order, type=pa.int64())
    given: dict[str, Any] = {}
    for name, col in mapping.items():
        if name == "timestamp":
            continue
        values = resolve_column(log, col).take(taken)
        if name in _STRINGS:
            values = values.cast(pa.string())
        given[name] = values.to_pylist()
        if name == "reference_images":  # bytes, or paths relative to the log's folder
            base = Path(source).parent
            given[name] = [read_reference_items(v, base) for v in given[name]]
        elif name == "reference_roles":
            given[name] = [[v] if isinstance(v, str) else v for v in given[name]]
    if "size" in given:
        given["width"], given["height"] = parse_sizes(given.pop("size"), f"{source} size")
    alias_counts: dict[str, Counter[str]] = {"model": Counter(), "niche": Counter()}
    for name, table in (
        ("model", {**traffic.model_aliases, **(aliases or {})}),
        ("niche", {**traffic.niche_aliases, **(niche_aliases or {})}),
    ):
        if name in given and table:
            given[name] = _aliased(given[name], table, alias_counts[name])
    drawn = _fill(cfg, given, fills, n, rng)

    origin = {name: f"log column {col!r}" for name, col in mapping.items() if name != "timestamp"}
    origin["arrival_s"] = f"log column {mapping['timestamp']!r} (timestamps)"
    if "size" in mapping:
        origin["width"] = origin["height"] = f"log column {mapping['size']!r} (WxH)"
        del origin["size"]
    for name, k in drawn.items():
        if name in origin:
            origin[name] += f"; {k} empty value(s) drawn from the config's mix (fill)"
        else:
            origin[name] = "drawn from the config's mix (fill)"
    for name, what in (
        ("job_id", "generated (job-NNNNNNN)"),
        ("width", "the row's model default"),
        ("height", "the row's model default"),
        ("steps", "the row's model default"),
        ("seed", "random (traffic seed)"),
        ("tenant", "none"),
    ):
        origin.setdefault(name, what)
    provenance = {
        "pattern": "replay",
        "source": str(source),
        "log_rows": log.num_rows,
        "rows": n,
        "columns": {k: origin[k] for k in sorted(origin)},
        "from_log": sorted(k for k, v in origin.items() if v.startswith("log column")),
        "filled": sorted(drawn),
        "aliases": {k: dict(sorted(v.items())) for k, v in alias_counts.items() if v},
        "jitter": jitter_note,
        "speedup": traffic.speedup,
        "window_s": list(window) if window else None,
        "time_unit": time_unit,
    }
    return with_provenance(build_table(cfg, arrivals, rng, given), provenance)
