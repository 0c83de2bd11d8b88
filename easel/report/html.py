"""report.html: one self-contained page (inline CSS, plots embedded as base64 PNG, no scripts)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from easel.report.markdown import header_lines, reference_set_lines
from easel.report.repro import format_weights
from easel.report.tables import Table, all_tables

__all__ = ["EmbeddedPlot", "render_html"]

# (key, title, PNG bytes)
EmbeddedPlot = tuple[str, str, bytes]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #e4e7ee}
h3{margin-top:1.6rem;font-size:1.1rem}
.disclosure{background:#fff6e0;border-left:5px solid #e0a400;padding:.7rem 1rem;margin:1rem 0}
.disclosure ul{margin:.3rem 0 0 1rem;padding:0}
.run{color:#4a5262;font-size:.95rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d9dde6;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f8}tr:nth-child(even) td{background:#fafbfd}
tr.flag td{background:#ffe3e3 !important;font-weight:600}
.notes{font-size:.8rem;color:#4a5262;margin:.2rem 0 0 1rem;padding:0}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e4e7ee}
figcaption{font-size:.85rem;color:#4a5262}
code{background:#f1f3f8;padding:0 .2rem;border-radius:3px}
.failed{color:#b00020;font-weight:700}
"""


def _md_inline(text: str) -> str:
    """Escape, then turn the few Markdown marks the shared header uses into HTML."""
    out = escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers)
    body = []
    for i, row in enumerate(t.rows):
        cls = ' class="flag"' if i in t.flagged else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    if not t.rows:
        body.append(f'<tr><td colspan="{len(t.headers)}">no data</td></tr>')
    notes = ""
    if t.notes:
        notes = '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in t.notes) + "</ul>"
    return (
        f'<h3 id="{escape(t.key)}">{escape(t.title)}</h3>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}"
    )


def _repro(s: Mapping[str, Any]) -> str:
    r = s.get("repro") or {}
    sets = "".join(f"<li>{escape(line)}</li>" for line in reference_set_lines(r))
    sets = f"<ul>{sets}</ul>" if sets else ""
    if not set(r) - {"reference_sets"}:
        return "<p>Not recorded (the report was written without a run record).</p>" + sets
    hw = r.get("hardware") or {}
    pk = r.get("packages") or {}
    rows = [
        ("config hash", f"{r.get('config_hash')} ({r.get('config_name')})"),
        ("seeds", f"config {r.get('seed')}, traffic {r.get('traffic_seed')}"),
        ("command", r.get("command") or "n/a"),
        ("weights", format_weights(r.get("weights") or {}) or "n/a"),
        ("CPU", f"{hw.get('cpu')} × {hw.get('cpu_count')}"),
        ("memory", f"{hw.get('memory_gb')} GB"),
        ("GPUs", ", ".join(hw.get("gpus") or []) or "none"),
        ("platform", f"{hw.get('platform')}, Python {r.get('python')}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None)),
        ("recorded at", r.get("collected_at")),
    ]
    if r.get("ray_resources"):
        rows.append(("Ray cluster resources", str(r["ray_resources"])))
    return (
        "<table><tbody>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
        + "</tbody></table>"
        + sets
    )


def _stages(s: Mapping[str, Any]) -> str:
    stages = (s.get("run") or {}).get("stages") or []
    if not stages:
        return ""
    rows = []
    for st in stages:
        cls = ' class="failed"' if st["status"] == "failed" else ""
        wall = "" if st.get("wall_s") is None else f"{st['wall_s']:.1f} s"
        rows.append(
            f"<tr><td>{escape(st['name'])}</td><td{cls}>{escape(st['status'])}</td>"
            f"<td>{wall}</td><td>{escape(str(st.get('detail') or ''))}</td></tr>"
        )
    return (
        "<h2>Stages</h2><table><thead><tr><th>Stage</th><th>Status</th><th>Wall time</th>"
        f"<th>Detail</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_html(s: Mapping[str, Any], plots: Sequence[EmbeddedPlot] = ()) -> str:
    """The whole report.html: no external resources, so it opens anywhere, offline."""
    title = f"Benchmark report: {s['config']['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if s["config"].get("description"):
        parts.append(f"<p>{escape(s['config']['description'])}</p>")
    if s.get("disclosures"):
        items = "".join(f"<li>{escape(d)}</li>" for d in s["disclosures"])
        parts.append(
            '<div class="disclosure" id="disclosures"><strong>What was simulated or tiny in this '
            f"run (read first):</strong><ul>{items}</ul></div>"
        )
    parts.append(
        '<p class="run">Run: ' + "; ".join(_md_inline(x) for x in header_lines(s)) + ".</p>"
    )
    parts.append("<h2>Results</h2>")
    parts.extend(_table(t) for t in all_tables(s))
    if plots:
        parts.append("<h2>Plots</h2>")
        for key, ptitle, png in plots:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure id="plot-{escape(key)}"><img alt="{escape(ptitle)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{escape(ptitle)}</figcaption>'
                "</figure>"
            )
    parts.append(_stages(s))
    parts.append("<h2>Reproducibility</h2>" + _repro(s))
    parts.append("</body></html>")
    return "\n".join(parts)
