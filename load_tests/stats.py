"""Latency under load, from request records: percentiles from merged histograms, never averaged.

Each (model, niche, provider) group keeps HdrHistograms of `latency_ms` (from the scheduled
time: open loop) and `service_ms` (from the send); per-model and overall figures merge those
histograms and read the percentile from the merged one. The generator's own health (send lag,
achieved versus offered rate, requests the client's in-flight bound stopped) is reported beside
them, with a warning when the generator, not the server, set the pace.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hdrh.histogram import HdrHistogram

from config import EaselConfig

__all__ = [
    "LAG_WARN_MS",
    "PERCENTILES",
    "RATE_WARN_RATIO",
    "LoadSummary",
    "format_summary",
    "json_safe",
    "summarize",
]

PERCENTILES = (50, 90, 95, 99)
# The generator is said to have set the pace when sends lag their schedule by more than this
# at p99, or when it achieved less than this share of the offered rate.
LAG_WARN_MS = 10.0
RATE_WARN_RATIO = 0.95

_LOW_US, _HIGH_US, _DIGITS = 1, 3_600_000_000, 3  # 1 µs .. 1 h at 3 significant digits
_COLUMNS = [
    "model",
    "niche",
    "provider",
    "ok",
    "error_class",
    "scheduled_s",
    "sent_s",
    "done_s",
    "latency_ms",
    "service_ms",
    "cold_start",
]


class _Hist:
    """An HdrHistogram in microseconds that also keeps the exact max and what it clamped."""

    def __init__(self) -> None:
        self.h = HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)
        self.max_ms = -math.inf
        self.clamped = 0

    def record_ms(self, ms: float) -> None:
        us = round(ms * 1000.0)
        if us < _LOW_US or us > _HIGH_US:
            self.clamped += 1
            us = min(max(us, _LOW_US), _HIGH_US)
        self.h.record_value(us)
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: _Hist) -> None:
        self.h.add(other.h)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.clamped += other.clamped

    @property
    def count(self) -> int:
        return int(self.h.get_total_count())

    def pct(self, p: float) -> float | None:
        return self.pcts((p,))[p]

    def pcts(self, ps: tuple[float, ...]) -> dict[float, float | None]:
        """Several percentiles in one pass over the counts (each pass costs milliseconds)."""
        if not self.count:
            return dict.fromkeys(ps)
        # HdrHistogram's own percentile walk, vectorised: the library loops over ~23k buckets
        # in Python for each percentile.
        counts = np.ctypeslib.as_array(self.h.counts)[: self.h.counts_len]
        cum = np.cumsum(counts)
        out: dict[float, float | None] = {}
        for p in ps:
            target = self.h.get_target_count_at_percentile(p)
            v = self.h.get_value_from_index(int(np.searchsorted(cum, target, side="left")))
            edge = self.h.get_highest_equivalent_value if p else self.h.get_lowest_equivalent_value
            out[p] = edge(v) / 1000.0
        return out

    def max(self) -> float | None:
        return self.max_ms if self.count else None


@dataclass
class _Acc:
    """Mergeable sufficient statistics of one group."""

    n: int = 0
    ok: int = 0
    good: int = 0
    cold: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: _Hist = field(default_factory=_Hist)
    service: _Hist = field(default_factory=_Hist)
    warm: _Hist = field(default_factory=_Hist)
    cold_latency: _Hist = field(default_factory=_Hist)

    def merge(self, o: _Acc) -> None:
        self.n += o.n
        self.ok += o.ok
        self.good += o.good
        self.cold += o.cold
        self.errors.update(o.errors)
        for name in ("latency", "service", "warm", "cold_latency"):
            getattr(self, name).merge(getattr(o, name))

    def to_dict(self, window_s: float, slo_ms: float | None, slo_pct: float, budget: float) -> dict:
        d: dict[str, Any] = {
            "n": self.n,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
        }
        d["error_rate"] = (self.n - self.ok) / self.n if self.n else None
        lat = self.latency.pcts((*PERCENTILES, slo_pct))
        for p in PERCENTILES:
            d[f"latency_p{p}_ms"] = lat[p]
        d["latency_max_ms"] = self.latency.max()
        svc = self.service.pcts(PERCENTILES)
        for p in PERCENTILES:
            d[f"service_p{p}_ms"] = svc[p]
        d["service_max_ms"] = self.service.max()
        d["throughput_rps"] = self.ok / window_s if window_s > 0 else None
        d["slo_ms"] = slo_ms
        d["slo_percentile"] = slo_pct
        d["latency_at_slo_percentile_ms"] = lat[slo_pct]
        d["goodput"] = self.good / self.n if self.n and slo_ms is not None else None
        d["goodput_rps"] = self.good / window_s if window_s > 0 and slo_ms is not None else None
        at = d["latency_at_slo_percentile_ms"]
        d["meets_slo"] = bool(
            self.n
            and slo_ms is not None
            and at is not None
            and at <= slo_ms
            and d["error_rate"] <= budget
        )
        d["cold_starts"] = self.cold
        d["warm_latency_p95_ms"] = self.warm.pct(95)
        d["cold_latency_p50_ms"] = self.cold_latency.pct(50)
        d["cold_latency_max_ms"] = self.cold_latency.max()
        return d


@dataclass
class LoadSummary:
    """What a load test measured.

    Attributes:
        groups: one dict per (model, niche, provider) over the rows that were attempted (not
            rejected): n, ok, errors (by error_class), error_rate, latency_p{50,90,95,99}_ms,
            latency_max_ms, service_p{50,90,95,99}_ms, service_max_ms, throughput_rps (ok rows
            over the run's window), slo_ms, slo_percentile, latency_at_slo_percentile_ms,
            goodput (share of n that succeeded within the model's SLO), goodput_rps, meets_slo,
            cold_starts, warm_latency_p95_ms, cold_latency_p50_ms, cold_latency_max_ms.
            Latency figures count ok rows only.
        by_model: model name -> the same keys, merged from the groups' histograms.
        overall: the same keys over every attempted row, plus rows, rejected, window_s.
        generator: send_lag_p50_ms, send_lag_p99_ms, send_lag_max_ms, scheduled, sent,
            client_overload, offered_rps, achieved_rps and `warning` (text, or None when the
            generator kept its schedule).
    """

    groups: list[dict[str, Any]]
    by_model: dict[str, dict[str, Any]]
    overall: dict[str, Any]
    generator: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN and infinities become None)."""
        return json_safe(
            {
                "overall": self.overall,
                "by_model": self.by_model,
                "groups": self.groups,
                "generator": self.generator,
            }
        )


def json_safe(v: Any) -> Any:
    """JSON-safe values: NaN and infinities become None, numpy numbers and arrays Python ones."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list | tuple | np.ndarray):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    return v


def _batches(source: str | Path | pa.Table) -> Iterator[pa.RecordBatch]:
    if isinstance(source, pa.Table):
        cols = [c for c in _COLUMNS if c in source.column_names]
        yield from source.select(cols).to_batches(max_chunksize=65_536)
        return
    pf = pq.ParquetFile(source)
    cols = [c for c in _COLUMNS if c in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=65_536, columns=cols)


def summarize(requests: str | Path | pa.Table, cfg: EaselConfig) -> LoadSummary:
    """Summarise request records (a requests.parquet path, read in batches, or a table).

    SLOs come from each model's `slo_ms`, the percentile and error budget from `cfg.slo`.
    """
    slo_pct, budget = cfg.slo.percentile, cfg.slo.error_budget
    slo = {m.name: m.slo_ms for m in cfg.models}
    accs: dict[tuple[str | None, str | None, str | None], _Acc] = {}
    lag = _Hist()
    rejected = rows = overload = 0
    sched_n = sent_n = 0
    sched_lo = sent_lo = window_lo = math.inf
    sched_hi = sent_hi = window_hi = -math.inf
    for batch in _batches(requests):
        n = batch.num_rows
        rows += n
        names = batch.schema.names
        cols = [batch.column(c).to_pylist() if c in names else [None] * n for c in _COLUMNS]
        for model, niche, provider, ok, cls, sched, sent, done, lat, svc, cold in zip(
            *cols, strict=True
        ):
            if cls == "rejected":
                rejected += 1
                continue
            key = (model, niche, provider)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc()
            acc.n += 1
            if sched is not None:
                sched_n += 1
                sched_lo, sched_hi = min(sched_lo, sched), max(sched_hi, sched)
                window_lo = min(window_lo, sched)
            if sent is not None:
                sent_n += 1
                sent_lo, sent_hi = min(sent_lo, sent), max(sent_hi, sent)
                if sched is not None:
                    lag.record_ms((sent - sched) * 1000.0)
            if done is not None:
                window_hi = max(window_hi, done)
            if cls == "client_overload":
                overload += 1
            if ok:
                acc.ok += 1
                acc.latency.record_ms(lat)
                acc.service.record_ms(svc)
                if cold:
                    acc.cold += 1
                    acc.cold_latency.record_ms(lat)
                else:
                    acc.warm.record_ms(lat)
                if model in slo and lat <= slo[model]:
                    acc.good += 1
            else:
                acc.errors[cls or "client_error"] += 1
    window = window_hi - window_lo if window_hi > window_lo else 0.0

    def render(acc: _Acc, model: str | None) -> dict[str, Any]:
        return acc.to_dict(window, slo.get(model) if model else None, slo_pct, budget)

    groups = []
    by_model_acc: dict[str, _Acc] = {}
    total = _Acc()
    for (model, niche, provider), acc in sorted(
        accs.items(), key=lambda kv: tuple((k is None, str(k)) for k in kv[0])
    ):
        groups.append({"model": model, "niche": niche, "provider": provider, **render(acc, model)})
        by_model_acc.setdefault(model, _Acc()).merge(acc)
        total.merge(acc)
    by_model = {str(m): {"model": m, **render(a, m)} for m, a in by_model_acc.items()}
    overall = {"rows": rows, "rejected": rejected, "window_s": window, **render(total, None)}
    overall["goodput"] = total.good / total.n if total.n else None
    overall["goodput_rps"] = total.good / window if window > 0 else None
    generator = _generator(lag, sched_n, sched_lo, sched_hi, sent_n, sent_lo, sent_hi, overload)
    return LoadSummary(groups, by_model, overall, generator)


def _rate(n: int, lo: float, hi: float) -> float | None:
    return (n - 1) / (hi - lo) if n > 1 and hi > lo else None


def _generator(
    lag: _Hist,
    sched_n: int,
    sched_lo: float,
    sched_hi: float,
    sent_n: int,
    sent_lo: float,
    sent_hi: float,
    overload: int,
) -> dict[str, Any]:
    offered, achieved = _rate(sched_n, sched_lo, sched_hi), _rate(sent_n, sent_lo, sent_hi)
    lags = lag.pcts((50, 99))
    g: dict[str, Any] = {
        "scheduled": sched_n,
        "sent": sent_n,
        "client_overload": overload,
        "send_lag_p50_ms": lags[50],
        "send_lag_p99_ms": lags[99],
        "send_lag_max_ms": lag.max(),
        "offered_rps": offered,
        "achieved_rps": achieved,
    }
    warnings = []
    if overload:
        warnings.append(
            f"{overload} request(s) were not sent: the client's in-flight bound was reached "
            "(raise --max-in-flight or add dispatchers)"
        )
    p99 = g["send_lag_p99_ms"]
    if p99 is not None and p99 > LAG_WARN_MS:
        warnings.append(
            f"send lag p99 {p99:.1f} ms exceeds {LAG_WARN_MS:g} ms: the generator fell behind "
            "its schedule"
        )
    if offered and achieved and sent_n >= 20 and achieved < RATE_WARN_RATIO * offered:
        warnings.append(
            f"achieved {achieved:.1f} req/s of {offered:.1f} req/s offered "
            f"(below {RATE_WARN_RATIO:.0%})"
        )
    g["warning"] = (
        "the generator, not the server, set the pace: " + "; ".join(warnings) if warnings else None
    )
    return g


def _fmt(v: Any, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def format_summary(summary: LoadSummary) -> str:
    """A plain-text table per model and the generator's health, for the terminal."""
    head = (
        f"{'model':<18} {'n':>6} {'ok':>6} {'err%':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'good%':>6} {'cold':>5} {'warm p95':>9}"
    )
    lines = [head, "-" * len(head)]
    rows = [*summary.by_model.values(), {"model": "all", **summary.overall}]
    for d in rows:
        err = None if d["error_rate"] is None else 100 * d["error_rate"]
        good = None if d["goodput"] is None else 100 * d["goodput"]
        lines.append(
            f"{d['model']!s:<18} {d['n']:>6} {d['ok']:>6} {_fmt(err, '.1f'):>6} "
            f"{_fmt(d['latency_p50_ms']):>8} {_fmt(d['latency_p95_ms']):>8} "
            f"{_fmt(d['latency_p99_ms']):>8} {_fmt(d['latency_max_ms']):>8} "
            f"{_fmt(good, '.1f'):>6} {d['cold_starts']:>5} {_fmt(d['warm_latency_p95_ms']):>9}"
        )
    o, g = summary.overall, summary.generator
    errors = ", ".join(f"{k} {v}" for k, v in o["errors"].items()) or "none"
    lines.append(f"rows {o['rows']}, rejected {o['rejected']}, errors: {errors}")
    lines.append(
        f"generator: offered {_fmt(g['offered_rps'], '.1f')} req/s, achieved "
        f"{_fmt(g['achieved_rps'], '.1f')} req/s, send lag p50 {_fmt(g['send_lag_p50_ms'], '.2f')} "
        f"p99 {_fmt(g['send_lag_p99_ms'], '.2f')} max {_fmt(g['send_lag_max_ms'], '.2f')} ms"
    )
    if g["warning"]:
        lines.append(f"WARNING: {g['warning']}")
    return "\n".join(lines)
