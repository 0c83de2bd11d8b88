"""Images/s of the scorer actor pool against a plain single-process torchmetrics loop.

Same images, same batch size, same networks (the config's FID feature net and CLIP), in one run:

1. `torchmetrics loop`: one process; per batch, `FrechetInceptionDistance.update` and
   `KernelInceptionDistance.update` (each runs the feature net, as torchmetrics does) and
   open_clip image↔prompt cosines. This is the baseline.
2. `in-process Scorer`: one process, easel's `Scorer` (features computed once, shared by FID and
   KID): separates what the pool's parallelism buys from what computing features once buys.
3. `actor pool`: `ScorerPool` with 1 and with N Ray actors (1 CPU, 1 torch thread each), each
   actor decoding its next batch in a second thread (prefetch); and 1 actor without prefetch,
   which shows what the overlap buys. All pools run on one Ray, started once.

Per-actor throughput is the pool's images/s divided by its actors. On a 2-core machine 2 actors
cannot reach 2x: the driver (reading and sending batches), Ray and each actor's decode thread
share the same 2 cores.

Throughput is steady-state (networks loaded; for the pool, actors started); start-up times are
reported beside it. The single-process runs are timed at 1 torch thread and at the default
(one per core) and the better one is the baseline, so oversubscribed threads on a busy machine
do not flatter the pool. The merged pool statistics are checked against the torchmetrics state.

    python benchmarks/scoring_pool.py [--images 2048] [--batch-size 32] [--actors 2] [--out F]

writes benchmarks/results/scoring_pool.json by default.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import load_config
from evaluation.clip_score import ClipModel, resolve_clip_spec
from evaluation.features import load_feature_net, resolve_feature_spec, to_feature_batch
from evaluation.pool import ImageItem, Scorer, ScorerPool, ScorerSpec


def _images(n: int, size: int, prompts: list[str]) -> list[ImageItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        arr = rng.normal(128, 40, (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 16, size / 4)
            d.ellipse(
                [x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3))
            )
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        items.append(
            ImageItem(
                item_id=f"img-{i:06d}",
                group=("gen", f"model-{i % 3}", "niche"),
                data=buf.getvalue(),
                prompt=prompts[i % len(prompts)],
            )
        )
    return items


def _torchmetrics_loop(items: list[ImageItem], spec: ScorerSpec, batch: int) -> dict:
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    t0 = time.perf_counter()
    net = load_feature_net(spec.feature)
    fid = FrechetInceptionDistance(feature=net)
    kid = KernelInceptionDistance(feature=net, subset_size=50)
    clip = ClipModel(spec.clip)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    cosines = []
    with torch.no_grad():
        for start in range(0, len(items), batch):
            part = items[start : start + batch]
            imgs = [Image.open(io.BytesIO(it.data)).convert("RGB") for it in part]
            x = to_feature_batch(imgs, spec.feature.image_size)
            fid.update(x, real=False)
            kid.update(x, real=False)
            emb = clip.encode_images(imgs)
            txt = clip.encode_prompts([it.prompt for it in part])
            cosines.extend((emb * txt).sum(axis=1).tolist())
    run_s = time.perf_counter() - t1
    return {
        "load_s": load_s,
        "run_s": run_s,
        "images_per_s": len(items) / run_s,
        "fake_sum": fid.fake_features_sum.numpy(),
        "clip_sum": float(np.sum(cosines)),
    }


def _in_process(items: list[ImageItem], spec: ScorerSpec, batch: int) -> dict:
    t0 = time.perf_counter()
    scorer = Scorer(spec)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for start in range(0, len(items), batch):
        scorer.score_batch(items[start : start + batch])
    run_s = time.perf_counter() - t1
    return {"load_s": load_s, "run_s": run_s, "images_per_s": len(items) / run_s}


def _pool(pool_cls: type, items: list[ImageItem], spec: ScorerSpec, batch: int, **kw) -> dict:
    t1 = time.perf_counter()
    with pool_cls(spec, num_cpus=1, **kw) as pool:
        start_s = time.perf_counter() - t1
        pool.score(items[: 2 * batch * kw["actors"]], batch_size=batch)  # warm: first calls
        pool.reset()
        t2 = time.perf_counter()
        pool.score(items, batch_size=batch)
        run_s = time.perf_counter() - t2
        state = pool.state()
    sums = sum(g.features.sum for g in state.groups.values())
    clip_sum = sum(g.clip.text_sum for g in state.groups.values())
    return {
        **kw,
        "actor_start_s": start_s,
        "run_s": run_s,
        "images_per_s": len(items) / run_s,
        "images_per_s_per_actor": len(items) / run_s / kw["actors"],
        "feature_sum": sums,
        "clip_sum": clip_sum,
    }


def _pools(items: list[ImageItem], spec: ScorerSpec, batch: int, actors: int) -> list[dict]:
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    try:
        variants = [(1, False), (1, True)] + [(n, True) for n in range(2, actors + 1)]
        runs = [_pool(ScorerPool, items, spec, batch, actors=n, prefetch=p) for n, p in variants]
    finally:
        ray.shutdown()
    for r in runs:
        r["ray_init_s"] = init_s
    return runs


def main() -> int:
    cfg = load_config()
    ev = cfg.evaluation
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=ev.batch_size)
    ap.add_argument("--actors", type=int, default=ev.actors)
    ap.add_argument("--size", type=int, default=64, help="image side, pixels")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "scoring_pool.json",
        help="write the results as JSON here (default: benchmarks/results/scoring_pool.json)",
    )
    args = ap.parse_args()

    import torch

    spec = ScorerSpec(feature=resolve_feature_spec(ev), clip=resolve_clip_spec(ev))
    prompts = [p for n in cfg.niches for p in n.prompts]
    items = _images(args.images, args.size, prompts)
    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    runs = {}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        runs[threads] = (
            _torchmetrics_loop(items, spec, args.batch_size),
            _in_process(items, spec, args.batch_size),
        )
    torch.set_num_threads(default_threads)
    best = max(runs, key=lambda t: runs[t][0]["images_per_s"])
    base = runs[best][0]
    inproc = max((r[1] for r in runs.values()), key=lambda r: r["images_per_s"])
    pools = _pools(items, spec, args.batch_size, args.actors)
    one = next(p for p in pools if p["actors"] == 1 and p["prefetch"])
    base_ips = base["images_per_s"]
    for p in pools:
        p["per_actor_vs_torchmetrics"] = p["images_per_s_per_actor"] / base_ips
        p["per_actor_vs_in_process_scorer"] = p["images_per_s_per_actor"] / inproc["images_per_s"]
        p["speedup_vs_one_actor"] = p["images_per_s"] / one["images_per_s"]
        p["check_max_abs_diff_feature_sum"] = float(
            np.max(np.abs(p["feature_sum"] - base["fake_sum"]))
        )
        p["check_clip_sum_diff"] = abs(p["clip_sum"] - base["clip_sum"])
    result = {
        "command": "python benchmarks/scoring_pool.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads_default": default_threads,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "images": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "feature_net": spec.feature.label,
        "clip": spec.clip.label,
        "torchmetrics_loop_by_threads": {
            t: {k: v for k, v in r[0].items() if k not in ("fake_sum", "clip_sum")}
            for t, r in runs.items()
        },
        "in_process_scorer_by_threads": {t: r[1] for t, r in runs.items()},
        "baseline_threads": best,
        "torchmetrics_loop": {k: v for k, v in base.items() if k not in ("fake_sum", "clip_sum")},
        "in_process_scorer": inproc,
        "actor_pools": [
            {k: v for k, v in p.items() if k not in ("feature_sum", "clip_sum")} for p in pools
        ],
        "ratio_in_process_vs_torchmetrics": inproc["images_per_s"] / base_ips,
    }
    text = json.dumps(result, indent=2, default=float)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
