"""report.md: the summary's tables and plots as GitHub-flavoured Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from easel.report.repro import format_weights
from easel.report.tables import Table, all_tables, fmt_num

__all__ = ["Plot", "reference_set_lines", "render_markdown", "table_markdown"]

# (key, title, path relative to the run folder)
Plot = tuple[str, str, str]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(t: Table) -> str:
    """One table: a heading, the grid (flagged rows in bold) and its notes."""
    lines = [f"### {t.title}", ""]
    lines.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
    lines.append("|" + "---|" * len(t.headers))
    for i, row in enumerate(t.rows):
        cells = [_cell(c) for c in row]
        if i in t.flagged:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if not t.rows:
        lines.append("| " + " | ".join("—" for _ in t.headers) + " |")
    if t.notes:
        lines.append("")
        lines.extend(f"- {_cell(n)}" for n in t.notes)
    return "\n".join(lines)


def header_lines(s: Mapping[str, Any]) -> list[str]:
    """Title, what was simulated or tiny, and how the run went: shared with the HTML."""
    run = s.get("run") or {}
    c = s.get("counts") or {}
    load = s.get("load") or {}
    facts = [
        f"config `{s['config']['name']}` (hash `{s['config']['hash']}`)",
        f"status **{run.get('status', 'unknown')}**",
    ]
    if run.get("failed_stage"):
        facts.append(f"failed at stage `{run['failed_stage']}`: {run.get('error', '')}")
    if c.get("jobs") is not None:
        facts.append(f"{c['jobs']} jobs")
    if c.get("requests") is not None:
        facts.append(f"{c['ok']} ok / {c['errors']} failed requests")
    facts.append(
        f"{c.get('models')} models, {c.get('niches')} niches, {c.get('providers')} providers"
    )
    if load.get("offered_rate") is not None:
        facts.append(
            f"{load['pattern']} arrivals at {fmt_num(load['offered_rate'], 2)} req/s offered"
            + (
                f", {fmt_num(load['achieved_rate'], 2)} req/s achieved"
                if load.get("achieved_rate") is not None
                else ""
            )
        )
    if run.get("wall_s") is not None:
        facts.append(f"wall time {run['wall_s']:.0f} s")
    return facts


def _repro_lines(s: Mapping[str, Any]) -> list[str]:
    r = s.get("repro") or {}
    sets = [f"- {line}" for line in reference_set_lines(r)]
    if not set(r) - {"reference_sets"}:
        return ["Not recorded (the report was written without a run record).", *sets]
    hw = r.get("hardware") or {}
    pk = r.get("packages") or {}
    lines = [
        f"- config hash: `{r.get('config_hash')}` ({r.get('config_name')}); seed {r.get('seed')}, "
        f"traffic seed {r.get('traffic_seed')}",
        f"- command: `{r.get('command') or 'n/a'}`",
        f"- weights: {format_weights(r.get('weights') or {}) or 'n/a'}",
        f"- hardware: {hw.get('cpu')} × {hw.get('cpu_count')} CPUs, {hw.get('memory_gb')} GB RAM, "
        f"GPUs: {', '.join(hw.get('gpus') or []) or 'none'}; {hw.get('platform')}",
        f"- Python {r.get('python')}; "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None),
        f"- recorded at {r.get('collected_at')}",
    ]
    if r.get("ray_resources"):
        lines.append(f"- Ray cluster resources: {r['ray_resources']}")
    return lines + sets


def reference_set_lines(r: Mapping[str, Any]) -> list[str]:
    """One line per reference set the run scored against, with its content hash."""
    out = []
    for x in r.get("reference_sets") or []:
        kind = "synthetic/derived" if x.get("synthetic") else "user folder"
        consent = f"; consent/licence: {x['consent']}" if x.get("consent") else ""
        out.append(
            f"reference set {x['niche']} {x['role']}: {x.get('n')} images ({kind}), "
            f"sha256 {x['sha256']}{consent}"
        )
    return out


def _stage_lines(s: Mapping[str, Any]) -> list[str]:
    stages = (s.get("run") or {}).get("stages") or []
    if not stages:
        return []
    lines = ["## Stages", "", "| Stage | Status | Wall time | Detail |", "|---|---|---|---|"]
    for st in stages:
        wall = "" if st.get("wall_s") is None else f"{st['wall_s']:.1f} s"
        lines.append(
            f"| {st['name']} | {st['status']} | {wall} | {_cell(str(st.get('detail') or ''))} |"
        )
    return [*lines, ""]


def render_markdown(s: Mapping[str, Any], plots: Sequence[Plot] = ()) -> str:
    """The whole report.md."""
    lines = [f"# Benchmark report: {s['config']['name']}", ""]
    if s["config"].get("description"):
        lines += [s["config"]["description"], ""]
    if s.get("disclosures"):
        lines += ["> **What was simulated or tiny in this run (read first):**", ">"]
        lines += [f"> - {d}" for d in s["disclosures"]]
        lines.append("")
    lines += ["Run: " + "; ".join(header_lines(s)) + ".", ""]
    lines += ["## Results", ""]
    for t in all_tables(s):
        lines += [table_markdown(t), ""]
    if plots:
        lines += ["## Plots", ""]
        for _key, title, path in plots:
            lines += [f"### {title}", "", f"![{title}]({path})", ""]
    lines += _stage_lines(s)
    lines += ["## Reproducibility", "", *_repro_lines(s), ""]
    return "\n".join(lines)
