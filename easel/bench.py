"""`easel bench`: the stages strung together into one run folder.

config → ray → models → serve → manifest → load → usage → score → price → report. Each stage
writes its files into the run folder as it finishes, so a failing stage keeps everything the
earlier ones wrote; the failure (stage, reason) goes into summary.json and bench.log, the report
is still written from what exists, and the command exits non-zero.

Serving is the federation as it runs anywhere: `serve` starts the providers (one Serve app each
on the bench's Ray, or with `--isolated` one Ray cluster each), the simulated vendors and the
gateway (`serve_apps.local.LocalStack`), and the load test goes through the gateway. With
`--url` nothing is deployed: the stages run against a gateway that is already up, and usage for
costing and the availability figures are read from it (`/v1/admin/usage`, the providers' ledgers
and the vendors' images; `/v1/admin/availability`), for this run's window only.

Resume (`easel bench --resume DIR`): after each stage the bench writes `bench_state.json` (the
options and every stage's outcome). A bench killed part way is finished from there: the stages
whose files are kept (`RESUMABLE`: manifest, load, sweep, usage, score), done in the earlier
attempt and in an unbroken run from the start, are not run again; a load stage that did not
finish resumes its folder (`easel load --resume`: only the rows without a record are sent);
everything after the first stage not kept runs again, on freshly started providers (`serve`
is skipped when no stage left needs it). GPU time of the killed attempt's replicas is not
charged: their usage ledgers died with them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from config import EaselConfig, load_config, parse_config
from easel.bench_state import ResumeError, kept_stages, read_state, write_state

__all__ = [
    "STAGES",
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "lean_pairs",
    "resolve_config",
    "run_bench",
]

STAGES = (
    "config",
    "ray",
    "models",
    "serve",
    "manifest",
    "load",
    "sweep",
    "usage",
    "score",
    "price",
    "report",
)
APP_HOST = "127.0.0.1"
# Options a resume takes from the folder's state (given again, --url and --address win).
_RESUMED_OPTIONS = ("manifest", "address", "url", "isolated", "sweep", "full_matrix")
# The bench's own local Ray starts no worker it has no task for and keeps none idle: by default
# Ray prestarts a worker per CPU for the first driver and keeps finished tasks' workers for
# reuse (each ~0.1 GB here, measured in benchmarks/bench_resources.py). Every actor of the
# bench starts its own worker anyway; the few plain tasks (a manifest scan, Ray Data's reads)
# pay a worker start each.
LEAN_RAY: dict[str, Any] = {"prestart_worker_first_driver": False, "num_workers_soft_limit": 0}

log = logging.getLogger("easel.bench")
# bench.log is the only sink: tracebacks must not spill onto the terminal via logging's last resort.
log.addHandler(logging.NullHandler())


class BenchError(RuntimeError):
    """A stage cannot go on; the message is the reason shown to the user."""


class _Skip(Exception):
    """A stage that does not apply to this run; the message says why."""


class _Kept(Exception):
    """A stage a resume does not run again: its files from the earlier attempt are kept."""


_KEPT = "kept from the earlier attempt: "


@dataclass
class BenchOptions:
    """What `easel bench` was asked to do (CLI flags beat the config file)."""

    config: str | None = None
    out: str | None = None
    jobs: int | None = None
    manifest: str | None = None
    address: str | None = None
    url: str | None = None
    isolated: bool = False
    sweep: bool = False
    full_matrix: bool = False
    progress: bool = True
    argv: list[str] | None = None
    resume: str | None = None


@dataclass
class StageRecord:
    name: str
    status: str = "pending"  # pending | running | ok | failed | skipped
    wall_s: float | None = None
    detail: str = ""


@dataclass
class BenchResult:
    run_dir: Path | None
    status: str  # ok | failed | interrupted
    exit_code: int
    stages: list[StageRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def resolve_config(
    path: str | None, *, jobs: int | None = None, full_matrix: bool = True
) -> EaselConfig:
    """The config file (or the embedded default) with the CLI overrides applied and re-validated.

    `full_matrix=False` keeps one provider per self-hosted model on simulated providers
    (`lean_pairs`); the bench does that unless `--full-matrix`.
    """
    cfg = load_config(path)
    if jobs is None and full_matrix:
        return cfg
    data = cfg.model_dump(mode="json")
    where = path or "<embedded default>"
    if jobs is not None:
        data["traffic"]["jobs"] = jobs
        where += f" with --jobs {jobs}"
    if not full_matrix:
        data["models"] = [m.model_dump(mode="json") for m in lean_pairs(cfg).models]
        # A provider's tiny CPU builds in one replica process: one torch import, not one each.
        data["serve"]["share_tiny_replicas"] = True
        where += " (one provider per self-hosted model, its tiny builds in one process)"
    return parse_config(data, where)


def lean_pairs(cfg: EaselConfig) -> EaselConfig:
    """`cfg` with each self-hosted model on one of its simulated providers, spread evenly.

    The default local bench: every model still runs, each self-hosted one once rather than on
    each provider it lists, which halves the replica processes of the default config (each
    imports torch and diffusers) while all three providers keep a model. Each model goes to the
    listed provider with the fewest models so far (ties: the first listed). Models on real
    providers and closed models keep their providers; `--full-matrix` keeps every pair.
    """
    simulated = {p.name for p in cfg.providers if p.simulated}
    load = dict.fromkeys((p.name for p in cfg.providers), 0)
    models = []
    for m in cfg.models:
        if m.backend == "diffusers" and len(m.providers) > 1 and set(m.providers) <= simulated:
            pick = min(m.providers, key=lambda p: (load[p], m.providers.index(p)))
            m = m.model_copy(update={"providers": [pick]})
        if m.backend == "diffusers":
            for p in m.providers:
                load[p] += 1
        models.append(m)
    return cfg.model_copy(update={"models": models})


def _default_out(cfg: EaselConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-{stamp}"


def _prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"--out {out}: exists and is not an empty folder (pick a new one)")
    out.mkdir(parents=True, exist_ok=True)
    return out


class _Progress:
    """One line per stage on stderr (and in bench.log): `[4/10] serve … ok 12.3 s (detail)`."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def say(self, text: str, *, always: bool = False) -> None:
        """Log `text`; show it unless quiet (`always`: failures show even then)."""
        log.info(text)
        stream = self.stream or (sys.stderr if always else None)
        if stream is not None:
            print(text, file=stream, flush=True)


class _Run:
    """State shared by the stages of one bench run."""

    def __init__(self, opts: BenchOptions) -> None:
        self.opts = opts
        self.cfg: EaselConfig | None = None
        self.run_dir: Path | None = None
        self.started_ray = False
        self.app_url: str | None = None
        self.stack: Any = None
        self.availability_before: dict[str, Any] | None = None
        self.repro: dict[str, Any] = {}
        self.started_at = dt.datetime.now(dt.UTC)
        self.t0 = time.perf_counter()
        self.wall_start = time.time()
        self.stages = [StageRecord(n) for n in STAGES]
        self.progress = _Progress(sys.stderr if opts.progress else None)
        self._log_handler: logging.Handler | None = None
        self.kept: set[str] = set()  # stages a resume keeps from the earlier attempt
        self.earlier: dict[str, dict[str, Any]] = {}  # the earlier attempt's stage records
        self.load_started = False  # the earlier attempt's load stage began (load.json there)

    # --- stages -------------------------------------------------------------------------------

    def config(self) -> str:
        if self.opts.resume:
            return self._resume_config()
        # A bench that deploys its own providers serves each model once unless --full-matrix;
        # against --url the gateway serves what it serves.
        self.cfg = resolve_config(
            self.opts.config,
            jobs=self.opts.jobs,
            full_matrix=self.opts.full_matrix or bool(self.opts.url),
        )
        if self.opts.manifest and self.opts.jobs:
            raise BenchError("--jobs and --manifest are exclusive: a manifest fixes its own jobs")
        if self.opts.url and self.opts.isolated:
            raise BenchError("--url and --isolated are exclusive: --url deploys nothing")
        if self.opts.url and not self.opts.url.startswith(("http://", "https://")):
            raise BenchError(f"--url must start with http:// or https://, got {self.opts.url!r}")
        self.run_dir = _prepare_out(
            Path(self.opts.out) if self.opts.out else _default_out(self.cfg)
        )
        self._open_log()
        (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())
        from easel.report.repro import collect_repro

        self.repro = collect_repro(self.cfg, argv=self.opts.argv)
        pairs = sum(len(m.providers) for m in self.cfg.models if m.backend == "diffusers")
        matrix = (
            "every (model, provider) pair"
            if self.opts.full_matrix or self.opts.url
            else "one provider per self-hosted model (--full-matrix for every pair)"
        )
        return (
            f"{self.cfg.name} (hash {self.cfg.digest()}) → {self.run_dir}; {pairs} (model, "
            f"provider) pairs, {matrix}"
        )

    def _resume_config(self) -> str:
        """Resume: the folder's resolved config and options; which stages are kept."""
        given = self.opts
        if given.config or given.out or given.jobs or given.manifest or given.full_matrix:
            raise BenchError(
                "--resume takes the config, --out, --jobs, --manifest and --full-matrix of the "
                "run it resumes: give only --resume DIR (and --url/--address when they moved)"
            )
        run_dir = Path(given.resume or "")
        try:
            state = read_state(run_dir)
        except ResumeError as exc:
            raise BenchError(str(exc)) from None
        saved = state.get("options", {})
        for name in _RESUMED_OPTIONS:
            if name in saved and not (name in ("url", "address") and getattr(given, name)):
                setattr(self.opts, name, saved[name])
        self.cfg = load_config(str(run_dir / "config.yaml"))
        self.run_dir = run_dir
        self._open_log()
        from easel.report.repro import collect_repro

        self.repro = collect_repro(self.cfg, argv=self.opts.argv)
        stages = state.get("stages", [])
        self.earlier = {st["name"]: st for st in stages}
        self.kept = kept_stages(run_dir, stages)
        self.load_started = (run_dir / "load.json").is_file()
        again = [n for n in STAGES[1:] if n not in self.kept]
        return (
            f"resuming {run_dir} ({self.cfg.name}, hash {self.cfg.digest()}): kept "
            f"{', '.join(n for n in STAGES if n in self.kept) or 'nothing'}; running "
            f"{', '.join(again)}"
        )

    def _kept(self, name: str) -> None:
        """Raise _Kept when a resume keeps `name` from the earlier attempt."""
        if name in self.kept:
            detail = self.earlier.get(name, {}).get("detail", "")
            raise _Kept(detail.removeprefix(_KEPT))

    def _write_state(self) -> None:
        if self.run_dir is not None:
            options = {k: getattr(self.opts, k) for k in _RESUMED_OPTIONS}
            write_state(self.run_dir, options, [asdict(s) for s in self.stages])

    def ray(self) -> str:
        import ray

        if not self._serving_needed() and "score" in self.kept:
            raise _Skip("resume: no stage left needs Ray")
        cfg = self._cfg()
        # The serving app's admin routes need a key in the replicas' environment; a random one
        # for this run when the user set none (never written anywhere).
        key_env = cfg.serve.admin_key_env
        if key_env and not os.environ.get(key_env):
            os.environ[key_env] = secrets.token_urlsafe(24)
        if ray.is_initialized():
            how = "using the Ray this process already joined"
        elif self.opts.address:
            ray.init(address=self.opts.address, log_to_driver=False)
            self.started_ray = True  # we connected; we disconnect (the cluster stays up)
            how = f"joined {self.opts.address}"
        else:
            hosts_providers = not (self.opts.url or self.opts.isolated)
            real = [p.name for p in cfg.providers if not p.simulated]
            if real and hosts_providers:
                raise BenchError(
                    f"providers {real} are not simulated: a local Ray cannot host them; run "
                    "against their gateway with --url, or join their cluster with --address"
                )
            # A fresh local cluster (never a stale /tmp/ray one). In the default mode each
            # simulated provider is a Serve app on it, pinned by its custom resource. Logical
            # CPUs are at least 4 so the replicas' fractional CPUs, the load test's Ray Data
            # tasks and the scorers can all be placed on a 2-core laptop (they mostly wait on
            # each other, not on the cores).
            ray.init(
                address="local",
                num_cpus=max(4, os.cpu_count() or 1),
                include_dashboard=False,
                log_to_driver=False,
                resources={p.resource: 1000 for p in cfg.providers} if hosts_providers else {},
                _system_config=LEAN_RAY,
            )
            self.started_ray = True
            how = "started a local Ray"
        res = ray.cluster_resources()
        self.repro["ray_resources"] = {
            k: v
            for k, v in sorted(res.items())
            if not k.startswith(("node:", "memory", "object_store"))
        }
        missing = [p.resource for p in cfg.providers if p.resource not in res]
        if missing and not (self.opts.url or self.opts.isolated):
            raise BenchError(f"the Ray cluster has no resource for providers {missing}")
        return f"{how}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"

    def _serving_needed(self) -> bool:
        """Whether a stage still to run needs the serving app (not when a resume kept them)."""
        users = ["load", "usage"] + (["sweep"] if self.opts.sweep else [])
        return any(n not in self.kept for n in users)

    def models(self) -> str:
        if self.opts.url:
            raise _Skip(f"the gateway at {self.opts.url} serves its own models")
        if not self._serving_needed():
            raise _Skip("resume: the stages that serve are kept")
        cfg = self._cfg()
        recipes = sorted({m.tiny_recipe for m in cfg.models if m.tiny_recipe})
        if not recipes:
            return "no tiny models in this config"
        from serve_apps.provider import tiny

        for r in recipes:
            tiny.ensure(r)
        return f"tiny builds ready: {', '.join(recipes)}"

    def serve(self) -> str:
        if self.opts.url:
            self.app_url = self.opts.url.rstrip("/")
            self.availability_before = self._admin(lambda c: c.availability(), required=False)
            raise _Skip(f"using the running gateway at {self.app_url}; nothing deployed")
        if not self._serving_needed():
            raise _Skip("resume: the stages that serve are kept")
        from serve_apps.local.stack import LocalStack

        cfg = self._cfg()
        key_env = cfg.serve.admin_key_env
        env = {key_env: os.environ[key_env]} if key_env and os.environ.get(key_env) else {}
        self.stack = LocalStack(cfg, isolated=self.opts.isolated, host=APP_HOST, port=0,
                                gateway_env=env)  # fmt: skip
        self.stack.start()
        self.app_url = self.stack.url
        providers = self.stack.providers.providers
        mode = "one Ray cluster each" if self.opts.isolated else "Serve apps of one Ray"
        return f"gateway at {self.app_url} in front of {len(providers)} providers ({mode})"

    def manifest(self) -> str:
        import pyarrow.parquet as pq

        from easel.references import with_reference_photos
        from load_tests import generate_manifest, read_manifest, write_manifest

        self._kept("manifest")
        cfg, out = self._cfg(), self._dir()
        dest = out / "manifest.parquet"
        if self.opts.manifest:
            src = Path(self.opts.manifest)
            if not src.is_file():
                raise BenchError(f"--manifest {src}: no such file")
            _table, rejected = read_manifest(src, cfg)
            shutil.copyfile(src, dest)
            n = pq.read_metadata(dest).num_rows
            return f"took {src}: {n} jobs, {len(rejected)} rows rejected (recorded as failures)"
        table = generate_manifest(cfg)
        table, conditioned = with_reference_photos(table, cfg)
        write_manifest(table, dest)
        t = cfg.traffic
        note = f"; {conditioned} carry reference photos" if conditioned else ""
        return f"{table.num_rows} jobs, {t.pattern} at {t.rate:g} req/s (seed {t.seed}){note}"

    def load(self) -> str:
        import pyarrow.parquet as pq

        from load_tests import run_load

        self._kept("load")
        cfg, out = self._cfg(), self._dir()
        # A resume whose manifest was kept finishes the earlier attempt's load folder: only
        # the rows without a record are sent.
        resume = self.load_started and "manifest" in self.kept
        if self.load_started and not resume:  # a new manifest: the old records are not its own
            shutil.rmtree(out / "records", ignore_errors=True)
            for name in ("load.json", "requests.parquet"):
                (out / name).unlink(missing_ok=True)
        res = run_load(
            None if resume else out / "manifest.parquet",
            self._url(),
            out,
            cfg,
            api="easel",
            progress=self.opts.progress,
            resume=resume,
        )
        req = pq.read_table(out / "requests.parquet", columns=["ok"]).column("ok").to_pylist()
        ok = sum(1 for x in req if x)
        note = f" ({res.recorded_before} recorded before the resume)" if resume else ""
        return f"{ok}/{len(req)} requests ok{note}"

    def sweep(self) -> str:
        if not self.opts.sweep:
            raise _Skip("not requested (--sweep)")
        self._kept("sweep")
        from load_tests import run_sweep

        res = run_sweep(
            self._url(), self._dir() / "sweep", self._cfg(), progress=self.opts.progress
        )
        best = "none" if res.best_rate is None else f"{res.best_rate:.3g} req/s"
        return f"{len(res.steps)} steps, highest passing rate {best}: {res.stopped_because}"

    def usage(self) -> str:
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        self._kept("usage")
        rows = _window(self._admin(lambda c: c.usage()), self.wall_start)
        if not rows:
            raise BenchError("the usage ledgers recorded no replica (cannot price GPU time)")
        pq.write_table(pa.Table.from_pylist(rows), self._dir() / "usage.parquet")
        avail = self._admin(lambda c: c.availability(), required=False)
        note = ""
        if avail is not None:
            window = _availability_window(avail, self.availability_before, self.wall_start)
            (self._dir() / "availability.json").write_text(json.dumps(window, indent=2) + "\n")
            note = f"; availability of {len(window['rows'])} upstreams"
        self._stop_app()  # free the replicas' CPU and memory for scoring
        gpu_s = sum((r["last_seen_s"] - r["started_s"]) * r["gpus"] for r in rows)
        return f"{len(rows)} replicas, {gpu_s:,.0f} GPU-s charged{note}"

    def _admin(self, call: Callable[[Any], Any], *, required: bool = True) -> Any:
        """`call(client)` on the gateway's admin routes; None when not required and refused."""
        from cluster.routing_client import RoutingClient, RoutingError

        env = self._cfg().serve.admin_key_env
        key = os.environ.get(env) if env else None
        try:
            with RoutingClient(self._url(), key, timeout=60) as client:
                return call(client)
        except RoutingError as exc:
            if required:
                raise BenchError(
                    f"{exc} (the bench reads usage from the gateway's admin routes: export the "
                    f"gateway's admin key as {env or 'serve.admin_key_env'})"
                ) from None
            log.warning("gateway admin route refused: %s", exc)
            return None

    def score(self) -> str:
        from evaluation import score_run

        self._kept("score")
        score_run(self._dir(), self._cfg(), progress=self.opts.progress)
        return "scores.parquet written"

    def price(self) -> str:
        import pyarrow.parquet as pq

        from easel.cost import deployment_costs, model_costs

        cfg = self._cfg()
        usage = pq.read_table(self._dir() / "usage.parquet").to_pylist()
        per_model = model_costs(deployment_costs(cfg, usage))
        priced = [m for m, c in per_model.items() if c is not None]
        if not priced:
            raise BenchError("no model could be priced (no deployment made an image)")
        return f"{len(priced)}/{len(per_model)} models priced"

    def report(
        self, status: str = "ok", error: str | None = None, failed: str | None = None
    ) -> dict[str, Any]:
        from easel.report import write_report

        files = write_report(
            self._dir(), self._cfg(), run=self._run_meta(status, error, failed), repro=self.repro
        )
        return files.summary

    # --- helpers ------------------------------------------------------------------------------

    def _cfg(self) -> EaselConfig:
        assert self.cfg is not None
        return self.cfg

    def _dir(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir

    def _url(self) -> str:
        if self.app_url is None:
            raise BenchError("the serving app is not up")
        return self.app_url

    def _open_log(self) -> None:
        handler = logging.FileHandler(self._dir() / "bench.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._log_handler = handler

    def close(self) -> None:
        self._stop_app()
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _stop_app(self) -> None:
        self.app_url = None
        stack, self.stack = self.stack, None
        if stack is None:  # nothing deployed (--url), or already stopped
            return
        try:
            stack.stop()
        except Exception:  # tearing down must never hide the run's own outcome
            log.warning("teardown of the local stack failed:\n%s", traceback.format_exc())

    def _run_meta(self, status: str, error: str | None, failed: str | None) -> dict[str, Any]:
        return {
            "status": status,
            "failed_stage": failed,
            "error": error,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - self.t0,
            "stages": [asdict(s) for s in self.stages],
        }


def _window(rows: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    """Usage of this run only: drop replicas gone before it began, clip earlier starts to it.

    On a joined cluster the ledger may hold replicas of earlier runs; a replica that was already
    up when this run began is charged from the run's start, without a cold start.
    """
    out = []
    for r in rows:
        if r["last_seen_s"] < start:
            continue
        r = dict(r)
        if r["started_s"] < start:
            r["started_s"], r["load_s"] = start, 0.0
        out.append(r)
    return out


def _availability_window(
    after: dict[str, Any], before: dict[str, Any] | None, start: float
) -> dict[str, Any]:
    """The gateway's availability figures for this run only (from `start`, less `before`)."""
    from serve_apps.gateway.availability import UpstreamStats, availability_rows, since

    earlier = {
        (s["model"], s["provider"]): UpstreamStats.from_json(s)
        for s in (before or {}).get("stats", [])
    }
    stats = [UpstreamStats.from_json(s) for s in after.get("stats", [])]
    stats = [since(s, earlier.get((s.model, s.provider))) for s in stats]
    end = float(after.get("end_s") or time.time())
    begin = max(start, float(after.get("start_s") or start))
    return {"start_s": begin, "end_s": end, "rows": availability_rows(stats, begin, end)}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_bench(opts: BenchOptions) -> BenchResult:
    """Run every stage; never raises for a stage failure (the result says what failed)."""
    run = _Run(opts)
    n = len(STAGES)
    steps: list[tuple[StageRecord, Callable[[], Any]]] = [
        (rec, getattr(run, rec.name)) for rec in run.stages
    ]
    status, error, failed = "ok", None, None
    try:
        for i, (rec, fn) in enumerate(steps, 1):
            if rec.name == "report":
                break
            rec.status = "running"
            run.progress.say(f"[{i}/{n}] {rec.name} …")
            t = time.perf_counter()
            try:
                rec.detail = str(fn() or "")
                rec.status = "ok"
            except _Skip as why:
                rec.status, rec.detail = "skipped", str(why)
            except _Kept as earlier:
                rec.status, rec.detail = "ok", f"{_KEPT}{earlier}"
            except (Exception, KeyboardInterrupt) as exc:
                rec.status = "failed"
                rec.detail = _describe(exc)
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                error, failed = rec.detail, rec.name
                log.error("stage %s failed:\n%s", rec.name, traceback.format_exc())
                if run.run_dir is None:  # config stage: nothing to keep, say why and stop
                    run.progress.say(f"[{i}/{n}] {rec.name} FAILED: {rec.detail}", always=True)
                    return BenchResult(
                        None, status, 130 if status == "interrupted" else 2, run.stages, error=error
                    )
            finally:
                rec.wall_s = time.perf_counter() - t
                run._write_state()
            mark = {"ok": "ok", "skipped": "skipped"}.get(rec.status, "FAILED")
            run.progress.say(
                f"[{i}/{n}] {rec.name} {mark} {rec.wall_s:.1f} s  {rec.detail}",
                always=rec.status == "failed",
            )
            if rec.status == "failed":
                break
        for rec in run.stages:
            if rec.status == "pending" and rec.name != "report":
                rec.status = "skipped"
        run._stop_app()
        # The report is written in every case, from whatever the stages left.
        rep = run.stages[-1]
        rep.status = "running"
        t = time.perf_counter()
        summary: dict[str, Any] = {}
        try:
            rep.status, rep.detail = "ok", str(run._dir() / "report.html")
            summary = run.report(status, error, failed)
            rep.wall_s = time.perf_counter() - t
            _record_report_time(run._dir() / "summary.json", summary, rep.wall_s)
        except Exception as exc:
            rep.status, rep.detail = "failed", _describe(exc)
            rep.wall_s = time.perf_counter() - t
            log.error("stage report failed:\n%s", traceback.format_exc())
            if status == "ok":
                status, error, failed = "failed", rep.detail, "report"
            _write_fallback_summary(run, status, error, failed)
        run.progress.say(f"[{n}/{n}] report {rep.status} {rep.wall_s:.1f} s  {rep.detail}")
        if summary and opts.progress:
            from easel.report import headline_text

            print(headline_text(summary), flush=True)
        if status != "ok":
            run.progress.say(
                f"easel bench: {status} at stage {failed}: {error} "
                f"(see {run._dir() / 'bench.log'})",
                always=True,
            )
        else:
            run.progress.say(
                f"easel bench: done in {time.perf_counter() - run.t0:.0f} s → {run._dir()}"
            )
        code = {"ok": 0, "interrupted": 130}.get(status, 1)
        return BenchResult(run.run_dir, status, code, run.stages, summary, error)
    finally:
        run.close()


def _record_report_time(path: Path, summary: dict[str, Any], wall_s: float) -> None:
    """The report cannot time itself while it is written: add its wall time to summary.json."""
    import json

    for st in summary.get("run", {}).get("stages", []):
        if st["name"] == "report":
            st["wall_s"] = wall_s
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _write_fallback_summary(run: _Run, status: str, error: str | None, failed: str | None) -> None:
    """When even the report fails, summary.json still says how the run went."""
    import json

    path = run._dir() / "summary.json"
    path.write_text(
        json.dumps(
            {"run": run._run_meta(status, error, failed), "repro": run.repro}, indent=2, default=str
        )
    )
