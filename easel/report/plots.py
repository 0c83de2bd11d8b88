"""The report's plots, drawn with matplotlib's Agg backend into PNG bytes.

Each function takes plain numbers and returns PNG bytes (or None when there is nothing to draw),
so the report can both save them under `plots/` and embed them in the self-contained HTML.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "QualityCostPoint",
    "latency_cdf_png",
    "latency_vs_load_png",
    "pareto_front",
    "quality_vs_cost_png",
]


@dataclass(frozen=True)
class QualityCostPoint:
    label: str
    cost: float
    quality: float
    quality_lo: float | None = None
    quality_hi: float | None = None
    color: str | None = None


def _figure(width: float = 7.0, height: float = 4.2):
    # Import here, with the Agg backend forced, so headless runs never look for a display.
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def latency_cdf_png(
    latencies_ms: Mapping[str, Sequence[float]],
    colors: Mapping[str, str] | None = None,
    attempted: Mapping[str, int] | None = None,
) -> bytes | None:
    """Empirical CDF of end-to-end latency, one line per model (log x axis), in mapping order.

    `latencies_ms` are the successful requests' latencies; `attempted` (default: as many) the
    requests each model was sent. The y axis is the share of *attempted* requests, so a model
    whose requests failed tops out at its success rate instead of reaching 1.
    """
    series = {k: np.sort(np.asarray(v, dtype=float)) for k, v in latencies_ms.items() if len(v)}
    if not series:
        return None
    plt, fig, ax = _figure()
    for label, xs in series.items():
        total = max((attempted or {}).get(label, len(xs)), len(xs))
        ys = np.arange(1, len(xs) + 1) / total
        # Start each line at 0 so a model with few requests still reads as a CDF.
        ax.step(
            np.r_[xs[0], xs],
            np.r_[0.0, ys],
            where="post",
            label=f"{label} (N={total}, {100 * len(xs) / total:.0f} % ok)",
            color=(colors or {}).get(label),
        )
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.text(
        0.01,
        0.955,
        "p95",
        color="grey",
        fontsize=8,
        va="bottom",
        transform=ax.get_yaxis_transform(),
    )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms, from the scheduled send time)")
    ax.set_ylabel("share of all requests (failures never arrive)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Latency CDF per model")
    return _png(plt, fig)


def pareto_front(points: Sequence[QualityCostPoint]) -> list[QualityCostPoint]:
    """The points no other point beats on both cost (lower) and quality (higher), by cost."""
    front: list[QualityCostPoint] = []
    best = -np.inf
    for p in sorted(points, key=lambda p: (p.cost, -p.quality)):
        if p.quality > best:
            front.append(p)
            best = p.quality
    return front


def quality_vs_cost_png(points: Sequence[QualityCostPoint]) -> bytes | None:
    """Composite quality against cost per image, with intervals and the Pareto front."""
    pts = [p for p in points if p.cost is not None and p.quality is not None and p.cost > 0]
    if not pts:
        return None
    plt, fig, ax = _figure()
    for p in pts:
        yerr = None
        if p.quality_lo is not None and p.quality_hi is not None:
            yerr = [[max(0.0, p.quality - p.quality_lo)], [max(0.0, p.quality_hi - p.quality)]]
        ax.errorbar([p.cost], [p.quality], yerr=yerr, fmt="o", capsize=3, color=p.color)
        ax.annotate(
            p.label, (p.cost, p.quality), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    front = pareto_front(pts)
    # Ringed points and a step line: a one-point front must still show.
    ax.scatter(
        [p.cost for p in front],
        [p.quality for p in front],
        s=160,
        facecolors="none",
        edgecolors="black",
        label="Pareto front (nothing cheaper scores higher)",
    )
    ax.step(
        [p.cost for p in front],
        [p.quality for p in front],
        where="post",
        color="black",
        lw=1,
        ls="--",
    )
    ax.set_xscale("log")
    # Room on the right for the labels, which sit beside their points.
    costs = [p.cost for p in pts]
    ax.set_xlim(min(costs) / 1.5, max(costs) * 3)
    ax.set_xlabel("cost per image (USD, log scale)")
    ax.set_ylabel("composite quality (0-100)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Quality against cost")
    return _png(plt, fig)


def latency_vs_load_png(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    source: str = "",
    colors: Mapping[str, str] | None = None,
) -> bytes | None:
    """p95 latency against offered load (requests/s), one line per model; `source` says how."""
    curves = {k: sorted(v) for k, v in curves.items() if len(v) >= 2}
    if not curves:
        return None
    plt, fig, ax = _figure()
    for label, pts in curves.items():
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            marker="o",
            ms=3,
            label=label,
            color=(colors or {}).get(label),
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, all models)")
    ax.set_ylabel("p95 latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Latency against offered load" + (f"\n({source})" if source else ""), fontsize=10)
    return _png(plt, fig)
