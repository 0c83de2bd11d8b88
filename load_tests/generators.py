"""Arrival-time generators and the manifest builder.

Renewal patterns (`poisson`, `gamma`) draw inter-arrival gaps; shaped patterns (`diurnal`,
`burst`, `ramp`) are non-homogeneous Poisson processes over a planned duration. For those, given
that exactly n requests fall in [0, D], the arrival times are n independent draws from the
density λ(t)/Λ(D), sorted: the inverse of the cumulative intensity Λ applied to sorted uniforms.
That keeps the job count exact and the shape right. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from config import EaselConfig, TrafficConfig
from load_tests.manifest import MANIFEST_SCHEMA
from load_tests.provenance import with_provenance

__all__ = [
    "PATTERNS",
    "burst_arrivals",
    "diurnal_arrivals",
    "gamma_arrivals",
    "generate_manifest",
    "mix_columns",
    "poisson_arrivals",
    "ramp_arrivals",
]

PATTERNS = ("poisson", "gamma", "diurnal", "burst", "ramp", "replay")

# Extra keyword parameters the replay pattern takes (not TrafficConfig fields).
_REPLAY_PARAMS = ("columns", "time_unit", "window", "fill", "aliases", "niche_aliases", "jitter_s")


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """n arrivals of a Poisson process at `rate`/s; the first at 0."""
    return gamma_arrivals(n, rate, 1.0, rng)


def gamma_arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """n arrivals with gamma gaps: mean 1/rate, shape `burstiness` (1 = Poisson), as vLLM's bench.

    The squared coefficient of variation of the gaps is 1/burstiness: below 1 is burstier.
    """
    _positive(rate=rate, burstiness=burstiness)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])[:n]


def _from_intensity(
    n: int, knots_t: np.ndarray, knots_cum: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """n sorted arrivals whose density follows a cumulative intensity given at knots.

    `knots_cum` must be increasing; linear interpolation between knots is exact where the rate
    is piecewise constant and accurate to the knot spacing elsewhere.
    """
    u = np.sort(rng.uniform(0.0, knots_cum[-1], size=n))
    return np.interp(u, knots_cum, knots_t)


def diurnal_arrivals(
    n: int, rate: float, peak_ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """A day's curve compressed into the run: trough at the start and end, peak in the middle.

    λ(t) = base·(1 + (peak_ratio − 1)·(1 − cos 2πt/D)/2) with mean `rate`, so the run lasts
    D = n / rate and the peak rate is `peak_ratio` times the trough.
    """
    _positive(rate=rate)
    if peak_ratio < 1:
        raise ValueError(f"peak_ratio must be >= 1, got {peak_ratio}")
    d = n / rate
    base = 2.0 * rate / (peak_ratio + 1.0)
    t = np.linspace(0.0, d, 20_001)
    cum = base * (
        t + (peak_ratio - 1.0) / 2.0 * (t - d / (2 * math.pi) * np.sin(2 * math.pi * t / d))
    )
    return _from_intensity(n, t, cum, rng)


def burst_arrivals(
    n: int,
    rate: float,
    peak_ratio: float,
    every_s: float,
    length_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Base `rate` with flash crowds: for the last `length_s` of every `every_s` seconds the rate is
    `rate`·`peak_ratio`. The run lasts as long as n requests take at those rates.
    """
    _positive(rate=rate, every_s=every_s, length_s=length_s)
    if length_s >= every_s:
        raise ValueError(f"burst_length_s ({length_s}) must be below burst_every_s ({every_s})")
    if peak_ratio < 1:
        raise ValueError(f"peak_ratio must be >= 1, got {peak_ratio}")
    per_period = rate * (every_s - length_s) + rate * peak_ratio * length_s
    periods = math.ceil(n / per_period) + 1
    t, cum = [0.0], [0.0]
    for k in range(periods):
        t0 = k * every_s
        t += [t0 + every_s - length_s, t0 + every_s]
        cum += [cum[-1] + rate * (every_s - length_s), cum[-1] + rate * (every_s - length_s)]
        cum[-1] += rate * peak_ratio * length_s
    t_arr, cum_arr = np.array(t), np.array(cum)
    # Cut the intensity at the expected end D where Λ(D) = n, so n arrivals fill [0, D].
    d = float(np.interp(n, cum_arr, t_arr))
    keep = t_arr < d
    t_arr = np.append(t_arr[keep], d)
    cum_arr = np.append(cum_arr[keep], float(n))
    return _from_intensity(n, t_arr, cum_arr, rng)


def ramp_arrivals(n: int, rate: float, ramp_to: float, rng: np.random.Generator) -> np.ndarray:
    """A rate rising (or falling) linearly from `rate` to `ramp_to` over the run.

    The run lasts D = 2n / (rate + ramp_to) so that exactly n requests fit on the ramp.
    """
    _positive(rate=rate, ramp_to=ramp_to)
    d = 2.0 * n / (rate + ramp_to)
    u = np.sort(rng.uniform(0.0, float(n), size=n))
    slope = (ramp_to - rate) / d
    if abs(slope) < 1e-12:
        return u / rate
    # Λ(t) = rate·t + slope·t²/2 = u, solved for t (the root that is >= 0).
    return (-rate + np.sqrt(rate * rate + 2.0 * slope * u)) / slope


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number > 0, got {v}")


# --- the manifest -----------------------------------------------------------------------------


def _shares(weights: list[float], what: str) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    if w.sum() <= 0:
        raise ValueError(f"{what}: shares sum to 0; at least one must be > 0")
    return w / w.sum()


def _traffic(cfg: EaselConfig, updates: dict[str, Any]) -> TrafficConfig:
    """cfg.traffic with overrides, validated with the same bounds as the config file."""
    data = cfg.traffic.model_dump()
    data.update({k: v for k, v in updates.items() if v is not None})
    try:
        return TrafficConfig.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'traffic'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid traffic parameters: {msgs}") from None


def mix_columns(cfg: EaselConfig, n: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    """Model, niche and prompt per row from the config's mix, and each model's defaults."""
    if cfg.traffic.model_mix:
        names = list(cfg.traffic.model_mix)
        p_model = _shares([cfg.traffic.model_mix[m] for m in names], "traffic.model_mix")
    else:
        names = [m.name for m in cfg.models]
        p_model = np.full(len(names), 1.0 / len(names))
    niches = cfg.niches
    p_niche = _shares([x.weight for x in niches], "niches[*].weight")
    model_idx = rng.choice(len(names), size=n, p=p_model)
    niche_idx = rng.choice(len(niches), size=n, p=p_niche)
    prompt_u = rng.random(n)
    models = [cfg.model(m) for m in names]
    out: dict[str, list[Any]] = {
        k: [] for k in ("model", "niche", "prompt", "width", "height", "steps")
    }
    for mi, ni, u in zip(model_idx, niche_idx, prompt_u, strict=True):
        m, niche = models[mi], niches[ni]
        out["model"].append(m.name)
        out["niche"].append(niche.name)
        out["prompt"].append(niche.prompts[int(u * len(niche.prompts))])
        out["width"].append(m.resolution.default)
        out["height"].append(m.resolution.default)
        out["steps"].append(m.steps.default)
    return out


def generate_manifest(
    cfg: EaselConfig,
    *,
    pattern: str | None = None,
    jobs: int | None = None,
    rate: float | None = None,
    seed: int | None = None,
    **params: Any,
) -> pa.Table:
    """Build a manifest table (MANIFEST_SCHEMA, sorted by arrival_s) from a traffic pattern.

    Args:
        cfg: supplies the model mix (`traffic.model_mix`, even when empty), niches (by
            `weight`) and their prompts, each model's default width/height/steps, and defaults
            for every traffic parameter.
        pattern: poisson | gamma | diurnal | burst | ramp | replay; default `cfg.traffic.pattern`.
        jobs: number of requests (replay: at most this many rows of the log; default all).
        rate: mean requests/s (burst: the base rate; ramp: the start rate).
        seed: default `cfg.traffic.seed`; the same seed gives the same manifest.
        **params: other TrafficConfig fields (burstiness, peak_ratio, burst_every_s,
            burst_length_s, ramp_to, replay_path, speedup) and, for replay, `columns`
            (manifest field -> log column), `time_unit` (s|ms|us|ns for numeric timestamps) and
            `window` ((start_s, end_s) offsets from the log's first timestamp), `fill`
            (fields to draw from the config's mix where the log has none), `aliases` and
            `niche_aliases` (log name -> config name) and `jitter_s` (see
            load_tests.replay.replay_manifest).

    Raises:
        ValueError: unknown parameters or values out of bounds, with what is allowed.
    """
    replay_kw = {k: params.pop(k) for k in _REPLAY_PARAMS if k in params}
    unknown = set(params) - set(TrafficConfig.model_fields)
    if unknown:
        raise ValueError(
            f"unknown manifest parameter(s) {sorted(unknown)}; allowed: "
            f"{sorted([*TrafficConfig.model_fields, *_REPLAY_PARAMS])}"
        )
    if pattern is not None and pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; allowed: {list(PATTERNS)}")
    t = _traffic(cfg, {"pattern": pattern, "jobs": jobs, "rate": rate, "seed": seed, **params})
    if replay_kw and t.pattern != "replay":
        raise ValueError(f"{sorted(replay_kw)} apply to pattern 'replay' only")
    rng = np.random.default_rng(t.seed)
    if t.pattern == "replay":
        from load_tests.replay import replay_manifest

        return replay_manifest(cfg, t, rng, max_jobs=jobs, **replay_kw)
    n = t.jobs
    if t.pattern == "poisson":
        arrivals = poisson_arrivals(n, t.rate, rng)
    elif t.pattern == "gamma":
        arrivals = gamma_arrivals(n, t.rate, t.burstiness, rng)
    elif t.pattern == "diurnal":
        arrivals = diurnal_arrivals(n, t.rate, t.peak_ratio, rng)
    elif t.pattern == "burst":
        arrivals = burst_arrivals(n, t.rate, t.peak_ratio, t.burst_every_s, t.burst_length_s, rng)
    else:  # ramp
        if t.ramp_to is None:
            raise ValueError("pattern 'ramp' needs ramp_to (the end rate, requests/s)")
        arrivals = ramp_arrivals(n, t.rate, t.ramp_to, rng)
    return with_provenance(
        build_table(cfg, arrivals, rng),
        {
            "pattern": t.pattern,
            "seed": t.seed,
            "rows": n,
            "columns": {"*": f"generated: {t.pattern} arrivals, the config's model and niche mix"},
            "from_log": [],
            "filled": [],
        },
    )


def build_table(
    cfg: EaselConfig,
    arrivals: np.ndarray,
    rng: np.random.Generator,
    given: dict[str, list[Any]] | None = None,
) -> pa.Table:
    """Manifest rows for `arrivals`; columns in `given` (e.g. from a log) win over the mix."""
    n = len(arrivals)
    given = {k: v for k, v in (given or {}).items() if v is not None}
    mix = mix_columns(cfg, n, rng)
    seeds = rng.integers(0, 2**31 - 1, size=n)
    if "model" in given:
        # Sizes follow the row's own model; an unknown model keeps nulls (the reader rejects it).
        known = {m.name: m for m in cfg.models}
        models = [known.get(m) if m is not None else None for m in given["model"]]
        mix["width"] = mix["height"] = [m.resolution.default if m else None for m in models]
        mix["steps"] = [m.steps.default if m else None for m in models]
    cols: dict[str, Any] = {
        "job_id": [f"job-{i:07d}" for i in range(n)],
        "arrival_s": np.asarray(arrivals, dtype=np.float64),
        "seed": seeds,
        "tenant": [None] * n,
        "reference_image": [None] * n,
        "reference_images": [None] * n,
        "reference_roles": [None] * n,
        **mix,
    }
    cols.update(given)
    arrays = [pa.array(cols[f.name], type=f.type) for f in MANIFEST_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
