"""Latency under load, from request records: percentiles from merged histograms, never averaged.

Each (model, niche, provider) group keeps HdrHistograms of `latency_ms` (from the scheduled
time: open loop) and `service_ms` (from the send); per-model and overall figures merge those
histograms and read the percentile from the merged one. The generator's own health (send lag,
achieved versus offered rate, requests the client's in-flight bound stopped) is reported beside
them, with a warning when the generator, not the server, set the pace.

Failures never vanish from the tail. Beside the success-only percentiles (`latency_p*`), every
group has all-requests percentiles (`latency_all_p*`) in which each failed, timed-out or unsent
request ranks above every success, "beyond the deadline": under overload a server that fails
most requests fast would otherwise report a *better* p95 than one that serves them all slowly.
The SLO verdict (`latency_at_slo_percentile_ms`, `meets_slo`) reads the all-requests ordering,
and every all-requests percentile carries a distribution-free interval (load_tests.intervals).
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

from config import EaselConfig
from load_tests.histogram import LatencyHistogram as _Hist
from load_tests.histogram import all_requests_percentiles
from load_tests.intervals import wilson_interval

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
# Records are summarised at most this many at a time (a batch never spans two row groups), each
# batch as Python values: the batch, not the run, sets the memory this takes.
_BATCH_ROWS = 8_192


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

    def to_dict(
        self, window_s: float, slo_ms: float | None, slo_pct: float, budget: float, conf: float
    ) -> dict:
        d: dict[str, Any] = {
            "n": self.n,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
        }
        d["error_rate"] = (self.n - self.ok) / self.n if self.n else None
        d["success_rate"] = self.ok / self.n if self.n else None
        ci = wilson_interval(self.ok, self.n, conf)
        d["success_rate_ci"] = list(ci) if ci else [None, None]
        lat = self.latency.pcts(PERCENTILES)
        for p in PERCENTILES:
            d[f"latency_p{p}_ms"] = lat[p]
        d["latency_max_ms"] = self.latency.max()
        every = all_requests_percentiles(self.latency, self.n, (*PERCENTILES, slo_pct), conf)
        for p in PERCENTILES:
            d[f"latency_all_p{p}_ms"] = every[p]["ms"]
            d[f"latency_all_p{p}_beyond"] = every[p]["beyond"]
            d[f"latency_all_p{p}_ci_ms"] = every[p]["ci_ms"]
            d[f"latency_all_p{p}_ci_beyond"] = every[p]["ci_beyond"]
        svc = self.service.pcts(PERCENTILES)
        for p in PERCENTILES:
            d[f"service_p{p}_ms"] = svc[p]
        d["service_max_ms"] = self.service.max()
        d["throughput_rps"] = self.ok / window_s if window_s > 0 else None
        d["slo_ms"] = slo_ms
        d["slo_percentile"] = slo_pct
        # All requests: a percentile that falls among the failures is beyond the deadline.
        at = every[slo_pct]
        d["latency_at_slo_percentile_ms"] = at["ms"]
        d["latency_at_slo_percentile_beyond"] = at["beyond"]
        d["latency_at_slo_percentile_ci_ms"] = at["ci_ms"]
        d["latency_at_slo_percentile_ci_beyond"] = at["ci_beyond"]
        # One-sided bounds at the same confidence: what the saturation sweep's verdict reads.
        one = all_requests_percentiles(self.latency, self.n, (slo_pct,), conf, one_sided=True)
        d["latency_at_slo_bounds_ms"] = one[slo_pct]["ci_ms"]
        d["latency_at_slo_bounds_beyond"] = one[slo_pct]["ci_beyond"]
        has_slo = slo_ms is not None
        d["goodput"] = self.good / self.n if self.n and has_slo else None
        gci = wilson_interval(self.good, self.n, conf) if has_slo else None
        d["goodput_ci"] = list(gci) if gci else [None, None]
        d["goodput_rps"] = self.good / window_s if window_s > 0 and has_slo else None
        d["meets_slo"] = bool(
            self.n
            and has_slo
            and at["ms"] is not None
            and at["ms"] <= slo_ms
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
            rejected): n, ok, errors (by error_class), error_rate, success_rate and
            success_rate_ci (Wilson), latency_p{50,90,95,99}_ms and latency_max_ms (successful
            requests only), latency_all_p{50,90,95,99}_ms with _beyond (the percentile falls
            among failed requests: beyond the deadline, ms None) and _ci_ms ([lo, hi],
            distribution-free) and _ci_beyond ([bool, bool]: that bound falls among
            failures), service_p{50,90,95,99}_ms, service_max_ms, throughput_rps (ok
            rows over the run's window), slo_ms, slo_percentile, latency_at_slo_percentile_ms
            (all requests) with _beyond, _ci_ms and _ci_beyond, latency_at_slo_bounds_ms and
            latency_at_slo_bounds_beyond (one-sided bounds, for verdicts), goodput (share of n
            that succeeded within the model's SLO: failures are misses) with goodput_ci,
            goodput_rps, meets_slo,
            cold_starts, warm_latency_p95_ms, cold_latency_p50_ms, cold_latency_max_ms.
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
        yield from source.select(cols).to_batches(max_chunksize=_BATCH_ROWS)
        return
    pf = pq.ParquetFile(source)
    cols = [c for c in _COLUMNS if c in pf.schema_arrow.names]
    # One reader per row group: a single reader over the whole file kept ~65 kB for every row
    # group it had passed (requests.parquet has one per part file: 977 at a million rows, and
    # the summary's memory grew by 65 MB there; `benchmarks/load_generator_growth.py`).
    for g in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols, row_groups=[g])


def summarize(requests: str | Path | pa.Table, cfg: EaselConfig) -> LoadSummary:
    """Summarise request records (a requests.parquet path, read in batches, or a table).

    SLOs come from each model's `slo_ms`, the percentile and error budget from `cfg.slo`.
    """
    slo_pct, budget, conf = cfg.slo.percentile, cfg.slo.error_budget, cfg.slo.confidence
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
        return acc.to_dict(window, slo.get(model) if model else None, slo_pct, budget, conf)

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
    gci = wilson_interval(total.good, total.n, conf)
    overall["goodput_ci"] = list(gci) if gci else [None, None]
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
    # p95/p99 over all requests (failures beyond the deadline: ">dl") beside the success-only
    # p95, so a tail that failures would flatter is never shown alone.
    head = (
        f"{'model':<18} {'n':>6} {'ok%':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p95 ok':>8} {'max ok':>8} {'good%':>6} {'cold':>5} {'warm p95':>9}"
    )
    lines = [head, "-" * len(head)]
    rows = [*summary.by_model.values(), {"model": "all", **summary.overall}]
    for d in rows:
        ok = None if d["success_rate"] is None else 100 * d["success_rate"]
        good = None if d["goodput"] is None else 100 * d["goodput"]
        every = [
            ">dl" if d[f"latency_all_p{p}_beyond"] else _fmt(d[f"latency_all_p{p}_ms"])
            for p in (50, 95, 99)
        ]
        lines.append(
            f"{d['model']!s:<18} {d['n']:>6} {_fmt(ok, '.1f'):>6} {every[0]:>8} {every[1]:>8} "
            f"{every[2]:>8} {_fmt(d['latency_p95_ms']):>8} {_fmt(d['latency_max_ms']):>8} "
            f"{_fmt(good, '.1f'):>6} {d['cold_starts']:>5} {_fmt(d['warm_latency_p95_ms']):>9}"
        )
    o, g = summary.overall, summary.generator
    errors = ", ".join(f"{k} {v}" for k, v in o["errors"].items()) or "none"
    lines.append(f"rows {o['rows']}, rejected {o['rejected']}, errors: {errors}")
    lines.append(
        "p50/p95/p99: all attempted requests, failures ranked beyond the deadline ('>dl'); "
        "p95 ok / max ok: successful requests only"
    )
    lines.append(
        f"generator: offered {_fmt(g['offered_rps'], '.1f')} req/s, achieved "
        f"{_fmt(g['achieved_rps'], '.1f')} req/s, send lag p50 {_fmt(g['send_lag_p50_ms'], '.2f')} "
        f"p99 {_fmt(g['send_lag_p99_ms'], '.2f')} max {_fmt(g['send_lag_max_ms'], '.2f')} ms"
    )
    if g["warning"]:
        lines.append(f"WARNING: {g['warning']}")
    return "\n".join(lines)
