"""Cells of the report's tables: the Table shape and how each kind of figure is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BEYOND",
    "Summary",
    "Table",
    "display_names",
    "fmt_interval",
    "fmt_ms",
    "fmt_ms_interval",
    "fmt_num",
    "fmt_pct",
    "fmt_pct_interval",
    "fmt_usd",
]

Summary = Mapping[str, Any]
# A percentile that falls among failed requests: it has no latency, it is past the deadline.
BEYOND = "✗ beyond deadline"


@dataclass
class Table:
    """A titled grid of already formatted cells; `flagged` marks rows the reader must see."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flagged: set[int] = field(default_factory=set)


# --- cell formatting --------------------------------------------------------------------------


def fmt_num(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return "$0"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    if abs(v) >= 0.01:
        return f"${v:.4f}"
    return f"${v:.6f}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def fmt_interval(v: float | None, lo: float | None, hi: float | None) -> str:
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{v:.1f}"
    return f"{v:.1f} [{lo:.1f}, {hi:.1f}]"


def display_names(s: Summary) -> dict[str, str]:
    return {m["name"]: m["display_name"] for m in s.get("models", [])}


def fmt_ms_interval(lo: float | None, hi: float | None, beyond: list[bool] | None = None) -> str:
    """'[lo, hi]' of a latency percentile; an open side is '…', one among failures '✗'."""
    b = beyond or [False, False]
    left = "✗" if b[0] else ("…" if lo is None else fmt_ms(lo))
    right = "✗" if b[1] else ("…" if hi is None else fmt_ms(hi))
    return f"[{left}, {right}]"


def fmt_pct_interval(v: float | None, ci: list[float | None] | None) -> str:
    """'97.5 % [95.1, 98.8]'."""
    if v is None:
        return "n/a"
    if not ci or ci[0] is None or ci[1] is None:
        return fmt_pct(v)
    return f"{fmt_pct(v)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
