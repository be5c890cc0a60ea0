"""The batch runner shared by every per-file command.

A command turns its inputs into :class:`Task` objects and hands them to
:func:`run_batch` together with a *worker*: a picklable function (a
module-level function, or a :func:`functools.partial` of one) that
processes one task and returns one manifest row. The runner

* spreads tasks over processes (or a Dask cluster, or one shard of them),
* turns any exception of a worker into an ``error`` row with a one-line
  reason and one line on stderr naming the file, so one bad file never
  stops the batch (unless ``fail_fast``),
* shows one progress bar,
* writes the Parquet manifest atomically, every few seconds and at the end,
  so a killed run leaves a readable manifest,
* stops promptly on Ctrl-C, keeping what was finished.

Workers skip work that is already done (same output, same settings hash) and
report it as ``status="skipped"``; see :func:`settings_hash`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import __version__
from .atomic import atomic_path
from .errors import CsawsError, DependencyError, OutputError, one_line

STATUSES = ("ok", "skipped", "error")
#: Columns every manifest starts with, in this order.
LEADING_COLUMNS = ("source", "output", "status", "error")
#: Columns every manifest ends with.
TRAILING_COLUMNS = ("settings_hash", "tool_version", "seconds")

Worker = Callable[["Task"], "dict | tuple[dict, Any]"]


@dataclass(frozen=True)
class Task:
    """One unit of work: usually one input file and the output it makes.

    ``key`` is stable across runs and machines (for example the input's path
    relative to its input folder); sharding and duplicate detection use it.
    """

    key: str
    source: str
    output: str | None = None
    args: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    """What a batch did: the manifest rows, their counts, and where the manifest is."""

    rows: list[dict]
    manifest: Path | None
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.get("status") == status)

    @property
    def failed(self) -> int:
        return self.count("error")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when anything failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def summary(self, verb: str = "converted") -> str:
        """The closing line, e.g. ``"12 converted, 3 skipped, 1 failed"``."""
        return f"{self.count('ok')} {verb}, {self.count('skipped')} skipped, {self.failed} failed"


def settings_hash(settings: dict) -> str:
    """A short stable hash of the settings that determine an output.

    Canonical JSON (sorted keys) hashed with SHA-256, first 16 hex digits.
    Outputs record it; a rerun skips an output whose recorded hash matches.
    """
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"I/N"`` (1 <= I <= N) into ``(I, N)``; ``None`` passes through."""
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise CsawsError(f"--shard must look like I/N (for example 3/10), not {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise CsawsError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether the task ``key`` belongs to shard ``(I, N)``.

    The assignment depends on the key alone (CRC-32 modulo N), so it is the
    same on every machine and does not change when other inputs are added.
    """
    if shard is None:
        return True
    i, n = shard
    return zlib.crc32(key.encode("utf-8")) % n == i - 1


def shard_manifest_path(manifest: Path, shard: tuple[int, int] | None) -> Path:
    """``manifest.parquet`` becomes ``manifest.shard-0003-of-0010.parquet`` for a shard."""
    if shard is None:
        return manifest
    i, n = shard
    return manifest.with_name(f"{manifest.stem}.shard-{i:04d}-of-{n:04d}{manifest.suffix}")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".csaws-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{path}: output folder cannot be written ({exc.strerror or exc})") from None
    return path


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def error_row(task: Task, message: str, seconds: float = 0.0) -> dict:
    """The manifest row of a task that failed."""
    return {
        "source": task.source,
        "output": task.output,
        "status": "error",
        "error": message,
        "seconds": seconds,
    }


def call_worker(worker: Worker, task: Task) -> tuple[dict, Any]:
    """Run ``worker`` on ``task``; any exception becomes an ``error`` row."""
    start = time.perf_counter()
    try:
        result = worker(task)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
        return error_row(task, one_line(exc), time.perf_counter() - start), None
    row, payload = result if isinstance(result, tuple) else (result, None)
    row.setdefault("source", task.source)
    row.setdefault("output", task.output)
    row.setdefault("status", "ok")
    row.setdefault("error", None)
    row.setdefault("seconds", time.perf_counter() - start)
    return row, payload


def run_tasks(worker: Worker, tasks: Sequence[Task]) -> list[tuple[dict, Any]]:
    """Run a batch of tasks one after another (one process or cluster task)."""
    return [call_worker(worker, t) for t in tasks]


def _batches(tasks: Sequence[Task], size: int) -> list[list[Task]]:
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _run_isolated(worker: Worker, batch: list[Task]) -> list[tuple[dict, Any]]:
    """Run one batch in a fresh single-process pool; a dead process fails the batch."""
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=_mp_context()) as pool:
        try:
            return pool.submit(run_tasks, worker, batch).result()
        except cf.process.BrokenProcessPool:
            return [(error_row(t, "worker process died while processing this input"), None) for t in batch]


def _execute_local(
    worker: Worker, tasks: Sequence[Task], workers: int, batch_size: int
) -> Iterator[list[tuple[dict, Any]]]:
    """Yield results batch by batch from a process pool (or inline for one worker).

    A worker process that dies (killed, out of memory) fails only the tasks
    of the batch it held; the pool is restarted for the rest.
    """
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield [call_worker(worker, t)]
        return
    queue = _batches(tasks, batch_size)
    queue.reverse()
    n_procs = min(workers, len(queue))
    pool = cf.ProcessPoolExecutor(max_workers=n_procs, mp_context=_mp_context())
    pending: dict[cf.Future, list[Task]] = {}
    try:
        while queue or pending:
            # Keep at most two batches per worker in flight: bounded memory, prompt stop.
            while queue and len(pending) < 2 * n_procs:
                b = queue.pop()
                pending[pool.submit(run_tasks, worker, b)] = b
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            suspects: list[list[Task]] = []
            for fut in done:
                b = pending.pop(fut)
                try:
                    yield fut.result()
                except cf.process.BrokenProcessPool:
                    suspects.append(b)
            if suspects:
                # Every batch in flight fails when one process dies: rerun each
                # alone so that only the batch that kills its process fails.
                suspects.extend(pending.values())
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                for b in suspects:
                    yield _run_isolated(worker, b)
                pool = cf.ProcessPoolExecutor(max_workers=n_procs, mp_context=_mp_context())
    finally:
        for fut in pending:
            fut.cancel()
        if pending:  # stopped early (Ctrl-C, fail-fast): do not wait for running batches
            procs = getattr(pool, "_processes", None) or {}
            for proc in list(procs.values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _execute(
    worker: Worker,
    tasks: Sequence[Task],
    workers: int,
    batch_size: int | None,
    scheduler: str | None,
) -> Iterator[list[tuple[dict, Any]]]:
    if scheduler is None:
        yield from _execute_local(worker, tasks, workers, batch_size or 1)
        return
    try:
        from .scaleout import execute_on_dask
    except ImportError as exc:
        raise DependencyError(
            f"--scheduler needs Dask: pip install 'csaws-tools[dask]' ({one_line(exc)})"
        ) from None
    yield from execute_on_dask(worker, tasks, scheduler, batch_size=batch_size, workers=workers)


def order_columns(rows: list[dict]) -> list[str]:
    """Manifest column order: leading columns, the rest as first seen, trailing columns."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    middle = [k for k in seen if k not in LEADING_COLUMNS and k not in TRAILING_COLUMNS]
    return list(LEADING_COLUMNS) + middle + list(TRAILING_COLUMNS)


def _typed_column(column):
    """Give a column of Python values one Parquet-friendly type.

    Integers with gaps stay integers (nullable Int64); mixed values (lists,
    dicts) become JSON text.
    """
    values = column.dropna()
    if len(values) == 0 or all(isinstance(v, str) for v in values):
        return column
    if all(isinstance(v, bool) for v in values):
        return column.astype("boolean")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return column.astype("Int64")
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return column.astype("float64")
    return column.map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))


def write_manifest(path: str | os.PathLike, rows: list[dict], metadata: dict | None = None) -> Path:
    """Write manifest rows to Parquet atomically; ``metadata`` goes in the file's key-value metadata."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    columns = order_columns(rows) if rows else list(LEADING_COLUMNS) + list(TRAILING_COLUMNS)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for col in frame.columns:
        frame[col] = _typed_column(frame[col])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"csaws_tools"] = json.dumps(metadata or {}, default=str, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_manifest(path: str | os.PathLike):
    """Read a manifest into a DataFrame; its run metadata is in ``frame.attrs['csaws_tools']``."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    frame = table.to_pandas()
    raw = (table.schema.metadata or {}).get(b"csaws_tools")
    frame.attrs["csaws_tools"] = json.loads(raw) if raw else {}
    return frame


def find_duplicate_outputs(tasks: Sequence[Task]) -> tuple[list[Task], list[dict]]:
    """Split tasks into those to run and error rows for second claims on one output."""
    claimed: dict[str, Task] = {}
    keep: list[Task] = []
    errors: list[dict] = []
    for t in tasks:
        if t.output is None:
            keep.append(t)
            continue
        norm = os.path.normcase(os.path.abspath(t.output))
        first = claimed.get(norm)
        if first is None:
            claimed[norm] = t
            keep.append(t)
        else:
            errors.append(error_row(t, f"output {t.output} is already written by input {first.source}; not overwriting"))
    return keep, errors


def run_batch(
    tasks: Iterable[Task],
    worker: Worker,
    *,
    manifest: str | os.PathLike | None,
    settings: dict | None = None,
    workers: int | None = None,
    fail_fast: bool = False,
    progress: bool = True,
    label: str = "working",
    scheduler: str | None = None,
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
    on_result: Callable[[dict, Any], None] | None = None,
    extra_rows: Sequence[dict] = (),
    flush_seconds: float = 2.0,
) -> BatchResult:
    """Run ``worker`` over ``tasks`` and write the manifest.

    ``settings`` are recorded with their hash in every row and in the
    manifest's metadata. ``on_result(row, payload)`` runs in this process for
    workers that return ``(row, payload)`` (a single writer for shared
    outputs such as HDF5). ``extra_rows`` are rows decided before running
    (inputs skipped as not relevant, planning errors); they count like others.
    """
    settings = dict(settings or {})
    shash = settings_hash(settings)
    tasks = [t for t in tasks if in_shard(t.key, shard)]
    tasks, dup_errors = find_duplicate_outputs(tasks)
    workers = workers or default_workers()
    manifest_path = shard_manifest_path(Path(manifest), shard) if manifest is not None else None
    meta = {"settings": settings, "settings_hash": shash, "tool_version": __version__, "shard": shard}

    rows: list[dict] = []
    last_flush = time.monotonic()
    interrupted = False
    stop = False

    def finish_row(row: dict) -> None:
        row["settings_hash"] = shash
        row["tool_version"] = __version__
        rows.append(row)
        if row["status"] == "error":
            click.echo(f"error: {row.get('source')}: {row.get('error')}", err=True)

    write_cost = 0.0  # seconds the last manifest write took

    def flush(force: bool = False) -> None:
        nonlocal last_flush, write_cost
        # Every flush rewrites the whole manifest: on very large runs wait at least
        # ten times as long as a write takes, so writing stays under ~10% of the time.
        due = time.monotonic() - last_flush >= max(flush_seconds, 10 * write_cost)
        if manifest_path is not None and (force or due):
            start = time.monotonic()
            write_manifest(manifest_path, rows, meta)
            last_flush = time.monotonic()
            write_cost = last_flush - start

    for r in list(extra_rows) + dup_errors:
        finish_row(dict(r))
    if fail_fast and any(r["status"] == "error" for r in rows):
        stop = True
    flush(force=True)  # a run killed at any moment leaves a readable manifest

    show = progress and sys.stderr.isatty()
    bar = click.progressbar(length=len(tasks), label=label, file=sys.stderr) if show else None
    try:
        if bar is not None:
            bar.__enter__()
        if not stop and tasks:
            for batch in _execute(worker, tasks, workers, batch_size, scheduler):
                for row, payload in batch:
                    if payload is not None and on_result is not None and row["status"] == "ok":
                        try:
                            on_result(row, payload)
                        except CsawsError as exc:
                            row.update(status="error", error=one_line(exc))
                    finish_row(row)
                    if fail_fast and row["status"] == "error":
                        stop = True
                if bar is not None:
                    bar.update(len(batch))
                flush()
                if stop:
                    break
    except KeyboardInterrupt:
        interrupted = True
        click.echo("interrupted: stopping workers; finished outputs are kept", err=True)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        flush(force=True)
    return BatchResult(rows=rows, manifest=manifest_path, interrupted=interrupted)
