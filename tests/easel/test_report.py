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
