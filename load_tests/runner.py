"""The open-loop load test: Ray Data streams the manifest to dispatcher actors that send on time.

The driver never touches a manifest row. A pre-pass task scans two narrow columns (row count,
duplicate job_ids, arrival order; on a resume, which rows already have a record). Ray Data then
reads the manifest in read tasks that validate each block in pyarrow, and `streaming_split`
hands the blocks to the dispatcher actors directly; each dispatcher takes its rows no further
than a few seconds ahead of their time, sends them on a timer loop of its own and writes its
records as crash-safe part files. The driver starts the clock, shows progress from counters,
and at the end merges the parts into `requests.parquet`. Every manifest row ends as exactly one
record, also across a kill and `resume`.

Warm-up: `warmup_requests` per model are sent before the clock starts; their records go to
`warmup.parquet` (same columns, times from the warm-up start), never into `requests.parquet`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from config import EaselConfig
from load_tests.allocator import system_allocator
from load_tests.client import endpoint_url
from load_tests.manifest import open_manifest
from load_tests.process import PRIORITIES, rss_bytes
from load_tests.progress import ProgressLine
from load_tests.records import PARTS_DIR, REQUEST_SCHEMA, merge_records
from load_tests.run_folder import Attempt, LoadLog, prepare_run_folder, utc_now
from load_tests.stats import LoadSummary, summarize
from load_tests.validation import ManifestRules

__all__ = ["LoadResult", "run_load"]

_log = logging.getLogger(__name__)

_LEAD_S = 1.0  # the clock starts this long after every dispatcher holds its first block
_POLL_S = 0.5


@dataclass
class LoadResult:
    """Where a load test wrote its output, and what it measured.

    Attributes:
        run_dir: the run folder.
        manifest_path: `manifest.parquet` in the run folder, as given (records' `row` numbers
            its rows).
        requests_path: `requests.parquet`: one record per manifest row (REQUEST_SCHEMA).
        warmup_path: `warmup.parquet` with the warm-up records, or None when none were sent.
        summary_path: `load_summary.json` (LoadSummary.to_dict()).
        summary: the LoadSummary.
        rows: manifest rows; rejected: how many of them were invalid (never sent).
        attempt: 0 for a first run, n for the n-th resume of the folder.
        recorded_before: rows that already had a record when this attempt began.
        load_log_path: `load.json` (options, and per attempt the dispatchers' figures).
        dispatchers: per dispatcher, what it reported at the end (records, bound, peaks).
    """

    run_dir: Path
    manifest_path: Path
    requests_path: Path
    warmup_path: Path | None
    summary_path: Path
    summary: LoadSummary
    rows: int
    rejected: int
    attempt: int = 0
    recorded_before: int = 0
    load_log_path: Path | None = None
    dispatchers: list[dict[str, Any]] = field(default_factory=list)


def _warmup_rows(cfg: EaselConfig, models: tuple[str, ...], per_model: int) -> list[list[dict]]:
    """Per model: `per_model` requests with the model's defaults and the first niche's prompt."""
    out = []
    niche = cfg.niches[0]
    known = {m.name: m for m in cfg.models}
    for name in models:
        m = known.get(name)
        if m is None:
            continue
        out.append(
            [
                {
                    "job_id": f"warmup-{name}-{i}",
                    "row": None,
                    "model": name,
                    "niche": niche.name,
                    "prompt": niche.prompts[i % len(niche.prompts)],
                    "width": m.resolution.default,
                    "height": m.resolution.default,
                    "steps": m.steps.default,
                    "seed": i,
                    "tenant": None,
                    "reference_image": None,
                    "reference_images": None,
                    "reference_roles": None,
                    "arrival_s": 0.0,
                }
                for i in range(per_model)
            ]
        )
    return out


def _auth_headers(api_key_env: str | None) -> dict[str, str] | None:
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise ValueError(f"--api-key-env {api_key_env}: that environment variable is not set")
    return {"Authorization": f"Bearer {key}"}


def _pick(given: Any, logged: Any, default: Any) -> Any:
    """A flag beats what load.json recorded, which beats the config's default."""
    if given is not None:
        return given
    return logged if logged is not None else default


def run_load(
    manifest_path: str | Path | None,
    url: str | None,
    out_dir: str | Path,
    cfg: EaselConfig,
    *,
    api: str | None = None,
    max_in_flight: int | None = None,
    save_images: bool | None = None,
    progress: bool = True,
    dispatchers: int | None = None,
    timeout_s: float | None = None,
    warmup_requests: int | None = None,
    api_key_env: str | None = None,
    address: str | None = None,
    resume: bool = False,
    priority: str | None = None,
) -> LoadResult:
    """Replay a manifest against an endpoint, open loop, and write the run folder.

    Uses the running Ray (as `easel bench` does) or starts a local one (`address`: a cluster to
    join instead) and shuts it down afterwards.

    Args:
        manifest_path: a manifest Parquet file (see load_tests.manifest); with `resume`, None
            means the run folder's own copy.
        url: the endpoint's base URL (e.g. http://127.0.0.1:8000); with `resume`, None means
            the one the folder was started with.
        out_dir: the run folder: manifest.parquet, requests.parquet, warmup.parquet,
            load_summary.json, load.json and images/<job_id>.png.
        cfg: models (SLOs, sizes), niches, and `traffic` defaults for what is left None.
        api: 'easel' (POST /v1/generate, the default) or 'openai' (POST
            /v1/images/generations, b64_json).
        max_in_flight: a bound on open requests (split across dispatchers); default
            cfg.traffic.max_in_flight, and when that is None too, memory decides (see
            load_tests.process). Rows that find it reached are recorded as `client_overload`.
        save_images: write each image (default True); False keeps only image_sha256.
        progress: draw the live progress line on stderr.
        dispatchers: dispatcher actors; default cfg.traffic.dispatchers.
        timeout_s: per-request timeout; default cfg.traffic.request_timeout_s.
        warmup_requests: per model, before the clock starts; default cfg.traffic.warmup_requests.
        api_key_env: environment variable holding a bearer token (never written anywhere).
        resume: finish a run folder a killed run left: send only the rows without a record,
            with the options load.json holds unless given here.
        priority: the dispatchers' scheduling priority: 'auto' (the default: the first of
            realtime, high, normal this process may set), 'ray' (as Ray starts workers:
            niceness 15), 'normal' (0), 'high' (-10) or 'realtime' (SCHED_RR); see
            load_tests.process.protect_process.

    Raises:
        ManifestError: the manifest file is not a manifest (bad rows never raise).
        ValueError: a bad url, api or option, or a folder that cannot be (re)used.
    """
    run_dir = Path(out_dir)
    log = LoadLog.read(run_dir) if resume else None
    if resume and log is None:
        raise ValueError(f"--resume {run_dir}: no load.json there (not a folder `easel load` ran)")
    t = cfg.traffic
    url = _pick(url, log and log.url, None)
    if url is None:
        raise ValueError("--url is required")
    api = _pick(api, log and log.api, "easel")
    full_url = endpoint_url(url, api)
    n_disp = _pick(dispatchers, log and log.dispatchers, t.dispatchers)
    timeout_s = _pick(timeout_s, log and log.timeout_s, t.request_timeout_s)
    bound = _pick(max_in_flight, log and log.max_in_flight, t.max_in_flight)
    save_images = _pick(save_images, log and log.save_images, True)
    api_key_env = _pick(api_key_env, log and log.api_key_env, None)
    priority = _pick(priority, log and log.priority, "auto")
    warm_n = t.warmup_requests if warmup_requests is None else warmup_requests
    if (bound is not None and bound < 1) or n_disp < 1 or timeout_s <= 0 or warm_n < 0:
        raise ValueError("max_in_flight and dispatchers must be >= 1, timeout_s > 0, warmup >= 0")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    if bound is not None:
        n_disp = min(n_disp, bound)
    headers = _auth_headers(api_key_env)
    src = Path(manifest_path) if manifest_path is not None else None
    if src is not None:
        open_manifest(src)  # not a manifest: fail before anything is written or started
    manifest, sha = prepare_run_folder(src, run_dir, resume)
    if log is None:
        log = LoadLog(url, api, sha, n_disp, timeout_s, save_images, bound, api_key_env, priority)
    else:
        log.url, log.api, log.dispatchers, log.timeout_s = url, api, n_disp, timeout_s
        log.max_in_flight, log.save_images, log.priority = bound, save_images, priority
        log.api_key_env = api_key_env
    if not (run_dir / "config.yaml").exists():
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    images_dir = run_dir / "images"
    if save_images:
        images_dir.mkdir(exist_ok=True)

    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    try:
        attempt, warm = _attempt(
            ray,
            manifest,
            run_dir,
            cfg,
            log,
            full_url,
            headers,
            warm_n,
            progress,
            resume,
        )
        attempt.mark_memory("sending")
    finally:
        if started_ray:
            ray.shutdown()
    if started_ray:
        attempt.mark_memory("ray.shutdown")
    warmup_path = _write_warmup(run_dir, warm, resume)
    attempt.mark_memory("warm-up records")
    rows = attempt.recorded_before + attempt.to_send
    with system_allocator():
        count = merge_records(run_dir, rows)
    attempt.mark_memory("merge")
    requests_path = run_dir / "requests.parquet"
    if count != rows:
        raise RuntimeError(
            f"{requests_path}: {count} records for {rows} manifest rows (a bug: every row must "
            "end as exactly one record)"
        )
    attempt.finished_at = utc_now()
    attempt.driver_peak_rss_bytes = rss_bytes()[1]
    log.write(run_dir)  # the attempt is finished even if the summary fails
    with system_allocator():
        summary = summarize(requests_path, cfg)
    attempt.mark_memory("summary")
    log_path = log.write(run_dir)
    summary_path = run_dir / "load_summary.json"
    summary_path.write_text(json.dumps(summary.to_dict(), indent=2))
    if summary.generator["warning"]:
        _log.warning("%s: %s", run_dir, summary.generator["warning"])
    return LoadResult(
        run_dir=run_dir,
        manifest_path=manifest,
        requests_path=requests_path,
        warmup_path=warmup_path,
        summary_path=summary_path,
        summary=summary,
        rows=rows,
        rejected=summary.overall["rejected"],
        attempt=attempt.attempt,
        recorded_before=attempt.recorded_before,
        load_log_path=log_path,
        dispatchers=attempt.dispatchers,
    )


def _attempt(
    ray: Any,
    manifest: Path,
    run_dir: Path,
    cfg: EaselConfig,
    log: LoadLog,
    url: str,
    headers: dict[str, str] | None,
    warm_n: int,
    progress: bool,
    resume: bool,
) -> tuple[Attempt, list[dict[str, Any]]]:
    """One attempt on a started Ray: prescan, stream, send; returns it and the warm-up records."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from load_tests.dispatcher import Dispatcher
    from load_tests.stream import manifest_dataset, prescan

    node = ray.get_runtime_context().get_node_id()
    here = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    t0 = time.monotonic()
    # The pre-pass runs in a task of its own (on no CPU slot, next to the file) and exits after,
    # so its memory never stays with the driver. The dispatchers' processes start meanwhile:
    # each is a Ray worker process to start, which is most of the time before the first send.
    scan_task = ray.remote(num_cpus=0, max_calls=1)(prescan).options(scheduling_strategy=here)
    scan_ref = scan_task.remote(str(manifest), str(run_dir) if resume else None)
    number, n = len(log.attempts), log.dispatchers
    explicit = log.max_in_flight
    shares = [None if explicit is None else explicit // n + (i < explicit % n) for i in range(n)]
    # Dispatchers run beside the driver (they write the run folder's images and records) and
    # reserve no CPU slot, so they never wait behind the replicas they are testing.
    actor_cls = ray.remote(Dispatcher).options(num_cpus=0, scheduling_strategy=here)
    images = str(run_dir / "images") if log.save_images else None
    actors = [
        actor_cls.remote(
            i,
            url,
            log.api,
            log.timeout_s,
            images,
            str(run_dir / PARTS_DIR),
            headers,
            attempt=number,
            dispatchers=n,
            max_in_flight=shares[i],
            priority=log.priority,
        )
        for i in range(n)
    ]
    line: ProgressLine | None = None
    warm: list[dict[str, Any]] = []
    try:
        pre = ray.get(scan_ref)
        scan = pre.scan
        attempt = Attempt(
            attempt=number,
            started_at=utc_now(),
            recorded_before=len(pre.recorded),
            to_send=scan.rows - len(pre.recorded),
            clock_origin_s=(scan.first_due_s or 0.0) if resume else 0.0,
            prescan_peak_rss_bytes=pre.peak_rss_bytes,
        )
        log.attempts.append(attempt)
        attempt.mark_memory("prescan")
        log.write(run_dir)
        _log.debug("prescan: %d rows in %.2f s", scan.rows, time.monotonic() - t0)
        if not attempt.to_send:
            return attempt, []
        # Fewer rows than dispatchers: the extra ones go (each one's bound is only smaller).
        for extra in actors[attempt.to_send :]:
            ray.kill(extra)
        actors = actors[: attempt.to_send]
        n = len(actors)
        line = ProgressLine(attempt.to_send, enabled=progress)
        splits = manifest_dataset(manifest, ManifestRules.from_config(cfg), pre, n, node)
        ray.get([a.progress.remote() for a in actors])  # up before the clock starts
        attempt.mark_memory("dispatchers up")
        # The stream starts (its coordinator, read tasks and first blocks) while the warm-up
        # runs: streaming_split waits until every iterator has asked for its first block.
        origin = attempt.clock_origin_s
        fed = [a.feed.remote(it, origin) for a, it in zip(actors, splits, strict=True)]
        if warm_n:
            groups = _warmup_rows(cfg, scan.models, warm_n)
            refs = [actors[i % n].warmup.remote(rows) for i, rows in enumerate(groups)]
            warm = [r for out in ray.get(refs) for r in out]
            _log.debug("warm-up: %d requests", len(warm))
            attempt.mark_memory("warm-up")
        ray.get(fed)
        attempt.mark_memory("stream fed")
        start_wall = time.time() + _LEAD_S
        ray.get([a.start.remote(start_wall, origin) for a in actors])
        finished = [a.finish.remote() for a in actors]
        pending = list(finished)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            _show(line, ray.get([a.progress.remote() for a in actors]))
        attempt.dispatchers = ray.get(finished)
        attempt.mark_memory("every row answered")
    finally:
        if line is not None:
            line.close()
        for a in actors:
            ray.kill(a)
    return attempt, warm


def _show(line: ProgressLine, stats: list[dict[str, Any]]) -> None:
    line.observe(
        sent=sum(s["sent"] for s in stats),
        done=sum(s["done"] for s in stats),
        failed=sum(s["failed"] for s in stats),
        rejected=sum(s["rejected"] for s in stats),
        in_flight=sum(s["in_flight"] for s in stats),
        latencies_ms=[x for s in stats for x in s["latencies_ms"]],
    )
    line.update()


def _write_warmup(run_dir: Path, warm: list[dict[str, Any]], resume: bool) -> Path | None:
    """warmup.parquet: this attempt's warm-up records (after an earlier attempt's, on resume)."""
    path = run_dir / "warmup.parquet"
    if not warm:
        return path if path.is_file() else None
    table = pa.Table.from_pylist(warm, schema=REQUEST_SCHEMA)
    if resume and path.is_file():
        old = pq.read_table(path)
        old = old.select([c for c in REQUEST_SCHEMA.names if c in old.column_names])
        for f in REQUEST_SCHEMA:
            if f.name not in old.column_names:
                old = old.append_column(f, pa.nulls(old.num_rows, f.type))
        table = pa.concat_tables([old.select(REQUEST_SCHEMA.names).cast(REQUEST_SCHEMA), table])
    pq.write_table(table, path)
    return path
