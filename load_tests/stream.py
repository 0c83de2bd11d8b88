"""The manifest as a Ray Data stream of validated blocks, split across the dispatchers.

`ManifestDatasource` reads a manifest a row group at a time in a Ray task; each block carries
the rows' file row numbers (from the Parquet metadata, so no copy of the manifest is written),
is validated in pyarrow (load_tests.validation) and leaves out the rows that already have a
record (a resume). The runner splits the dataset with `streaming_split`, one iterator per
dispatcher, so rows flow from the read tasks to the dispatchers and never through the driver.

A manifest sorted by arrival_s (as `easel manifest` writes) streams in file order. An unsorted
one is sorted by Ray Data (`Dataset.sort`, in the object store and on disk, not in one process),
which needs a free CPU in the cluster; the runner says so when there is none.

`prescan` is the cheap pass before the stream (row count, duplicate job_ids, arrival order, what
a resume has left); it too runs as a Ray task, so the driver holds only its small result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasource, ReadTask
from ray.data._internal.execution.execution_callback import ExecutionCallback
from ray.data.block import BlockMetadata

from load_tests.manifest import ManifestScan, scan_manifest, validated_table
from load_tests.process import rss_bytes
from load_tests.records import recorded_rows
from load_tests.rowset import RowSet
from load_tests.validation import ManifestRules

__all__ = [
    "BLOCK_ROWS",
    "ManifestDatasource",
    "PacedSchedulingLoop",
    "Prescan",
    "manifest_dataset",
    "prescan",
    "rebind_session_logs",
]

BLOCK_ROWS = 1_024  # rows per block: the unit in which rows are dealt to dispatchers
_READ_AHEAD_BYTES = 64 * 1024 * 1024  # object-store bytes Ray Data may read ahead
_DUE = "__due"  # the sort key of an unsorted manifest: arrival_s, or -1 for rejected rows
# The scheduling loop's pause while its output waits for the dispatchers: the longest the loop
# itself waits for a task (Ray Data's WAIT_FOR_TASK_COMPLETION_TIMEOUT_S).
_IDLE_STEP_S = 0.1


@dataclass(frozen=True)
class Prescan:
    """What the runner learns before streaming: the scan, the rows already recorded, the cost."""

    scan: ManifestScan
    recorded: RowSet
    peak_rss_bytes: int


def prescan(manifest: str, run_dir: str | None) -> Prescan:
    """Scan a manifest; with `run_dir` (a resume) also find the rows that have a record there."""
    n = pq.ParquetFile(manifest).metadata.num_rows
    done = recorded_rows(run_dir, n) if run_dir else RowSet(n)
    scan = scan_manifest(manifest, skip=done)
    return Prescan(scan, done, rss_bytes()[1])


def _read_group(
    path: str,
    group: int,
    first_row: int,
    rules: ManifestRules,
    duplicates: RowSet,
    skip: RowSet,
    with_due: bool,
) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(path)
    offset = first_row
    for batch in pf.iter_batches(batch_size=BLOCK_ROWS, row_groups=[group]):
        numbers = np.arange(offset, offset + batch.num_rows, dtype=np.int64)
        offset += batch.num_rows
        keep = ~skip.contains(numbers) if skip.size else np.ones(len(numbers), dtype=bool)
        if not keep.any():
            continue
        if not keep.all():
            batch, numbers = batch.filter(pa.array(keep)), numbers[keep]
        table = validated_table(
            batch, rules, numbers, duplicates.contains(numbers), base=Path(path).parent
        )
        if with_due:
            arrival = table.column("arrival_s").to_numpy(zero_copy_only=False)
            good = table.column("error").is_null().to_numpy(zero_copy_only=False)
            table = table.append_column(_DUE, pa.array(np.where(good, arrival, -1.0)))
        yield table


class ManifestDatasource(Datasource):
    """A Ray Data datasource over one manifest file: a read task per row group.

    Args:
        path: the manifest file (readable where the read tasks run).
        rules: what rows are checked against.
        scan: the prescan (row groups, duplicates).
        skip: rows to leave out (they already have a record).
        with_due: add the `__due` sort key (for an unsorted manifest).
    """

    def __init__(
        self, path: str, rules: ManifestRules, scan: ManifestScan, skip: RowSet, with_due: bool
    ) -> None:
        super().__init__()
        self.path, self.rules, self.scan = path, rules, scan
        self.skip, self.with_due = skip, with_due

    def estimate_inmemory_data_size(self) -> int:
        return int(self.scan.bytes_per_row * (self.scan.rows - len(self.skip)))

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        tasks, first = [], 0
        for g, rows in enumerate(self.scan.row_group_rows):
            left = rows - self.skip.count(first, first + rows)
            if left:
                args = (self.path, g, first, self.rules, self.scan.duplicates, self.skip)
                tasks.append(
                    ReadTask(
                        lambda a=args: _read_group(*a, self.with_due),
                        BlockMetadata(
                            num_rows=left,
                            size_bytes=int(self.scan.bytes_per_row * left),
                            exec_stats=None,
                            input_files=(self.path,),
                        ),
                    )
                )
            first += rows
        return tasks


class PacedSchedulingLoop(ExecutionCallback):
    """Pauses Ray Data's scheduling loop while its output waits for the dispatchers.

    The streaming executor runs its scheduling step back to back; a step blocks (in `ray.wait`,
    up to 0.1 s) only on a read task that has not yet produced. A load stream is consumed at the
    schedule's pace, so most of the time the next blocks are ready and wait, backpressured, for
    a dispatcher to take them: then nothing blocks and the loop spins, on the machine whose
    replicas are being measured (benchmarks/load_generator_growth.py reports the coordinator's
    CPU time: docs/performance.md). While the output has blocks waiting (the consumers are not
    idle), each step is followed by a 0.1 s pause: a step costs milliseconds of CPU at a
    million rows, so a 10 ms pause still left the coordinator at a sixth of a core there.
    A dispatcher that asks for its next block meanwhile gets one that is already there, and
    dispatchers read seconds ahead. A consumer left waiting, or an unsorted manifest being
    sorted, runs unpaused.
    """

    def on_execution_step(self, executor: Any) -> None:
        # A private method of StreamingExecutor (Ray's own callbacks read its internals too);
        # on a Ray without it the loop simply runs unpaused.
        idling = getattr(executor, "_consumer_idling", None)
        if idling is not None and not idling():
            time.sleep(_IDLE_STEP_S)


def rebind_session_logs(current: str | None) -> None:
    """Point Ray Data's log files in this process at the session `current` (its log folder).

    Ray Data's file handler (`SessionFileHandler`) opens its file in the first Ray session that
    logs in a process and keeps that path for good. A process that runs several sessions one
    after another (the test suite; a bench after a load) and deletes an earlier one's folder
    then fails on the next Ray Data log record once anything reopens that file (a logging
    reconfiguration, such as uvicorn's, closes every handler): FileNotFoundError, and the load
    stage fails. A handler bound elsewhere is closed here, so its next record opens a file in
    `current`.
    """
    from ray.data._internal.logging import SessionFileHandler

    if current is None:
        return
    for h in logging.getLogger("ray.data").handlers:
        path = getattr(h, "_path", None)
        if isinstance(h, SessionFileHandler) and path and not path.startswith(current):
            h.close()


@contextlib.contextmanager
def _data_context(bytes_per_row: float) -> Iterator[None]:
    """Ray Data settings for the load stream, for the datasets built inside (restored after)."""
    from ray.data import DataContext, ExecutionResources

    ctx = DataContext.get_current()
    opts = ctx.execution_options
    saved = (opts.preserve_order, opts.resource_limits, ctx.enable_progress_bars)
    saved_size = ctx.target_max_block_size
    saved_callbacks = list(ctx.custom_execution_callback_classes)
    opts.preserve_order = True  # rows reach each dispatcher in arrival order
    # Read only a little ahead: the stream is consumed at the schedule's pace.
    opts.resource_limits = ExecutionResources.for_limits(object_store_memory=_READ_AHEAD_BYTES)
    ctx.enable_progress_bars = False  # the progress line is ours
    # Blocks of about BLOCK_ROWS rows: Ray Data sizes blocks in bytes, not rows.
    ctx.target_max_block_size = max(64 * 1024, int(bytes_per_row * BLOCK_ROWS * 0.75))
    if PacedSchedulingLoop not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes.append(PacedSchedulingLoop)
    try:
        yield
    finally:
        opts.preserve_order, opts.resource_limits, ctx.enable_progress_bars = saved
        ctx.target_max_block_size = saved_size
        ctx.custom_execution_callback_classes[:] = saved_callbacks


def manifest_dataset(
    manifest: Path,
    rules: ManifestRules,
    pre: Prescan,
    n_splits: int,
    node_id: str | None = None,
) -> list[Any]:
    """`n_splits` Ray Data iterators over the manifest's validated rows, in arrival order each.

    Args:
        manifest: the manifest file.
        rules: the validation rules.
        pre: the prescan (what to skip, duplicates, order).
        n_splits: one iterator per dispatcher.
        node_id: run the read tasks on this node (where the file is); None: anywhere.

    Raises:
        ValueError: the manifest is unsorted and the cluster has no free CPU to sort it with.
    """
    import ray

    unsorted = not pre.scan.sorted_by_arrival
    if unsorted and ray.available_resources().get("CPU", 0) < 1:
        raise ValueError(
            f"{manifest} is not sorted by arrival_s, and sorting it in Ray Data needs a free CPU "
            "(every CPU of this cluster is reserved); sort the file first (`easel manifest` "
            "writes sorted manifests)"
        )
    from ray.data._internal.logging import get_log_directory

    rebind_session_logs(get_log_directory())
    source = ManifestDatasource(str(manifest.resolve()), rules, pre.scan, pre.recorded, unsorted)
    # Ray's default node label pins the read tasks to the driver's node, where the file is.
    where = {"ray.io/node-id": node_id} if node_id is not None else None
    with _data_context(pre.scan.bytes_per_row):
        # One read task at a time, on no CPU slot: reading is light, and a cluster whose CPUs
        # all belong to model replicas must still be able to run a load test.
        ds = ray.data.read_datasource(source, num_cpus=0, concurrency=1, label_selector=where)
        if unsorted:
            ds = ds.sort([_DUE, "row"]).drop_columns([_DUE])
            ds = ds.repartition(target_num_rows_per_block=BLOCK_ROWS)
        return ds.streaming_split(n_splits, equal=False)
