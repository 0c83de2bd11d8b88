"""The report from synthetic run folders: every table, the floor flag, summary.json, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from easel.report import write_report
from easel.report.floor import floor_seconds
from easel.report.plots import QualityCostPoint, pareto_front
from easel.report.tables import BELOW_FLOOR
from tests.easel._synthetic_run import config_with, make_run

TABLE_TITLES = (
    "### Quality",
    "### Cost per image",
    "### Latency",
    "### Per niche",
    "### Physical floor",
    "### Cost per deployment",
    "### Prices used",
    "## Reproducibility",
)


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # flux2-dev at 280 TFLOP/step × 20 steps on a 312 TFLOP/s A100: a ~17.9 s floor, far above
    # the synthetic ~200 ms latencies, so it must be flagged; sdxl-turbo's floor is tiny.
    cfg = config_with(
        **{"flux2-dev": {"tflop_per_step": 280.0}, "sdxl-turbo": {"tflop_per_step": 0.001}}
    )
    run = make_run(tmp_path_factory.mktemp("run"), cfg, failures_every=7)
    write_report(run, cfg)
    return run


def _line(md: str, section: str, start: str) -> str:
    """The table row starting with `start` in the section headed `section`."""
    body = md[md.index(section) :]
    return next(line for line in body.splitlines() if line.lstrip("|* ").startswith(start))


def test_report_has_every_table_and_disclosures_first(flagged_run: Path) -> None:
    md = (flagged_run / "report.md").read_text()
    for title in TABLE_TITLES:
        assert title in md, title
    top = md.index("## Results")
    disclosure = md.index("What was simulated or tiny")
    assert disclosure < top
    for word in ("SIMULATED", "TINY", "SIMULATED vendor APIs", "No human votes"):
        assert word in md[:top]
    assert "Price date" in md and "2026-11-26" in md
    assert "Formula:" in md


def test_latency_below_floor_is_flagged_only_there(flagged_run: Path) -> None:
    md = (flagged_run / "report.md").read_text()
    dev = _line(md, "### Latency", "Flux.2 [dev]")
    assert BELOW_FLOOR in dev and "17,949 ms" in dev
    turbo = _line(md, "### Latency", "SDXL Turbo")
    assert BELOW_FLOOR not in turbo

    s = json.loads((flagged_run / "summary.json").read_text())
    lat = {r["model"]: r for r in s["latency"]}
    assert lat["flux2-dev"]["below_floor"] == ["p50", "p95"]
    assert lat["flux2-dev"]["floor_ms"] == pytest.approx(20 * 280 / 312 * 1000)
    assert lat["sdxl-turbo"]["below_floor"] == []
    assert lat["flux2-schnell"]["floor_ms"] is None
    floors = [r for r in s["floor"]["rows"] if r["model"] == "flux2-dev"]
    assert {r["provider"] for r in floors} == {"lambda-sim", "azure-sim"}
    assert all(r["below"] == ["p50", "p95"] for r in floors)
    html = (flagged_run / "report.html").read_text()
    assert '<tr class="flag">' in html


def test_summary_figures_match_the_run_files(flagged_run: Path) -> None:
    s = json.loads((flagged_run / "summary.json").read_text())
    req = pq.read_table(flagged_run / "requests.parquet").to_pylist()
    dev = [r for r in req if r["model"] == "flux2-dev"]
    ok = [r["latency_ms"] for r in dev if r["ok"]]
    lat = {r["model"]: r for r in s["latency"]}["flux2-dev"]
    assert lat["n"] == len(dev)
    assert lat["errors"] == len(dev) - len(ok)
    # HdrHistogram (3 significant digits) reads the nearest-rank percentile.
    assert lat["p95_ms"] == pytest.approx(np.percentile(ok, 95, method="inverted_cdf"), rel=2e-3)
    assert s["counts"]["requests"] == len(req)
    assert {r["model"] for r in s["quality"]["models"]} == {
        "flux2-dev",
        "flux2-schnell",
        "sdxl-lightning",
        "sdxl-turbo",
        "proprietary-a",
        "proprietary-b",
    }
    assert len(s["per_niche"]) == 6 * len(s["niches"]) == 6 * 4
    assert s["cost"]["formula"] and s["cost"]["deployments"]
    assert {p["key"] for p in s["plots"]} == {"latency_cdf", "quality_vs_cost"}
    for p in s["plots"]:
        assert (flagged_run / p["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(flagged_run: Path) -> None:
    html = (flagged_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    for ref in ('src="http', 'href="http', "<script", "<link"):
        assert ref not in html


def test_report_of_a_partial_run_says_what_is_missing(tmp_path: Path) -> None:
    cfg = config_with()
    run = make_run(tmp_path, cfg, with_scores=False, with_usage=False)
    files = write_report(
        run, cfg, run={"status": "failed", "failed_stage": "score", "error": "scorer crashed"}
    )
    md = files.report_md.read_text()
    assert "No scores" in md and "No cost" in md
    assert "failed at stage `score`: scorer crashed" in md
    s = json.loads(files.summary_json.read_text())
    assert s["run"]["status"] == "failed"
    assert s["quality"] == {} and s["cost"] == {}
    assert s["latency"]  # what the earlier stages wrote is still reported


def test_rewrite_keeps_the_run_record(tmp_path: Path) -> None:
    cfg = config_with()
    run = make_run(tmp_path, cfg)
    write_report(run, cfg, run={"status": "ok", "wall_s": 12.0}, repro={"config_hash": "abc"})
    files = write_report(run)  # as `easel report DIR` does: config from the folder
    assert files.summary["run"]["wall_s"] == 12.0
    assert files.summary["repro"]["config_hash"] == "abc"


def test_sweep_pattern_plots_latency_against_load(tmp_path: Path) -> None:
    data = config_with().model_dump(mode="json")
    data["traffic"]["pattern"] = "ramp"
    data["traffic"]["ramp_to"] = 20.0
    from config import parse_config

    cfg = parse_config(data)
    run = make_run(tmp_path, cfg, jobs_per_pair=12)
    files = write_report(run, cfg)
    assert "latency_vs_load" in {p["key"] for p in files.summary["plots"]}
    assert (run / "plots" / "latency_vs_load.png").is_file()


def test_floor_seconds() -> None:
    assert floor_seconds(20, 280.0, 312.0) == pytest.approx(17.9487, rel=1e-4)
    assert floor_seconds(4, None, 312.0) is None
    with pytest.raises(ValueError):
        floor_seconds(4, 1.0, 0.0)


def test_pareto_front() -> None:
    pts = [
        QualityCostPoint("cheap-bad", 0.001, 40),
        QualityCostPoint("dominated", 0.01, 35),
        QualityCostPoint("mid", 0.005, 60),
        QualityCostPoint("pricey-best", 0.05, 90),
        QualityCostPoint("pricey-worse", 0.06, 80),
    ]
    assert [p.label for p in pareto_front(pts)] == ["cheap-bad", "mid", "pricey-best"]


def test_a_saturation_sweep_is_plotted_from_its_sweep_json(tmp_path: Path) -> None:
    cfg = config_with()
    run = make_run(tmp_path, cfg)
    (run / "sweep").mkdir()
    steps = [
        {"rate": rate, "latency_at_slo_percentile_ms": {"sdxl-turbo": ms, "flux2-dev": None}}
        for rate, ms in ((2.0, 150.0), (3.0, 180.0), (4.5, 400.0))
    ]
    (run / "sweep" / "sweep.json").write_text(json.dumps({"steps": steps}))
    files = write_report(run, cfg)
    curve = files.summary["load_curve"]
    assert curve["source"].startswith("saturation sweep")
    assert curve["curves"] == {"sdxl-turbo": [[2.0, 150.0], [3.0, 180.0], [4.5, 400.0]]}
    assert "latency_vs_load" in {p["key"] for p in files.summary["plots"]}


def test_the_models_table_is_the_posts(flagged_run: Path) -> None:
    md = (flagged_run / "report.md").read_text()
    assert "| Model | Version | Type | Provider | Price |" in md
    row = _line(md, "### The models", "Proprietary A")
    assert "Closed Source" in row and "API (simulated vendor)" in row and "$0.0400 per image" in row
    row = _line(md, "### The models", "Flux.2 [dev]")
    assert "Open Source" in row and "Self-hosted (lambda-sim, azure-sim)" in row
    assert "$1.79-4.10 per GPU-hour" in row and "tiny random-weight build" in row


def test_failures_count_in_every_latency_figure(flagged_run: Path) -> None:
    # One request in seven failed (14 %): a success-only p95 must never stand alone.
    s = json.loads((flagged_run / "summary.json").read_text())
    dev = {r["model"]: r for r in s["latency"]}["flux2-dev"]
    assert dev["success_rate"] == pytest.approx(dev["ok"] / dev["n"])
    assert dev["all_p95_beyond"] and dev["all_p95_ms"] is None and dev["p95_ms"] is not None
    md = (flagged_run / "report.md").read_text()
    row = _line(md, "### Latency", "Flux.2 [dev]")
    assert "✗ beyond deadline" in row and "%" in row.split("|")[3]
    head = _line(md, "### Latency", "Model")
    assert "Success rate" in head and "p95 successes only" in head
    niche_head = _line(md, "### Per niche", "Niche")
    assert "Success rate" in niche_head and "p95 (all requests)" in niche_head
    assert "Success rate" in _line(md, "### Physical floor", "Model")


def test_cost_is_shown_all_held_and_busy_only_with_the_idle_share(tmp_path: Path) -> None:
    cfg = config_with()
    run = make_run(tmp_path, cfg)
    # A standby replica on a route that never got traffic: all-held charges it, busy-only not.
    usage = pq.read_table(run / "usage.parquet").to_pylist()
    usage.append({**usage[0], "replica": "standby", "provider": "runpod-sim", "busy_s": 0.0,
                  "images": 0, "batches": 0})  # fmt: skip
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(usage), run / "usage.parquet")
    s = write_report(run, cfg).summary
    m = {r["model"]: r for r in s["cost"]["models"]}[usage[0]["model"]]
    dev = [d for d in s["cost"]["deployments"] if d["model"] == usage[0]["model"]]
    held = sum(d["gpu_seconds"] for d in dev)
    busy = sum(d["busy_gpu_seconds"] for d in dev)
    assert busy == pytest.approx(20.0 * 2)  # two replicas busy 20 s each on 1 GPU; standby 0
    assert m["idle_share"] == pytest.approx(1 - busy / held)
    assert m["busy_cost_per_image"] < m["cost_per_image"]
    fee, over = 1 + cfg.cost.platform_fee_pct / 100, cfg.cost.orchestration_overhead_per_image
    price = {p.name: p.price_per_gpu_hour for p in cfg.providers}
    busy_usd = sum(d["busy_gpu_seconds"] * price[d["provider"]] / 3600 for d in dev)
    images = sum(d["images"] for d in dev)
    assert m["busy_cost_per_image"] == pytest.approx((busy_usd / images + over) * fee)
    md = (run / "report.md").read_text()
    assert "Busy-only" in _line(md, "### Cost per image", "Model")


def test_quality_aware_goodput_per_model_and_niche(tmp_path: Path) -> None:
    # A floor at the synthetic images' mean CLIP cosine (0.2): about half fall below it.
    data = config_with().model_dump(mode="json")
    for n in data["niches"]:
        n["quality_floor"] = {"clip_text": 0.2}
    from config import parse_config

    cfg = parse_config(data)
    run = make_run(tmp_path, cfg, jobs_per_pair=20, failures_every=9)
    g = write_report(run, cfg).summary["goodput"]
    rows = {(r["model"], r["niche"]): r for r in g["rows"]}
    niches = len(cfg.niches)  # the default's four, try-on included
    assert len(rows) == 6 * niches + 6
    r = rows[("flux2-dev", "all")]
    assert r["n"] == 20 * niches
    assert r["failed"] + r["late"] + r["below_floor"] + r["unscored"] + r["good"] == r["n"]
    assert r["below_floor"] > 10 and r["below_floor_by_metric"] == {"clip_text": r["below_floor"]}
    assert r["share"] < r["latency_share"] and r["ci"][0] < r["share"] < r["ci"][1]
    by_niche = [rows[("flux2-dev", n.name)]["good"] for n in cfg.niches]
    assert sum(by_niche) == r["good"]
    md = (run / "report.md").read_text()
    assert "Quality-aware goodput" in md and "clip_text ≥ 0.2" in md


def test_rejected_rows_are_counted_by_reason_and_the_traffic_source_shown(tmp_path: Path) -> None:
    import pyarrow as pa

    from load_tests.provenance import with_provenance
    from load_tests.records import REQUEST_SCHEMA, rejected_record

    cfg = config_with()
    run = make_run(tmp_path, cfg)
    req = pq.read_table(run / "requests.parquet").to_pylist()
    bad = [("unknown niche 'corporate_headshots' (allowed: ['a'])", 3)]
    bad += [("unknown model 'flux-2-dev' (allowed: ['b']); missing prompt", 2)]
    for i, (error, k) in enumerate(bad):
        for j in range(k):
            req.append(
                rejected_record({"row": 1000 + 10 * i + j, "error": error, "arrival_s": 1.0})
            )
    pq.write_table(pa.Table.from_pylist(req, schema=REQUEST_SCHEMA), run / "requests.parquet")
    manifest = pq.read_table(run / "manifest.parquet")
    prov = {
        "pattern": "replay", "source": "prod.jsonl", "rows": 10, "log_rows": 12,
        "columns": {"model": "log column 'request.model'", "niche": "the config's mix (fill)"},
        "from_log": ["model"], "filled": ["niche"], "aliases": {"model": {"flux-2-dev": 4}},
        "jitter": "none", "speedup": 1.0, "window_s": None,
    }  # fmt: skip
    pq.write_table(with_provenance(manifest, prov), run / "manifest.parquet")
    s = write_report(run, cfg).summary
    t = s["traffic"]
    assert t["rejected"] == 5
    assert t["rejections"] == [
        {"reason": "unknown niche 'corporate_headshots'", "count": 3},
        {"reason": "unknown model 'flux-2-dev'", "count": 2},
        {"reason": "missing prompt", "count": 2},
    ]
    assert t["provenance"]["filled"] == ["niche"]
    md = (run / "report.md").read_text()
    assert "unknown niche 'corporate_headshots': 3" in md
    assert "log column 'request.model'" in md and "flux-2-dev (4 rows)" in md
    # They belong to no model: the latency table's N is unchanged.
    assert sum(r["n"] for r in s["latency"]) == len(req) - 5
