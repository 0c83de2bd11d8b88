"""`easel compare`: a regression gate between run folders, on synthetic runs (no Ray)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from easel.cli import main
from easel.compare import IncomparableRuns, compare_runs
from tests.easel._synthetic_run import config_with, make_run


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("a"), config_with(), jobs_per_pair=30, seed=1)


def test_two_runs_of_one_config_pass(baseline: Path, tmp_path: Path, capsys) -> None:
    # Same config, other random latencies: noise must never fail the gate.
    b = make_run(tmp_path / "b", config_with(), jobs_per_pair=30, seed=2)
    assert main(["compare", str(baseline), str(b)]) == 0
    assert "no regression" in capsys.readouterr().out
    report = json.loads((b / "compare.json").read_text())
    assert report["verdict"] == "ok" and report["config_differences"] == []
    metrics = {r["metric"] for r in report["rows"]}
    assert metrics == {
        "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "goodput", "error_rate",
        "composite", "cost_per_image", "busy_cost_per_image",
    }  # fmt: skip
    assert {r["niche"] for r in report["rows"]} == {"all", *(n.name for n in config_with().niches)}
    assert "Verdict: no regression" in (b / "compare.md").read_text()


def test_a_model_made_three_times_slower_in_its_config_fails(
    baseline: Path, tmp_path: Path, capsys
) -> None:
    # sdxl-turbo at 3 steps instead of 1: three times the latency.
    cfg = config_with(**{"sdxl-turbo": {"steps": {"default": 3, "min": 1, "max": 4}}})
    b = make_run(tmp_path / "b", cfg, jobs_per_pair=30, seed=2, latency_ms={"sdxl-turbo": 600})
    assert main(["compare", str(baseline), str(b), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION sdxl-turbo / all: latency_p50_ms +2" in out
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert report["verdict"] == "regression"
    assert {r["model"] for r in report["regressions"]} == {"sdxl-turbo"}
    p50 = next(
        r for r in report["regressions"] if r["niche"] == "all" and r["metric"] == "latency_p50_ms"
    )
    assert p50["rel"] == pytest.approx(2.0, abs=0.6) and p50["ci"][0] > 0
    assert any("models[sdxl-turbo].steps.default: 1 → 3" in d for d in report["config_differences"])
    assert "**REGRESSION** latency_p50_ms" in (tmp_path / "out" / "compare.md").read_text()


def test_failures_are_regressions_in_error_rate_goodput_and_the_tail(
    baseline: Path, tmp_path: Path
) -> None:
    b = make_run(tmp_path / "b", config_with(), jobs_per_pair=30, seed=2, failures_every=3)
    c = compare_runs(baseline, b)
    regs = {(r.model, r.niche, r.metric) for r in c.regressions}
    assert ("flux2-dev", "all", "error_rate") in regs and ("flux2-dev", "all", "goodput") in regs
    # A third of the requests fail: the p95 falls among them in B, not in A.
    p95 = next(
        r for r in c.rows if (r.model, r.niche, r.metric) == ("flux2-dev", "all", "latency_p95_ms")
    )
    assert p95.b is None and "beyond the deadline in B" in p95.note and p95.regression
    assert math.isinf(p95.ci[0]) or p95.ci[0] > 0


def test_a_lower_composite_and_a_dearer_image_are_regressions(
    baseline: Path, tmp_path: Path
) -> None:
    b = make_run(tmp_path / "b", config_with(), jobs_per_pair=30, seed=1)
    scores = pq.read_table(b / "scores.parquet").to_pandas()
    worse = scores["model"] == "flux2-schnell"
    for col in ("composite", "composite_lo", "composite_hi"):
        scores.loc[worse, col] -= 10
    scores.to_parquet(b / "scores.parquet", index=False)
    usage = pq.read_table(b / "usage.parquet").to_pandas()
    usage.loc[usage["model"] == "sdxl-lightning", "last_seen_s"] *= 2  # twice the GPU time
    usage.to_parquet(b / "usage.parquet", index=False)
    regs = {(r.model, r.metric) for r in compare_runs(baseline, b).regressions}
    assert ("flux2-schnell", "composite") in regs and ("sdxl-lightning", "cost_per_image") in regs
    assert {m for m, _ in regs} == {"flux2-schnell", "sdxl-lightning"}


def test_runs_of_other_models_niches_or_references_are_refused(
    baseline: Path, tmp_path: Path, capsys
) -> None:
    data = config_with().model_dump(mode="json")
    data["niches"] = data["niches"][:2]
    from config import parse_config

    b = make_run(tmp_path / "b", parse_config(data), jobs_per_pair=5, seed=2)
    assert main(["compare", str(baseline), str(b)]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err
    assert "different niches: only in A ['creative-portraits', 'try-on']" in err
    assert not (b / "compare.md").exists()

    other = config_with(**{"flux2-dev": {"weights": "tiny://flux2-klein"}})
    c = make_run(tmp_path / "c", other, jobs_per_pair=5, seed=2)
    with pytest.raises(IncomparableRuns, match="model 'flux2-dev' is another model"):
        compare_runs(baseline, c)

    # Scored against other reference images: the scorer's reference keys differ.
    d = make_run(tmp_path / "d", config_with(), jobs_per_pair=5, seed=2)
    for run, key in ((baseline, "k1"), (d, "k2")):
        meta = {"references": {"corporate-headshots": {"key": key}}}
        (run / "score_meta.json").write_text(json.dumps(meta))
    with pytest.raises(IncomparableRuns, match="'corporate-headshots' was scored against other"):
        compare_runs(baseline, d)
    # Identity figures from other subject photos, or another face embedder, measure other things.
    for run, sha, face in ((baseline, "a" * 64, "dlib:1"), (d, "b" * 64, "arcface:2")):
        sets = [{"niche": "try-on", "role": "subjects", "sha256": sha}]
        meta = {"conditioning_sets": sets, "face_embedder": {"key": face}}
        (run / "score_meta.json").write_text(json.dumps(meta))
    with pytest.raises(IncomparableRuns, match="'try-on' was conditioned on other subjects") as e:
        compare_runs(baseline, d)
    assert "another face embedder: dlib:1 vs arcface:2" in str(e.value)
    (baseline / "score_meta.json").unlink()


def test_the_latency_interval_is_distribution_free_and_honest_at_small_n(tmp_path: Path) -> None:
    from easel.compare import _bounds, _ratio

    x = np.arange(1, 21, dtype=float)  # 20 requests: nothing bounds the p95 from above
    point, lo, hi = _bounds(x, 95, 0.975)
    assert point == 19 and lo > 0 and math.isinf(hi)
    assert _ratio(math.inf, 10.0) == math.inf and _ratio(10.0, math.inf) == -1.0
    assert _ratio(math.inf, math.inf) == 0.0 and _ratio(30.0, 10.0) == pytest.approx(2.0)


def _small_config(tmp_path: Path, name: str, vendor_slowdown: float = 1.0) -> Path:
    """Two models (tiny SDXL Turbo, simulated Proprietary A), two niches, 60 jobs: a real bench
    that takes about a minute; `vendor_slowdown` multiplies the simulated vendor's latency."""
    import yaml

    data = config_with().model_dump(mode="json")
    data["models"] = [m for m in data["models"] if m["name"] in ("sdxl-turbo", "proprietary-a")]
    for m in data["models"]:
        if m["name"] == "sdxl-turbo":
            m["providers"] = ["lambda-sim"]
        else:
            lat = m["api"]["simulated"]["latency"]
            lat["p50_ms"] *= vendor_slowdown
            lat["p95_ms"] *= vendor_slowdown
    data["niches"] = data["niches"][:2]
    data["traffic"].update(jobs=60, rate=4.0)
    data["evaluation"].update(bootstrap=20, reference_images_per_niche=160)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_compare_two_real_runs_of_one_config_and_a_slowed_vendor(tmp_path: Path, capsys) -> None:
    runs = {}
    for name, slow in (("a", 1.0), ("b", 1.0), ("c", 3.0)):
        cfg = _small_config(tmp_path, name, slow)
        runs[name] = tmp_path / name
        assert main(["bench", "--config", str(cfg), "--out", str(runs[name]), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(runs["a"]), str(runs["b"])]) == 0, runs["b"] / "compare.md"
    assert main(["compare", str(runs["a"]), str(runs["c"])]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION proprietary-a / all: latency_p50_ms" in out
    report = json.loads((runs["c"] / "compare.json").read_text())
    assert {r["model"] for r in report["regressions"]} == {"proprietary-a"}
