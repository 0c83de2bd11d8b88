"""Tiny model zoo: build time, size, parameters, and per-image generation time per model.

Builds every recipe from scratch into a private cache (EASEL_CACHE is pointed at a temp folder,
the user's cache is never touched), then loads each default-config model through
`serve_apps.provider.pipelines.load_pipeline` and times `generate` at 64x64, batch 1 and batch 4,
with the model's default steps and guidance. Reported per image, with the batching gain as a ratio
against batch 1 in the same run (the baseline). Each point is timed --repeats times after one
warm-up call; the table shows the best (least disturbed by other processes on a shared machine),
the JSON also keeps the median.

    python benchmarks/tiny_models.py [--repeats 5] [--device cpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of `repeats` calls, after one warm-up call."""
    fn()  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--size", type=int, default=64, help="width and height, pixels")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="easel-bench-cache-") as cache:
        os.environ["EASEL_CACHE"] = cache
        import torch

        from config import load_config
        from serve_apps.provider import pipelines, tiny

        results: dict[str, dict] = {"recipes": {}, "models": {}}
        results["torch_threads"] = torch.get_num_threads()
        results["cpus"] = os.cpu_count()
        total = time.perf_counter()
        for name in tiny.RECIPES:
            tiny.build(name)
            item = tiny.info(name)
            results["recipes"][name] = {
                "pipeline": item.pipeline,
                "build_s": item.build_s,
                "size_mb": round(item.size_bytes / 1e6, 2),
                "parameters": item.parameters,
            }
        results["build_all_s_incl_imports"] = round(time.perf_counter() - total, 2)

        for model in load_config().models:
            if model.backend != "diffusers":
                continue
            pipe = pipelines.load_pipeline(model, device=args.device)
            row: dict[str, float | int | str] = {
                "recipe": model.tiny_recipe or "",
                "steps": model.steps.default,
                "device": str(pipe.device),
            }
            for batch in (1, 4):

                def call(batch: int = batch, pipe=pipe, model=model) -> None:
                    pipelines.generate(
                        pipe,
                        ["a product photo of a ceramic mug"] * batch,
                        width=args.size,
                        height=args.size,
                        steps=model.steps.default,
                        guidance=model.guidance.default,
                        seeds=list(range(batch)),
                    )

                best, median = _timed(call, args.repeats)
                row[f"batch{batch}_call_s"] = round(best, 4)
                row[f"batch{batch}_call_median_s"] = round(median, 4)
                row[f"batch{batch}_per_image_s"] = round(best / batch, 4)
            row["batch4_speedup_per_image"] = round(
                row["batch1_per_image_s"] / row["batch4_per_image_s"], 2
            )
            results["models"][model.name] = row

    print(
        f"{'recipe':<16}{'pipeline':<27}{'build s':>8}{'size MB':>9}{'params':>12}",
        f"   (all four incl. imports: {results['build_all_s_incl_imports']} s)",
    )
    for name, r in results["recipes"].items():
        print(
            f"{name:<16}{r['pipeline']:<27}{r['build_s']:>8.2f}{r['size_mb']:>9.1f}"
            f"{r['parameters']:>12,}"
        )
    print(
        f"\n{'model':<16}{'steps':>6}{'b1 s/img':>10}{'b4 call s':>11}{'b4 s/img':>10}"
        f"{'b4 gain':>9}  ({args.size}x{args.size}, best of {args.repeats}, "
        f"{results['torch_threads']} torch threads)"
    )
    for name, r in results["models"].items():
        print(
            f"{name:<16}{r['steps']:>6}{r['batch1_per_image_s']:>10.3f}{r['batch4_call_s']:>11.3f}"
            f"{r['batch4_per_image_s']:>10.3f}{r['batch4_speedup_per_image']:>8.2f}x"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
