"""`easel compare RUN_A RUN_B`: a regression gate between two run folders.

Per model and niche (and per model over all niches) it compares the latency percentiles (p50, p95,
p99 over all attempted requests, failures ranked beyond the deadline), goodput (within the
baseline's SLO), the error rate, the cost per image and the composite quality score. Each comes
with its difference (B − A) and an interval:

- latency percentiles: each run's distribution-free interval (order statistics; failures rank
  above every success), combined into an interval of the relative change B/A − 1 (each at
  (1 + confidence) / 2, so both hold together): no assumption about the latency distribution,
  and at small N, where no bootstrap of a tail percentile can be trusted, simply wide;
- goodput and error rate: Newcombe's interval of a difference of two proportions;
- composite: from each run's own bootstrap interval (normal approximation of the difference);
- cost per image, all held and busy-only: computed from GPU time, not sampled, so its interval
  is the point itself; busy-only is judged at `cost_rel`, all-held (which also moves with the
  run's start-up and idle time) at the looser `cost_held_rel`.

compare.md and compare.json are written by `easel.compare_report`.

A metric regresses when it moves the wrong way by more than its tolerance (`compare` section of
run A's config: the baseline decides) and the interval of the difference excludes zero: noise
inside the interval never fails the gate, and neither does a real but tolerated change.

Runs that differ in their models (names, or a model's weights or API), niches or references
(the reference images, or the network that featurised them; the photo sets image-conditioned
jobs draw from, or the face embedder that scored identity) are refused with the reasons: their
numbers measure different things. Other config differences (steps, batching, traffic, a vendor's
latency) are what a regression gate exists to catch; they are listed in compare.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import norm

from config import CompareConfig, EaselConfig, load_config
from easel.cost import deployment_costs, model_busy_costs, model_costs
from load_tests.intervals import nearest_rank, quantile_rank_interval, wilson_interval
from load_tests.stats import json_safe

__all__ = [
    "Comparison",
    "IncomparableRuns",
    "MetricRow",
    "compare_runs",
    "config_differences",
    "incomparable_because",
]

ALL = "all"
_PCTS = (50, 95, 99)


class IncomparableRuns(ValueError):
    """The two runs measure different things; `reasons` says which."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("runs are not comparable: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass
class MetricRow:
    """One metric of one (model, niche) in both runs, with its verdict.

    `judged` says what the interval and tolerance are on: 'rel' (relative change, latency and
    cost) or 'diff' (B − A in the metric's unit). `worse` is the direction that is a regression.
    """

    model: str
    niche: str
    metric: str
    a: float | None
    b: float | None
    n_a: int
    n_b: int
    diff: float | None
    rel: float | None
    ci: list[float] | None
    judged: str
    tolerance: float
    worse: str
    regression: bool
    note: str = ""


@dataclass
class Comparison:
    """What `compare_runs` found."""

    run_a: str
    run_b: str
    tolerances: dict[str, Any]
    config_differences: list[str]
    rows: list[MetricRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricRow]:
        return [r for r in self.rows if r.regression]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (an infinite change, B beyond the deadline where A was not, is null)."""
        return json_safe(
            {
                "run_a": self.run_a,
                "run_b": self.run_b,
                "verdict": "regression" if self.regressions else "ok",
                "regressions": [asdict(r) for r in self.regressions],
                "tolerances": self.tolerances,
                "config_differences": self.config_differences,
                "rows": [asdict(r) for r in self.rows],
            }
        )


# --- comparability ------------------------------------------------------------------------------


def _model_identity(cfg: EaselConfig) -> dict[str, tuple[Any, ...]]:
    out = {}
    for m in cfg.models:
        api = (m.api.protocol, m.api.vendor_model) if m.api else None
        out[m.name] = (m.backend, m.pipeline, m.weights, m.unet, api)
    return out


def _references(cfg: EaselConfig, meta: dict[str, Any] | None) -> dict[str, Any]:
    """Per niche, what identifies its reference set: the scorer's cache key when the run was
    scored (it hashes every image, the feature network and the resize), else the config."""
    keys = (meta or {}).get("references") or {}
    ev = cfg.evaluation
    out = {}
    for n in cfg.niches:
        if n.name in keys and keys[n.name].get("key"):
            out[n.name] = ("scored", keys[n.name]["key"])
        else:
            out[n.name] = ("config", n.reference_dir, ev.reference_images_per_niche, ev.image_size)
    return out


def _photo_sets(meta: dict[str, Any] | None) -> dict[tuple[str, str], Any]:
    """(niche, role) -> SHA-256 of the photo sets conditioned jobs drew from (score_meta.json)."""
    sets = (meta or {}).get("conditioning_sets") or []
    return {(x["niche"], x["role"]): x.get("sha256") for x in sets}


def incomparable_because(
    cfg_a: EaselConfig,
    cfg_b: EaselConfig,
    meta_a: dict[str, Any] | None = None,
    meta_b: dict[str, Any] | None = None,
) -> list[str]:
    """Why two runs measure different things (empty when they are comparable)."""
    reasons = []
    ma, mb = _model_identity(cfg_a), _model_identity(cfg_b)
    if set(ma) != set(mb):
        reasons.append(
            f"different models: only in A {sorted(set(ma) - set(mb))}, "
            f"only in B {sorted(set(mb) - set(ma))}"
        )
    for name in sorted(set(ma) & set(mb)):
        if ma[name] != mb[name]:
            reasons.append(
                f"model {name!r} is another model (backend, weights or API): "
                f"{ma[name]} vs {mb[name]}"
            )
    na, nb = {n.name for n in cfg_a.niches}, {n.name for n in cfg_b.niches}
    if na != nb:
        reasons.append(
            f"different niches: only in A {sorted(na - nb)}, only in B {sorted(nb - na)}"
        )
    ra, rb = _references(cfg_a, meta_a), _references(cfg_b, meta_b)
    for niche in sorted(set(ra) & set(rb)):
        if ra[niche][0] == rb[niche][0] and ra[niche] != rb[niche]:
            reasons.append(
                f"niche {niche!r} was scored against other references (other images, feature "
                "network or resize)"
            )
    sa, sb = _photo_sets(meta_a), _photo_sets(meta_b)
    for niche, role in sorted(set(sa) & set(sb)):
        if sa[(niche, role)] != sb[(niche, role)]:
            reasons.append(f"niche {niche!r} was conditioned on other {role} photos")
    fa, fb = (((m or {}).get("face_embedder") or {}).get("key") for m in (meta_a, meta_b))
    if fa and fb and fa != fb:
        reasons.append(f"identity was scored by another face embedder: {fa} vs {fb}")
    return reasons


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) and "name" in x for x in d):
        out = {}
        for x in d:
            out.update(_flatten(x, f"{prefix[:-1]}[{x['name']}]."))
        return out
    return {prefix[:-1]: d}


def config_differences(cfg_a: EaselConfig, cfg_b: EaselConfig) -> list[str]:
    """Every config key whose value differs, as 'path: A → B'."""
    fa, fb = _flatten(cfg_a.model_dump(mode="json")), _flatten(cfg_b.model_dump(mode="json"))
    return [
        f"{k}: {fa.get(k)!r} → {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k)
    ]


# --- the run folders ----------------------------------------------------------------------------


@dataclass
class _Run:
    path: Path
    cfg: EaselConfig
    requests: pd.DataFrame
    scores: pd.DataFrame | None
    usage: list[dict[str, Any]] | None
    meta: dict[str, Any] | None


def _load(run: str | Path) -> _Run:
    p = Path(run)
    if not (p / "config.yaml").is_file():
        raise FileNotFoundError(f"{p}: no config.yaml (not a run folder)")
    if not (p / "requests.parquet").is_file():
        raise FileNotFoundError(f"{p}: no requests.parquet (the load test did not run)")
    cols = ["model", "niche", "ok", "latency_ms", "error_class"]
    req = pq.read_table(p / "requests.parquet", columns=cols).to_pandas()
    req = req[req["error_class"] != "rejected"]
    scores = pd.read_parquet(p / "scores.parquet") if (p / "scores.parquet").is_file() else None
    usage = (
        pq.read_table(p / "usage.parquet").to_pylist() if (p / "usage.parquet").is_file() else None
    )
    meta_path = p / "score_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    return _Run(p, load_config(p / "config.yaml"), req, scores, usage, meta)


# --- intervals ----------------------------------------------------------------------------------


def _bounds(values: np.ndarray, pct: float, conf: float) -> tuple[float, float, float]:
    """(point, lower, upper) of a percentile over all requests (failures +inf), distribution-free.

    A side that n requests cannot bound is 0 (lower) or +inf (upper); a bound among the
    failures is +inf.
    """
    x = np.sort(values)
    n = len(x)
    lo_r, hi_r = quantile_rank_interval(n, pct, conf)
    point = float(x[nearest_rank(n, pct) - 1])
    lo = float(x[lo_r - 1]) if lo_r else 0.0
    hi = float(x[hi_r - 1]) if hi_r else math.inf
    return point, lo, hi


def _ratio(num: float, den: float) -> float:
    """num / den − 1 with the limits failures bring: inf/inf and 0/0 are no change."""
    if math.isinf(num) and math.isinf(den):
        return 0.0
    if math.isinf(num):
        return math.inf
    if math.isinf(den):
        return -1.0
    if den <= 0:
        return math.inf if num > 0 else 0.0
    return num / den - 1.0


def _wilson(k: float, n: int, conf: float) -> tuple[float, float]:
    ci = wilson_interval(int(k), n, conf)
    return ci if ci else (0.0, 1.0)


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isinf(v)) else float(v)


def _verdict(point: float | None, ci: list[float] | None, tol: float, worse: str) -> bool:
    """Regression: worse than the tolerance, and the interval excludes zero on the worse side."""
    if point is None or ci is None:
        return False
    if worse == "higher":
        return point > tol and ci[0] > 0
    return point < -tol and ci[1] < 0


def _request_rows(
    model: str, niche: str, a: pd.DataFrame, b: pd.DataFrame, slo: float, t: CompareConfig
) -> list[MetricRow]:
    rows: list[MetricRow] = []
    la = np.where(a["ok"], a["latency_ms"].astype(float), np.inf)
    lb = np.where(b["ok"], b["latency_ms"].astype(float), np.inf)
    na, nb = len(la), len(lb)
    # Each run's interval at (1 + conf) / 2, so that both hold together at `conf` at least.
    each = (1 + t.confidence) / 2
    for p in _PCTS:
        pa, lo_a, hi_a = _bounds(la, p, each)
        pb, lo_b, hi_b = _bounds(lb, p, each)
        rel = _ratio(pb, pa)
        ci = [_ratio(lo_b, hi_a), _ratio(hi_b, lo_a)]
        note = ""
        if math.isinf(pa) or math.isinf(pb):
            where = (
                "both runs"
                if math.isinf(pa) and math.isinf(pb)
                else ("A" if math.isinf(pa) else "B")
            )
            note = f"beyond the deadline in {where}"
        rows.append(
            MetricRow(
                model,
                niche,
                f"latency_p{p}_ms",
                _num(pa),
                _num(pb),
                na,
                nb,
                pb - pa if math.isfinite(pa) and math.isfinite(pb) else None,
                _num(rel),
                ci,
                "rel",
                t.latency_rel,
                "higher",
                _verdict(rel, ci, t.latency_rel, "higher"),
                note,
            )
        )
    # Goodput within the baseline's SLO (so a changed SLO cannot move it), and the error rate:
    # Newcombe's interval of a difference of two proportions, from their Wilson intervals.
    for metric, ka, kb, tol, worse in (
        ("goodput", float((la <= slo).sum()), float((lb <= slo).sum()), t.goodput_abs, "lower"),
        (
            "error_rate",
            float(np.isinf(la).sum()),
            float(np.isinf(lb).sum()),
            t.error_rate_abs,
            "higher",
        ),
    ):
        pa_, pb_ = ka / na, kb / nb
        (l1, u1), (l2, u2) = _wilson(ka, na, t.confidence), _wilson(kb, nb, t.confidence)
        diff = pb_ - pa_
        ci = [
            diff - math.hypot(pb_ - l2, u1 - pa_),
            diff + math.hypot(u2 - pb_, pa_ - l1),
        ]
        rows.append(
            MetricRow(
                model,
                niche,
                metric,
                pa_,
                pb_,
                na,
                nb,
                diff,
                None,
                ci,
                "diff",
                tol,
                worse,
                _verdict(diff, ci, tol, worse),
            )
        )
    return rows


def _composite_row(
    model: str, niche: str, ra: pd.Series, rb: pd.Series, t: CompareConfig
) -> MetricRow:
    a, b = ra.get("composite"), rb.get("composite")
    base = dict(
        model=model,
        niche=niche,
        metric="composite",
        n_a=int(ra.get("n") or 0),
        n_b=int(rb.get("n") or 0),
        judged="diff",
        tolerance=t.composite_abs,
        worse="lower",
    )
    if a is None or b is None or pd.isna(a) or pd.isna(b):
        return MetricRow(
            a=None,
            b=None,
            diff=None,
            rel=None,
            ci=None,
            regression=False,
            note="no composite in one run",
            **base,
        )
    if ra.get("composite_components") != rb.get("composite_components"):
        return MetricRow(
            a=float(a),
            b=float(b),
            diff=float(b - a),
            rel=None,
            ci=None,
            regression=False,
            note=f"not compared: made of {ra.get('composite_components')} in A, "
            f"{rb.get('composite_components')} in B",
            **base,
        )
    z = float(norm.ppf(0.975))

    def se(r: pd.Series) -> float:
        lo, hi = r.get("composite_lo"), r.get("composite_hi")
        return 0.0 if lo is None or hi is None or pd.isna(lo) else float(hi - lo) / (2 * z)

    diff = float(b - a)
    half = float(norm.ppf(0.5 + t.confidence / 2)) * math.hypot(se(ra), se(rb))
    ci = [diff - half, diff + half]
    return MetricRow(
        a=float(a),
        b=float(b),
        diff=diff,
        rel=None,
        ci=ci,
        regression=_verdict(diff, ci, t.composite_abs, "lower"),
        **base,
    )


def _cost_rows(a: _Run, b: _Run, t: CompareConfig) -> list[MetricRow]:
    """Cost per image, all held and busy-only, per model. Computed from GPU time, not sampled:
    the interval is the point. Busy-only is judged tightly (it moves with the model's speed);
    all-held loosely (it also moves with start-up and idle time, i.e. the run's length)."""
    if a.usage is None or b.usage is None:
        return []
    da, db = deployment_costs(a.cfg, a.usage), deployment_costs(b.cfg, b.usage)
    held_a, held_b = model_costs(da), model_costs(db)
    busy_a, busy_b = model_busy_costs(da), model_busy_costs(db)
    rows = []
    for model in [m.name for m in a.cfg.models]:
        for metric, va, vb, tol in (
            ("cost_per_image", held_a.get(model), held_b.get(model), t.cost_held_rel),
            (
                "busy_cost_per_image",
                busy_a.get(model, {}).get("busy_cost_per_image"),
                busy_b.get(model, {}).get("busy_cost_per_image"),
                t.cost_rel,
            ),
        ):
            if va is None or vb is None or va <= 0:
                continue
            rel = (vb - va) / va
            rows.append(
                MetricRow(
                    model,
                    ALL,
                    metric,
                    va,
                    vb,
                    0,
                    0,
                    vb - va,
                    rel,
                    [rel, rel],
                    "rel",
                    tol,
                    "higher",
                    _verdict(rel, [rel, rel], tol, "higher"),
                    "computed from GPU time, not sampled: no interval",
                )
            )
    return rows


def compare_runs(run_a: str | Path, run_b: str | Path) -> Comparison:
    """Compare run B against baseline run A.

    Raises:
        IncomparableRuns: different models, niches or references (the reasons are listed).
        FileNotFoundError: a folder that is not a run, or has no requests.parquet.
    """
    a, b = _load(run_a), _load(run_b)
    reasons = incomparable_because(a.cfg, b.cfg, a.meta, b.meta)
    if reasons:
        raise IncomparableRuns(reasons)
    t = a.cfg.compare
    out = Comparison(str(a.path), str(b.path), t.model_dump(), config_differences(a.cfg, b.cfg))
    for m in a.cfg.models:
        ra, rb = (
            a.requests[a.requests["model"] == m.name],
            b.requests[b.requests["model"] == m.name],
        )
        if ra.empty or rb.empty:
            continue
        scopes = [(ALL, ra, rb)] + [
            (n, ra[ra["niche"] == n], rb[rb["niche"] == n])
            for n in sorted(set(ra["niche"]) & set(rb["niche"]))
        ]
        for niche, sa, sb in scopes:
            if sa.empty or sb.empty:
                continue
            out.rows += _request_rows(m.name, niche, sa, sb, m.slo_ms, t)
            if a.scores is not None and b.scores is not None:
                xa = a.scores[(a.scores["model"] == m.name) & (a.scores["niche"] == niche)]
                xb = b.scores[(b.scores["model"] == m.name) & (b.scores["niche"] == niche)]
                if len(xa) and len(xb):
                    out.rows.append(_composite_row(m.name, niche, xa.iloc[0], xb.iloc[0], t))
    out.rows += _cost_rows(a, b, t)
    return out
