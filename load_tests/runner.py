"""The open-loop load test: Ray Data streams the manifest, dispatcher actors send on schedule.

The driver reads the manifest as a Ray Data stream (in order), validates each batch (bad rows
become `rejected` records at once), and hands good rows round-robin to the dispatcher actors a
few seconds before they are due. It drains finished records from the actors into
`requests.parquet` as the run goes, so memory holds the look-ahead and the unwritten records,
never the whole manifest. Every manifest row ends as exactly one record.

Warm-up: `warmup_requests` per model are sent before the clock starts; their records go to
`warmup.parquet` (same columns, times from the warm-up start), never into `requests.parquet`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from config import EaselConfig
from load_tests.client import endpoint_url
from load_tests.manifest import ManifestScan, scan_manifest, validate_batch
from load_tests.progress import ProgressLine
from load_tests.records import REQUEST_SCHEMA, RecordWriter, rejected_record
from load_tests.stats import LoadSummary, summarize

__all__ = ["LoadResult", "run_load"]

_log = logging.getLogger(__name__)

_BATCH_ROWS = 1_024
_BLOCK_BYTES = 8 * 1024 * 1024
_HORIZON_S = 5.0  # rows are handed to dispatchers this long before they are due
_LEAD_S = 1.0  # the clock starts this long after the first batch is ready
_DRAIN_EVERY_S = 0.25


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
    """

    run_dir: Path
    manifest_path: Path
    requests_path: Path
    warmup_path: Path | None
    summary_path: Path
    summary: LoadSummary
    rows: int
    rejected: int


_ROW = "__row"  # the file row number, carried through a sorted copy


def _prepare_manifest(src: Path, run_dir: Path) -> tuple[Path, ManifestScan]:
    """Copy the manifest into the run folder as given; return the file to stream, and its scan.

    A manifest sorted by arrival_s (as `easel manifest` writes) streams from the copy in
    bounded memory. An unsorted one is sorted in memory into a hidden file that carries each
    row's file row number, so records and messages still name the rows of the file as given.
    """
    scan = scan_manifest(src)
    dst = run_dir / "manifest.parquet"
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    if scan.sorted_by_arrival:
        return dst, scan
    print(f"easel load: {src} is not sorted by arrival_s; sorting it in memory", file=sys.stderr)
    table = pq.read_table(src)
    arrival = table.column("arrival_s").cast(pa.float64()).fill_null(np.nan).to_numpy()
    order = np.argsort(arrival, kind="stable")  # NaN last: those rows are rejected anyway
    table = table.append_column(_ROW, pa.array(np.arange(table.num_rows), pa.int64()))
    sorted_path = run_dir / ".manifest-sorted.parquet"
    pq.write_table(table.take(pa.array(order)), sorted_path)
    return sorted_path, scan


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


def run_load(
    manifest_path: str | Path,
    url: str,
    out_dir: str | Path,
    cfg: EaselConfig,
    *,
    api: str = "easel",
    max_in_flight: int | None = None,
    save_images: bool = True,
    progress: bool = True,
    dispatchers: int | None = None,
    timeout_s: float | None = None,
    warmup_requests: int | None = None,
    api_key_env: str | None = None,
    address: str | None = None,
) -> LoadResult:
    """Replay a manifest against an endpoint, open loop, and write the run folder.

    Uses the running Ray (as `easel bench` does) or starts a local one (`address`: a cluster to
    join instead) and shuts it down afterwards.

    Args:
        manifest_path: a manifest Parquet file (see load_tests.manifest).
        url: the endpoint's base URL (e.g. http://127.0.0.1:8000).
        out_dir: the run folder: manifest.parquet, requests.parquet, warmup.parquet,
            load_summary.json and images/<job_id>.png.
        cfg: models (SLOs, sizes), niches, and `traffic` defaults for what is left None.
        api: 'easel' (POST /v1/generate) or 'openai' (POST /v1/images/generations, b64_json).
        max_in_flight: the client's bound on requests in flight; default
            cfg.traffic.max_in_flight. Rows that find it reached are recorded as
            `client_overload`.
        save_images: write each image; False keeps only image_sha256.
        progress: draw the live progress line on stderr.
        dispatchers: dispatcher actors; default cfg.traffic.dispatchers.
        timeout_s: per-request timeout; default cfg.traffic.request_timeout_s.
        warmup_requests: per model, before the clock starts; default cfg.traffic.warmup_requests.
        api_key_env: environment variable holding a bearer token (never written anywhere).

    Raises:
        ManifestError: the manifest file is not a manifest (bad rows never raise).
        ValueError: a bad url, api or option.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from load_tests.dispatcher import Dispatcher

    t = cfg.traffic
    full_url = endpoint_url(url, api)
    # `is None`, not `or`: an explicit 0 is a bad option to reject, not "use the default".
    max_in_flight = t.max_in_flight if max_in_flight is None else max_in_flight
    n_disp = t.dispatchers if dispatchers is None else dispatchers
    timeout_s = t.request_timeout_s if timeout_s is None else timeout_s
    warm_n = t.warmup_requests if warmup_requests is None else warmup_requests
    if max_in_flight < 1 or n_disp < 1 or timeout_s <= 0 or warm_n < 0:
        raise ValueError("max_in_flight and dispatchers must be >= 1, timeout_s > 0, warmup >= 0")
    n_disp = min(n_disp, max_in_flight)
    headers = _auth_headers(api_key_env)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    images_dir = run_dir / "images"
    if save_images:
        images_dir.mkdir(exist_ok=True)
    stream_path, scan = _prepare_manifest(Path(manifest_path), run_dir)
    manifest = run_dir / "manifest.parquet"
    if not (run_dir / "config.yaml").exists():
        (run_dir / "config.yaml").write_text(cfg.to_yaml())

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    node = ray.get_runtime_context().get_node_id()
    # Dispatchers run beside the driver (they write the run folder's images) and reserve no
    # CPU slot, so they never wait behind the replicas they are testing.
    actor_cls = ray.remote(Dispatcher).options(
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
    )
    shares = [max_in_flight // n_disp + (i < max_in_flight % n_disp) for i in range(n_disp)]
    actors = [
        actor_cls.remote(
            i,
            full_url,
            api,
            shares[i],
            timeout_s,
            str(images_dir) if save_images else None,
            headers,
        )
        for i in range(n_disp)
    ]
    requests_path = run_dir / "requests.parquet"
    writer = RecordWriter(requests_path)
    line = ProgressLine(scan.rows, enabled=progress)
    warmup_path = None
    try:
        # Actors must be up before the clock starts, or the first sends would start late.
        t0 = time.monotonic()
        ray.get([a.drain.remote() for a in actors])
        _log.debug("%d dispatchers ready in %.2f s", n_disp, time.monotonic() - t0)
        if warm_n:
            groups = _warmup_rows(cfg, scan.models, warm_n)
            refs = [actors[i % n_disp].warmup.remote(rows) for i, rows in enumerate(groups)]
            warm = [r for out in ray.get(refs) for r in out]
            if warm:
                warmup_path = run_dir / "warmup.parquet"
                pq.write_table(pa.Table.from_pylist(warm, schema=REQUEST_SCHEMA), warmup_path)
            _log.debug("warm-up: %d requests in %.2f s", len(warm), time.monotonic() - t0)
        _stream(ray, stream_path, scan, cfg, actors, writer, line)
    finally:
        writer.close()
        line.close()
        for a in actors:
            ray.kill(a)
        if started_ray:
            ray.shutdown()
        if stream_path != manifest:
            stream_path.unlink(missing_ok=True)
    if writer.count != scan.rows:
        raise RuntimeError(
            f"{requests_path}: {writer.count} records for {scan.rows} manifest rows (a bug: every "
            "row must end as exactly one record)"
        )
    summary = summarize(requests_path, cfg)
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
        rows=scan.rows,
        rejected=summary.overall["rejected"],
    )


class _Drainer:
    """Moves finished records from the dispatchers to the writer and the progress line."""

    def __init__(self, ray: Any, actors: list, writer: RecordWriter, line: ProgressLine) -> None:
        self.ray, self.actors, self.writer, self.line = ray, actors, writer, line
        self.last = 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < _DRAIN_EVERY_S:
            return
        self.last = now
        outs = self.ray.get([a.drain.remote() for a in self.actors])
        in_flight = 0
        for out in outs:
            self.writer.write(out["records"])
            self.line.add(out["records"])
            in_flight += out["in_flight"]
        self.line.update(in_flight=in_flight)

    def reject(self, rejected: list[dict[str, Any]]) -> None:
        records = [rejected_record(r) for r in rejected]
        self.writer.write(records)
        self.line.add(records)


def _stream(
    ray: Any,
    manifest: Path,
    scan: ManifestScan,
    cfg: EaselConfig,
    actors: list,
    writer: RecordWriter,
    line: ProgressLine,
) -> None:
    """Read the manifest as a Ray Data stream and feed the dispatchers on the horizon."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (
        ctx.execution_options.preserve_order,
        ctx.enable_progress_bars,
        ctx.target_max_block_size,
    )
    ctx.execution_options.preserve_order = True  # rows must reach the pumps in arrival order
    ctx.enable_progress_bars = False  # the progress line is ours
    ctx.target_max_block_size = _BLOCK_BYTES  # small blocks: the driver holds one at a time
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    data_log.setLevel(logging.ERROR)  # its start/finish chatter would break the progress line
    drain = _Drainer(ray, actors, writer, line)
    n = len(actors)
    t0 = time.monotonic()
    try:
        ds = ray.data.read_parquet(str(manifest.resolve()))
        batches = ds.iter_batches(
            batch_size=_BATCH_ROWS, batch_format="pyarrow", prefetch_batches=2
        )
        start_wall: float | None = None
        offset = dispatched = 0
        for batch in batches:
            numbers = batch.column(_ROW) if _ROW in batch.column_names else None
            good, rejected = validate_batch(batch, cfg, offset, scan.duplicate_rows, numbers)
            offset += batch.num_rows
            drain.reject(rejected)
            if start_wall is None:
                # The stream is flowing: start the clock a moment from now, for every actor.
                _log.debug("first manifest batch after %.2f s", time.monotonic() - t0)
                start_wall = time.time() + _LEAD_S
                ray.get([a.start.remote(start_wall) for a in actors])
            if good.num_rows:
                rows = good.to_pylist()
                # Look ahead no further than the horizon: memory stays bounded on long runs.
                while rows[0]["arrival_s"] - (time.time() - start_wall) > _HORIZON_S:
                    drain()
                    time.sleep(0.05)
                # Round robin over the whole stream: good row k goes to dispatcher k mod n.
                parts = [rows[(i - dispatched) % n :: n] for i in range(n)]
                dispatched += len(rows)
                ray.get([a.schedule.remote(p) for a, p in zip(actors, parts, strict=True) if p])
            drain()
        if start_wall is None:  # an empty manifest
            return
        _log.debug("manifest streamed after %.2f s", time.monotonic() - t0)
        pending = [a.finish.remote() for a in actors]
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_DRAIN_EVERY_S)
            drain(force=True)
        drain(force=True)
    finally:
        (
            ctx.execution_options.preserve_order,
            ctx.enable_progress_bars,
            ctx.target_max_block_size,
        ) = saved
        data_log.setLevel(saved_level)
