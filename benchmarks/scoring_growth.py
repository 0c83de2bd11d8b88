"""Scoring time and memory as a run grows from 1k to 10k images (`easel score` on run folders).

For each size, a synthetic run folder of tiny PNGs (3 models x 2 niches, the default config's
networks and prompts) is scored by `evaluation.score_run` on one Ray, started once. While it
runs, a sampler thread reads every 0.2 s the RSS of the driver and of each scorer actor process.
Reported per size: the pool's scoring seconds (read, decode, networks, merge: score_meta's
`scoring_seconds`), the whole `score_run` seconds (with actor start, tables and bootstrap), ms per
image, and the peak RSS of the driver and of the largest actor. A warm-up run first builds the
reference statistics cache, so every size scores the same work.

Linear time: seconds per image stays level across sizes. Flat memory: peak RSS stays level
(the features themselves, 128 float32 per image, are 0.5 MB per 1k images).

    python benchmarks/scoring_growth.py [--sizes 1000 2500 5000 10000] [--out F] [--plot F]

writes benchmarks/results/scoring_growth.json and scoring_growth.png by default.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import EaselConfig, load_config
from evaluation.scoring import score_run

MODELS = ("model-a", "model-b", "model-c")
_RESULTS = Path(__file__).resolve().parent / "results"


def _config() -> EaselConfig:
    cfg = load_config()
    # few bootstrap draws and KID subsets: the figure is about the per-image path, which these
    # per-group loops would otherwise hide at 1k images
    ev = cfg.evaluation.model_copy(update={"bootstrap": 20, "kid_subsets": 10})
    return cfg.model_copy(update={"evaluation": ev})


def _write_run(path: Path, cfg: EaselConfig, n: int, size: int) -> Path:
    """A run folder of n ok jobs with tiny noisy PNGs whose tint depends on the model."""
    rng = np.random.default_rng(n)
    niches = [x.name for x in cfg.niches[:2]]
    (path / "images").mkdir(parents=True)
    manifest, requests = [], []
    for k in range(n):
        mi, niche = k % len(MODELS), niches[(k // len(MODELS)) % len(niches)]
        prompts = cfg.niche(niche).prompts
        job = f"job-{k:06d}"
        arr = rng.normal(90 + 40 * mi, 30, (size, size, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="PNG")
        rel = f"images/{job}.png"
        (path / rel).write_bytes(buf.getvalue())
        manifest.append(
            {
                "job_id": job,
                "arrival_s": k * 0.01,
                "model": MODELS[mi],
                "niche": niche,
                "prompt": prompts[k % len(prompts)],
                "reference_image": None,
                "width": size,
                "height": size,
                "steps": 4,
                "seed": k,
                "tenant": None,
            }
        )
        requests.append({"job_id": job, "ok": True, "status": 200, "image_path": rel})
    pd.DataFrame(manifest).to_parquet(path / "manifest.parquet", index=False)
    pd.DataFrame(requests).to_parquet(path / "requests.parquet", index=False)
    (path / "config.yaml").write_text(cfg.to_yaml())
    return path


class _RssSampler:
    """Peak RSS of this process and of each scorer actor, sampled in a thread."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.driver = 0
        self.actors: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            for proc in me.children(recursive=True):
                try:
                    if "ScorerActor" in " ".join(proc.cmdline()):
                        rss = proc.memory_info().rss
                        self.actors[proc.pid] = max(self.actors.get(proc.pid, 0), rss)
                except psutil.Error:  # an actor that ended between listing and reading
                    continue
            self._stop.wait(self.every_s)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _score(run: Path, cfg: EaselConfig) -> dict:
    t0 = time.perf_counter()
    with _RssSampler() as rss:
        result = score_run(run, cfg, progress=False)
    total_s = time.perf_counter() - t0
    meta = result.meta
    n = meta["images_scored"]
    return {
        "images": n,
        "scoring_s": meta["scoring_seconds"],
        "score_run_s": total_s,
        "ms_per_image": 1000 * meta["scoring_seconds"] / n,
        "driver_peak_rss_mb": rss.driver / 2**20,
        "actor_peak_rss_mb": max(rss.actors.values(), default=0) / 2**20,
        "actors_seen": len(rss.actors),
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["images"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    ax1.plot(n, [r["scoring_s"] for r in rows], "o-", label="pool scoring")
    ax1.plot(n, [r["score_run_s"] for r in rows], "s--", label="whole score_run")
    ax1.set_xlabel("images")
    ax1.set_ylabel("seconds")
    ax1.legend(fontsize=8)
    ax1.set_title("time", fontsize=10)
    ax2.plot(n, [r["driver_peak_rss_mb"] for r in rows], "o-", label="driver")
    ax2.plot(n, [r["actor_peak_rss_mb"] for r in rows], "s-", label="largest actor")
    ax2.set_ylim(0, None)
    ax2.set_xlabel("images")
    ax2.set_ylabel("peak RSS, MB")
    ax2.legend(fontsize=8)
    ax2.set_title("memory", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    ap.add_argument("--size", type=int, default=32, help="image side, pixels")
    ap.add_argument("--out", type=Path, default=_RESULTS / "scoring_growth.json")
    ap.add_argument("--plot", type=Path, default=_RESULTS / "scoring_growth.png")
    args = ap.parse_args()

    import ray

    cfg = _config()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="easel-growth-") as tmp:
        os.environ.setdefault("EASEL_CACHE", str(Path(tmp) / "cache"))
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            _score(_write_run(Path(tmp) / "warm", cfg, 200, args.size), cfg)  # builds caches
            for n in sorted(args.sizes):
                run = _write_run(Path(tmp) / f"run-{n}", cfg, n, args.size)
                rows.append(_score(run, cfg))
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            ray.shutdown()
    first, last = rows[0], rows[-1]
    result = {
        "command": "python benchmarks/scoring_growth.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "image_size": args.size,
        "actors": cfg.evaluation.actors,
        "batch_size": cfg.evaluation.batch_size,
        "rows": rows,
        "ms_per_image_last_vs_first": last["ms_per_image"] / first["ms_per_image"],
        "driver_rss_last_vs_first": last["driver_peak_rss_mb"] / first["driver_peak_rss_mb"],
        "actor_rss_last_vs_first": last["actor_peak_rss_mb"] / first["actor_peak_rss_mb"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    _plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
