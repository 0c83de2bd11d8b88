"""FID/KID state updates: rows appended in chunks against re-joining every row on each update.

`FeatureStats.update` keeps one chunk per batch and joins them once, when the rows are read. The
baseline, in the same run, is the former state: the same sums, plus one array re-concatenated on
every update (each batch copied every earlier row, quadratic in the number of images). Both are
fed the same float32 rows (128-d, the tiny feature net's size) in batches of 32, then read once;
the statistics are checked equal.

    python benchmarks/feature_state.py [--rows 1000 5000 20000 50000] [--out F]

writes benchmarks/results/feature_state.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.fid import FeatureStats


class _RejoinedState:
    """The former FeatureStats update: sums, and all rows re-concatenated per update."""

    def __init__(self, dim: int) -> None:
        self.sum = np.zeros(dim)
        self.cov_sum = np.zeros((dim, dim))
        self.ids: list[str] = []
        self.features = np.zeros((0, dim), dtype=np.float32)

    def update(self, ids: list[str], x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.sum += x.sum(axis=0)
        self.cov_sum += x.T @ x
        self.ids.extend(ids)
        self.features = np.concatenate([self.features, x.astype(np.float32)])


def _time(state: object, rows: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        state.update([f"i{start + i:07d}" for i in range(len(part))], part)  # type: ignore[attr-defined]
    _ = state.features  # type: ignore[attr-defined]  # the one read at the end
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 5000, 20000, 50000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "feature_state.json",
    )
    args = ap.parse_args()
    out = []
    for n in args.rows:
        rows = np.random.default_rng(n).normal(size=(n, args.dim)).astype(np.float32)
        new, old = FeatureStats(args.dim), _RejoinedState(args.dim)
        new_s = _time(new, rows, args.batch_size)
        old_s = _time(old, rows, args.batch_size)
        assert np.array_equal(new.features, old.features) and new.ids == old.ids
        assert np.array_equal(new.cov_sum, old.cov_sum)
        out.append(
            {
                "rows": n,
                "chunked_s": new_s,
                "rejoined_s": old_s,
                "chunked_us_per_row": 1e6 * new_s / n,
                "rejoined_us_per_row": 1e6 * old_s / n,
                "speedup": old_s / new_s,
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr)
    result = {
        "command": "python benchmarks/feature_state.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg": os.getloadavg(),
        },
        "dim": args.dim,
        "batch_size": args.batch_size,
        "rows": out,
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
