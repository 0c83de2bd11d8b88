"""`easel bench`: the pipeline end to end on the default config, and what a failing stage keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from easel import bench
from easel.cli import main
from tests._chromium import chromium_missing, render
from tests.easel._synthetic_run import config_with, make_run

RUN_FILES = (
    "config.yaml",
    "manifest.parquet",
    "requests.parquet",
    "usage.parquet",
    "availability.json",
    "scores.parquet",
    "summary.json",
    "report.md",
    "report.html",
    "bench.log",
)


def test_bench_end_to_end_on_the_default_config(tmp_path: Path) -> None:
    """24 jobs over all six models, four niches and three simulated providers, for real:
    providers as Serve apps of the bench's Ray, the vendors and the gateway, traffic through it."""
    run = tmp_path / "run"
    assert main(["bench", "--jobs", "24", "--out", str(run), "--quiet"]) == 0

    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert list((run / "images").glob("*.png"))
    assert (run / "plots" / "latency_cdf.png").is_file()

    s = json.loads((run / "summary.json").read_text())
    assert s["run"]["status"] == "ok"
    status = {st["name"]: st["status"] for st in s["run"]["stages"]}
    assert status == {name: "skipped" if name == "sweep" else "ok" for name in bench.STAGES}
    assert s["counts"]["jobs"] == 24 and s["counts"]["requests"] == 24
    models = {m.name for m in config_with().models}
    assert {r["model"] for r in s["latency"]} == models
    assert {r["model"] for r in s["quality"]["models"]} <= models
    assert s["quality"]["models"]
    # Every model made at least its warm-up image, so every model has a price.
    assert all(r["cost_per_image"] is not None for r in s["cost"]["models"])
    usage = pq.read_table(run / "usage.parquet").to_pylist()
    assert {(r["model"], r["provider"]) for r in usage} == {
        (m.name, p) for m in bench.lean_pairs(config_with()).models for p in m.providers
    }  # the providers' replicas (one provider per open model by default) and the vendors' images
    assert "one provider per self-hosted model" in json.dumps(s["run"]["stages"])
    avail = json.loads((run / "availability.json").read_text())
    assert sum(r["requests"] for r in avail["rows"]) >= 24
    assert all(r["error_rate"] in (None, 0.0) for r in avail["rows"])
    assert s["repro"]["config_hash"] == s["config"]["hash"]
    md = (run / "report.md").read_text()
    assert "What was simulated or tiny" in md and "### Physical floor" in md
    assert "### Provider availability" in md
    # Headshot and try-on jobs carried reference photos (the locally derived subject set and
    # drawn garments) through the Flux.2 tiny builds (`image=`) and the vendors; the report
    # scores identity preservation and the try-on garments, each row with its N.
    manifest = pq.read_table(run / "manifest.parquet").to_pylist()
    conditioned = [r for r in manifest if r["reference_images"]]
    assert {r["niche"] for r in conditioned} == {"corporate-headshots", "try-on"}
    assert all(config_with().model(r["model"]).references for r in conditioned)
    assert {r["model"] for r in conditioned} & {"flux2-dev", "flux2-schnell"}
    assert all(len(r["reference_images"]) == 2 for r in conditioned if r["niche"] == "try-on")
    requests = {r["job_id"]: r for r in pq.read_table(run / "requests.parquet").to_pylist()}
    flux_ok = [r for r in conditioned if r["model"].startswith("flux2")
               and requests[r["job_id"]]["ok"]]  # fmt: skip
    assert flux_ok, "no reference-conditioned Flux.2 job succeeded"
    assert "No job in this run carried reference photos" not in md
    assert "Identity preservation and try-on" in md and "Face embedder:" in md
    rows = s["conditioning"]["rows"]
    assert {r["niche"] for r in rows} >= {"corporate-headshots", "try-on"}
    assert all(r["identity_n"] is not None or r["garment_n"] for r in rows)
    tryon = [r for r in rows if r["niche"] == "try-on"]
    assert tryon and all((r["garment_n"] or 0) >= 1 for r in tryon)
    sets = s["repro"]["reference_sets"]
    assert {x["niche"] for x in sets if x["role"] == "fid-references"} == {
        r["niche"] for r in s["per_niche"] if r["n"]
    }
    assert all(len(x["sha256"]) == 64 for x in sets)

    # The real report renders cleanly too (where Chromium is installed).
    if chromium_missing() is None:
        page = render(run / "report.html", tmp_path / "shot.png")
        assert page["errors"] == [] and len(page["images"]) >= 2
        assert all(done and w > 0 for done, w, _ in page["images"])

    # `easel report DIR` redoes the report from the run folder alone.
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").read_text().count("### ") >= 7


def _fake_stages(monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    """Stages that write a synthetic run instead of using Ray; `fail_at` raises."""

    def ok(self: bench._Run) -> str:
        return "fake"

    def write_files(self: bench._Run) -> str:
        make_run(self.run_dir, self.cfg, with_scores=False)
        return "fake load"

    def boom(self: bench._Run) -> str:
        raise RuntimeError("scorer exploded")

    for name in ("ray", "models", "serve", "manifest", "usage", "price"):
        monkeypatch.setattr(bench._Run, name, ok)
    monkeypatch.setattr(bench._Run, "load", write_files)
    monkeypatch.setattr(bench._Run, fail_at, boom)


def test_a_failing_stage_keeps_earlier_files_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_stages(monkeypatch, "score")
    run = tmp_path / "run"
    assert main(["bench", "--out", str(run)]) == 1

    err = capsys.readouterr().err
    assert "score FAILED" in err and "scorer exploded" in err
    for name in ("config.yaml", "manifest.parquet", "requests.parquet", "usage.parquet"):
        assert (run / name).is_file(), name
    assert not (run / "scores.parquet").exists()
    s = json.loads((run / "summary.json").read_text())
    assert s["run"]["status"] == "failed"
    assert s["run"]["failed_stage"] == "score"
    assert "RuntimeError: scorer exploded" in s["run"]["error"]
    status = {st["name"]: st["status"] for st in s["run"]["stages"]}
    assert status["load"] == "ok" and status["score"] == "failed" and status["price"] == "skipped"
    # The report still shows what the earlier stages measured.
    assert s["latency"] and s["cost"]["models"]
    md = (run / "report.md").read_text()
    assert "failed at stage `score`" in md and "No scores" in md
    log = (run / "bench.log").read_text()
    assert "Traceback" in log and "scorer exploded" in log


def test_real_providers_need_a_cluster(tmp_path: Path) -> None:
    data = config_with().model_dump(mode="json")
    data["providers"][0]["simulated"] = False
    cfg_path = tmp_path / "real.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    assert main(["bench", "--config", str(cfg_path), "--out", str(run), "--quiet"]) == 1
    s = json.loads((run / "summary.json").read_text())
    assert s["run"]["failed_stage"] == "ray"
    assert "--address" in s["run"]["error"]
    assert (run / "config.yaml").is_file() and (run / "report.html").is_file()


def test_bad_flags_fail_before_anything_starts(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    assert main(["bench", "--out", str(busy), "--quiet"]) == 2
    assert sorted(p.name for p in busy.iterdir()) == ["x"]
    manifest = tmp_path / "m.parquet"
    assert (
        main(
            [
                "bench",
                "--jobs",
                "5",
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit):
        main(["bench", "--jobs", "0"])
    args = ["bench", "--url", "http://127.0.0.1:1", "--isolated", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "r2")]) == 2
    assert main(["bench", "--url", "ftp://x", "--out", str(tmp_path / "r3"), "--quiet"]) == 2


@pytest.mark.slow
def test_bench_isolated_runs_end_to_end(tmp_path: Path) -> None:
    """`easel bench --isolated`: one Ray cluster per provider, as in production."""
    import yaml

    data = config_with().model_dump(mode="json")
    data["models"] = [m for m in data["models"] if m["name"] in ("sdxl-turbo", "proprietary-a")]
    data["traffic"]["model_mix"] = {}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    args = ["bench", "--isolated", "--config", str(path), "--jobs", "12", "--out", str(run)]
    assert main([*args, "--quiet"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["counts"]["ok"] == 12 and "one Ray cluster each" in json.dumps(s["run"]["stages"])


def test_jobs_flag_beats_the_config() -> None:
    assert bench.resolve_config(None, jobs=7).traffic.jobs == 7
    assert bench.resolve_config(None).traffic.jobs == config_with().traffic.jobs


def test_the_default_bench_serves_each_open_model_once_spread_over_the_providers() -> None:
    full = config_with()
    lean = bench.lean_pairs(full)
    assert [m.name for m in lean.models] == [m.name for m in full.models]
    for f, m in zip(full.models, lean.models, strict=True):
        if m.backend == "diffusers":
            assert len(m.providers) == 1 and m.providers[0] in f.providers
        else:
            assert m.providers == f.providers  # closed models keep their resellers
    served = {p for m in lean.models if m.backend == "diffusers" for p in m.providers}
    assert served == {p.name for p in full.providers}  # every provider still serves a model
    assert bench.resolve_config(None, full_matrix=False).models == lean.models
    # ... with a provider's tiny builds in one replica process (one torch import each provider)
    assert bench.resolve_config(None, full_matrix=False).serve.share_tiny_replicas
    assert bench.resolve_config(None) == full  # --full-matrix: every pair
    assert not full.serve.share_tiny_replicas
