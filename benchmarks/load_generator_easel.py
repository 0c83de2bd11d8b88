"""The load generator against a real easel on the same machine: overloaded, and beside AIPerf.

Starts `easel serve` (its own process and Ray: one tiny sdxl-lightning replica, 64 px, 4 steps,
one provider) on a free port of 127.0.0.1, then runs the real `easel load` (its own process
and Ray) against it. Both share this machine's cores, as a generator beside the servers it
tests does.

- overload: --over-rows rows at --over-rate req/s (default 600 at 20 req/s; the replica
  completes a few per second, so requests queue and Serve sheds the rest with 503s), once per
  --priorities value (default auto, then ray: Ray's own worker niceness 15, the unprotected
  baseline), in --rounds alternating rounds. The generator's figures: send lag, rows not
  sent, achieved/offered; and what the server answered.
- aiperf: the same endpoint (easel's OpenAI route, /v1/images/generations) at the same rate
  (--cmp-rate, default 2 req/s, --cmp-rows requests, Poisson) from easel's generator
  (`--api openai`) and from AIPerf (`aiperf profile --endpoint-type image-generation
  --request-rate R`, run from its own venv, --aiperf), alternating. Both tools' latency
  percentiles and achieved rates in one table. AIPerf measures from its send; easel's
  `service_ms` is the same interval (`latency_ms` counts from the schedule, so it also holds
  any send lag). AIPerf runs offline with a tokenizer directory from the tiny model cache and
  its prompts from the same niche prompts the manifest draws.

    python benchmarks/load_generator_easel.py
    python benchmarks/load_generator_easel.py --scenario aiperf --cmp-rate 2 --cmp-rows 120

Writes the tables to stdout and the figures to benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from _loadgen import ROOT, child_env, easel_load, generator_row, git_commit, machine, write_result

from config import EaselConfig, load_config, parse_config
from config.cache import cache_dir
from load_tests import generate_manifest, write_manifest

_MODEL = "sdxl-lightning"
_AIPERF = Path("/work/venvs/aiperf/bin/aiperf")
_AIPERF_KEYS = (
    "request_latency",
    "request_throughput",
    "request_count",
    "error_request_count",
    "benchmark_duration",
)


def one_model_config(model: str = _MODEL) -> EaselConfig:
    """The default config cut down to `model` on its first provider (one replica)."""
    data = load_config().model_dump(mode="json")
    m = next(x for x in data["models"] if x["name"] == model)
    m["providers"] = m["providers"][:1]
    data["models"] = [m]
    data["providers"] = [p for p in data["providers"] if p["name"] == m["providers"][0]]
    data["traffic"]["model_mix"] = {}
    data["routing"]["weights"] = {}
    data["evaluation"]["anchors"]["human_anchor_model"] = model
    return parse_config(data, f"<default config, {model} on {m['providers'][0]} only>")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_easel(cfg_path: Path, log: Path, deadline_s: float = 600.0) -> tuple[Any, str]:
    """`easel serve --config CFG --port FREE` in its own process group; (process, url)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "easel.cli", "serve", "--config", str(cfg_path)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = child_env()
    env["RAY_TMPDIR"] = str(log.parent / "ray")  # a private Ray, apart from the load's own
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"easel serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if _ready(url):
            return proc, url
        time.sleep(1.0)  # polling a server's readiness, not waiting on our own system
    stop_easel(proc)
    raise RuntimeError(f"easel serve not ready after {deadline_s:.0f} s: {log.read_text()[-2000:]}")


def stop_easel(proc: Any) -> None:
    """SIGINT to the server's group (it shuts Serve and its Ray down), then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)


def _server_row(res: dict[str, Any]) -> dict[str, Any]:
    o = res["summary"]["overall"]
    keys = ("latency_all_p50_ms", "latency_all_p95_ms", "latency_all_p99_ms")
    keys += ("service_p50_ms", "service_p90_ms", "service_p95_ms", "service_p99_ms")
    return {k: o.get(k) for k in (*keys, "throughput_rps", "success_rate")}


def overload(
    tmp: Path, cfg_path: Path, url: str, rows: int, rate: float, prios: list[str], rounds: int
) -> list[dict[str, Any]]:
    cfg = load_config(cfg_path)
    m = write_manifest(
        generate_manifest(cfg, pattern="poisson", jobs=rows, rate=rate, seed=3),
        tmp / "over.parquet",
    )
    out = []
    for k in range(rounds):
        for prio in prios:
            run = tmp / f"over-{prio}-{k}"
            args = ["--config", str(cfg_path), "--no-images", "--warmup", "1", "--timeout", "60"]
            res = easel_load(m, url, run, [*args, "--priority", prio], sample=False)
            disp = res["load"]["attempts"][-1]["dispatchers"]
            row = {
                "target_rps": rate,
                "priority": prio,
                "round": k,
                "in_force": sorted({f"{d['scheduler']} nice {d['niceness']}" for d in disp}),
                **generator_row(res),
                "server": _server_row(res),
            }
            out.append(row)
            print(
                f"overload {prio} round {k}: lag p99 {row['send_lag_p99_ms']} ms, not sent "
                f"{row['not_sent']}, achieved/offered {row['achieved_over_offered']:.3f}, "
                f"errors {row['errors']}",
                flush=True,
            )
    return out


def _hf_tokenizer(hub: Path) -> str:
    """The tiny model's CLIP tokenizer placed in the Hugging Face cache layout under `hub`.

    AIPerf needs a tokenizer even for image prompts; offline (HF_HUB_OFFLINE=1) it resolves
    names through the cache's snapshot layout only (a plain directory path fails there), and its
    `builtin` tokenizer downloads its encoding. Returns the repo id to pass as --tokenizer.
    """
    repo, rev = "easel/tiny-clip-tokenizer", "0" * 40
    snap = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (snap.parents[1] / "refs").mkdir(exist_ok=True)
    (snap.parents[1] / "refs" / "main").write_text(rev)
    for f in (cache_dir() / "tiny" / _MODEL / "tokenizer").iterdir():
        shutil.copy(f, snap / f.name)
    return repo


def _aiperf_run(
    tmp: Path, url: str, rate: float, rows: int, prompts: list[str], k: int
) -> dict[str, Any]:
    """One `aiperf profile` run; its figures from profile_export_aiperf.json."""
    art = tmp / f"aiperf-{k}"
    data = tmp / "aiperf_prompts.jsonl"
    data.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    tok = _hf_tokenizer(tmp / "hf")
    cmd = [str(_AIPERF), "profile", "--model", _MODEL, "--url", url]
    cmd += ["--endpoint-type", "image-generation", "--request-rate", f"{rate:g}"]
    cmd += ["--arrival-pattern", "poisson", "--request-count", str(rows)]
    cmd += ["--warmup-request-count", "1", "--extra-inputs", "size:64x64"]
    cmd += ["--input-file", str(data), "--custom-dataset-type", "single_turn"]
    cmd += ["--tokenizer", tok, "--output-artifact-dir", str(art), "--ui-type", "none"]
    cmd += ["--random-seed", "1", "--request-timeout-seconds", "60"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_CACHE=str(tmp / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    (tmp / f"aiperf-{k}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"aiperf failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}"
        )
    d = json.loads((art / "profile_export_aiperf.json").read_text())  # the profiling phase
    lat = d.get("request_latency", {})
    thr = d.get("request_throughput", {})
    return {
        "tool": "aiperf",
        "round": k,
        "command": " ".join(cmd),
        "n": (d.get("request_count") or {}).get("avg"),
        "errors": (d.get("error_request_count") or {}).get("avg", 0),
        "error_rate_pct": (d.get("request_error_rate") or {}).get("avg"),
        "latency_unit": lat.get("unit"),
        "latency_p50_ms": lat.get("p50"),
        "latency_p90_ms": lat.get("p90"),
        "latency_p95_ms": lat.get("p95"),
        "latency_p99_ms": lat.get("p99"),
        "achieved_rps": None,  # AIPerf reports completions per second, not sends
        "throughput_rps": thr.get("avg"),
        "wall_s": round(wall, 1),
        "export": {k: d[k] for k in _AIPERF_KEYS if k in d},
    }


def side_by_side(
    tmp: Path, cfg_path: Path, url: str, rate: float, rows: int, rounds: int
) -> list[dict[str, Any]]:
    cfg = load_config(cfg_path)
    table = generate_manifest(cfg, pattern="poisson", jobs=rows, rate=rate, seed=5)
    m = write_manifest(table, tmp / "cmp.parquet")
    prompts = pq.read_table(m, columns=["prompt"]).column("prompt").to_pylist()
    out = []
    for k in range(rounds):
        run = tmp / f"cmp-easel-{k}"
        args = ["--config", str(cfg_path), "--api", "openai", "--no-images", "--warmup", "1"]
        res = easel_load(m, url, run, [*args, "--timeout", "60"], sample=False)
        g, o = res["summary"]["generator"], res["summary"]["overall"]
        out.append(
            {
                "tool": "easel load",
                "round": k,
                "n": o["n"],
                "errors": o["n"] - o["ok"],
                "latency_unit": "ms",
                # service_ms (done - sent): the interval AIPerf's request_latency measures
                **{f"latency_p{p}_ms": o[f"service_p{p}_ms"] for p in (50, 90, 95, 99)},
                "scheduled_latency_p95_ms": o["latency_all_p95_ms"],
                "achieved_rps": g["achieved_rps"],
                "offered_rps": g["offered_rps"],
                "throughput_rps": o["throughput_rps"],
                "send_lag_p99_ms": g["send_lag_p99_ms"],
                "wall_s": res["wall_s"],
            }
        )
        print(f"easel load round {k}: {out[-1]['latency_p50_ms']} ms p50", flush=True)
        out.append(_aiperf_run(tmp, url, rate, rows, prompts, k))
        print(f"aiperf round {k}: {out[-1]['latency_p50_ms']} ms p50", flush=True)
    return out


def _f(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", choices=("all", "overload", "aiperf"), default="all")
    p.add_argument("--over-rate", type=float, default=20.0)
    p.add_argument("--over-rows", type=int, default=600)
    p.add_argument("--priorities", nargs="+", default=["auto", "ray"])
    p.add_argument("--cmp-rate", type=float, default=2.0)
    p.add_argument("--cmp-rows", type=int, default=120)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--name", default="load_generator_easel", help="results file name (no .json)")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temp dir)")
    args = p.parse_args()
    if args.over_rows > 5_000 or args.cmp_rows > 2_000 or args.rounds > 5:
        p.error("keep --over-rows <= 5,000, --cmp-rows <= 2,000 and --rounds <= 5")
    before = machine()
    out: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/load_generator_easel.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": before,
        "server": f"easel serve: one tiny {_MODEL} replica (64 px, 4 steps), one provider",
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        cfg_path = tmp / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(one_model_config().model_dump(mode="json")))
        server, url = start_easel(cfg_path, tmp / "serve.log")
        try:
            if args.scenario in ("all", "overload"):
                out["overload"] = overload(
                    tmp, cfg_path, url, args.over_rows, args.over_rate, args.priorities, args.rounds
                )
            if args.scenario in ("all", "aiperf"):
                if not _AIPERF.is_file():
                    out["aiperf_error"] = f"{_AIPERF} not found"
                else:
                    out["side_by_side"] = side_by_side(
                        tmp, cfg_path, url, args.cmp_rate, args.cmp_rows, args.rounds
                    )
        finally:
            stop_easel(server)
            shutil.rmtree(tmp / "ray", ignore_errors=True)
    if "overload" in out:
        print(f"\noverloaded easel ({args.over_rows} rows at {args.over_rate:g} req/s):")
        print("| priority | in force | send lag p50 | p99 | max | not sent | achieved/offered | "
              "ok | errors |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for r in out["overload"]:
            print(
                f"| {r['priority']} | {', '.join(r['in_force'])} | "
                f"{r['send_lag_p50_ms']:.2f} ms | {r['send_lag_p99_ms']:.2f} ms | "
                f"{r['send_lag_max_ms']:.1f} ms | {r['not_sent']} | "
                f"{r['achieved_over_offered']:.3f} | {r['ok']} | {r['errors']} |"
            )
    if "side_by_side" in out:
        print(f"\nsame endpoint, same rate ({args.cmp_rate:g} req/s, {args.cmp_rows} requests):")
        print("| tool | round | n | errors | p50 | p90 | p95 | p99 | sends/s | completions/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in out["side_by_side"]:
            print(
                f"| {r['tool']} | {r['round']} | {_f(r['n'], '.0f')} | {_f(r['errors'], '.0f')} | "
                f"{_f(r['latency_p50_ms'])} | {_f(r['latency_p90_ms'])} | "
                f"{_f(r['latency_p95_ms'])} | {_f(r['latency_p99_ms'])} | "
                f"{_f(r['achieved_rps'], '.2f')} | {_f(r['throughput_rps'], '.2f')} |"
            )
    out["machine_after"] = machine()
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"wrote {write_result(args.name, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
